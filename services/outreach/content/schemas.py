"""A resource of the content library, as the API, the importer and the starter library
write it. Validation errors come back as JSON pointers (``/url``, ``/goals/0``) with a
sentence each, like the rule language's."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import Unprocessable, pointer_errors

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
KINDS = ("article", "video", "webinar", "course", "checklist", "template")
GOALS = ("adoption", "win-back", "expansion", "renewal")
ROLES = ("champion", "admin", "power_user", "buyer", "member")
# The tag lists, in the order a resource is read and an explanation is written.
TAGS = ("goals", "use_cases", "industries", "company_sizes", "lifecycle_stages", "segments", "roles", "features")
Kind = Literal["article", "video", "webinar", "course", "checklist", "template"]
Goal = Literal["adoption", "win-back", "expansion", "renewal"]
Role = Literal["champion", "admin", "power_user", "buyer", "member"]
_TAG = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
MAX_TAGS = 50


def _tags(values: list[str]) -> list[str]:
    """Trimmed, each once, in the order given."""
    out: list[str] = []
    for v in values:
        v = v.strip()
        if not _TAG.match(v):
            raise ValueError(f"a tag is 1 to 64 printable characters; got {v!r}")
        if v not in out:
            out.append(v)
    return out


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no spaces or control characters."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("the URL has spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the URL must start with https:// or http://; got {url[:40]!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host, e.g. https://docs.example.com/guide")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL carries credentials (user@host); resources are public pages")
    del port
    return url


class ResourceIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "article",
                    "title": "Five reports every analytics team starts with",
                    "url": "https://docs.example.com/guides/first-reports",
                    "summary": "Build the reports most teams use in their first month.",
                    "language": "en",
                    "goals": ["adoption", "win-back"],
                    "use_cases": ["analytics"],
                    "features": ["report_created"],
                }
            ]
        },
    )

    kind: Kind
    title: str = Field(min_length=1, max_length=300)
    url: str = Field(min_length=1, max_length=2000, description="the public page: http:// or https://")
    summary: str = Field("", max_length=4000)
    language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47, e.g. en, de, pt-BR")
    goals: list[Goal] = Field(
        default_factory=list,
        max_length=len(GOALS),
        description="what it helps with: adoption, win-back, expansion, renewal (empty: any goal)",
    )
    use_cases: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="the account trait use_case (empty: any)")
    industries: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="the account trait industry (empty: any)")
    company_sizes: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="the account trait company_size (empty: any)")
    lifecycle_stages: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="the account's lifecycle stage (empty: any)")
    segments: list[str] = Field(default_factory=list, max_length=MAX_TAGS, description="the account's segment (empty: any)")
    roles: list[Role] = Field(default_factory=list, max_length=len(ROLES), description="the contact's role (empty: any)")
    features: list[str] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="event names of the product features it teaches: it goes to accounts that never sent one of them",
    )
    enabled: bool = Field(True, description="a disabled resource is kept but never recommended")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("use_cases", "industries", "company_sizes", "lifecycle_stages", "segments", "features")
    @classmethod
    def _tag_list(cls, v: list[str]) -> list[str]:
        return _tags(v)

    @field_validator("goals", "roles")
    @classmethod
    def _once(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))


class ResourceOut(ResourceIn):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: str
    version: int
    created_at: datetime
    updated_at: datetime


class ResourcePage(BaseModel):
    items: list[ResourceOut]
    next_cursor: str | None = None


def parse_resource(obj: Any) -> ResourceIn:
    """Validate one resource definition; a 422 ``resource_invalid`` with a pointer per problem."""
    if not isinstance(obj, dict):
        raise Unprocessable([{"pointer": "", "message": "a resource is an object (a mapping in YAML)"}], code="resource_invalid")
    try:
        return ResourceIn.model_validate(obj)
    except ValidationError as exc:
        raise Unprocessable(pointer_errors(exc), code="resource_invalid") from None
