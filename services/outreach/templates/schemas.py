"""Request and response shapes of the templates API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"


AUDIENCES = ("customer", "internal")
Audience = Literal["customer", "internal"]


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Win-back after silence",
                    "subject": "{{ recipient.first_name }}, your {{ account.name }} workspace misses you",
                    "html_body": '<p>Hi {{ recipient.first_name }},</p><p>...</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
                    "text_body": "Hi {{ recipient.first_name }},\n...\nUnsubscribe: {{ unsubscribe_url }}",
                }
            ]
        },
    )

    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    subject: str = Field(min_length=1, max_length=2000)
    html_body: str = Field("", max_length=200_000)
    text_body: str = Field(min_length=1, max_length=200_000)
    audience: Audience = Field(
        "customer",
        description="customer: copy for the customer's contacts; internal: a message for the team (the account owner, "
        "a pooled CSM), which may use brief.* (evidence, what automation sent, what happens next). A playbook sends "
        "each only to its own kind of recipient.",
    )
    sample_context: dict[str, Any] = Field(default_factory=dict, description="extra sample values to validate against")


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version: int
    name: str
    description: str
    subject: str
    html_body: str
    text_body: str
    audience: str
    sample_context: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    user_id: str | None = Field(None, description="the contact to render for; without it, the account's owner address")
    signal: dict[str, Any] | None = Field(None, description="a signal to render with (defaults to a sample)")


class PreviewOut(BaseModel):
    subject: str
    html_body: str
    text_body: str
    context: dict[str, Any]
