"""The content library over HTTP: create or change a resource (PUT, ops), list with
filters in pages, read one, remove one. A bad definition is a 422 ``resource_invalid``
with a JSON pointer per problem."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from services.outreach.content import repository as repo
from services.outreach.content import service, sharing
from services.outreach.content.schemas import GOALS, ID_PATTERN, KINDS, ResourceIn, ResourceOut, ResourcePage, parse_resource
from services.outreach.engagements import repository as engagement_repo
from services.outreach.engagements.service import visible_to
from shared.api import BodyDep, ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, NotFound, PayloadTooLarge, Unprocessable, responses
from shared.pagination import next_key
from shared.settings import Settings

router = APIRouter(tags=["content"])
ResourceId = Path(pattern=ID_PATTERN, description="lower-case slug, e.g. first-reports-guide")
MAX_BODY = 64 * 1024
_SCHEMA = ResourceIn.model_json_schema(ref_template="#/components/schemas/{model}")


@router.put(
    "/v1/resources/{resource_id}",
    response_model=ResourceOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable, PayloadTooLarge)},
    summary="Create or change a resource of the content library (a changed definition is a new version)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}},
)
def put_resource(
    resource_id: str = ResourceId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    principal: Principal = require("ops"),
    body: bytes = BodyDep,
) -> ResourceOut:
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(f"a resource is at most {MAX_BODY} bytes")
    try:
        obj = json.loads(body)
    except RecursionError:
        raise Unprocessable([{"pointer": "", "message": "the body nests too deeply"}], code="resource_invalid") from None
    except ValueError as exc:
        raise Unprocessable([{"pointer": "", "message": f"the body is not valid JSON: {exc}"}], code="resource_invalid") from None
    row, _action = service.save(session, resource_id, parse_resource(obj), actor=principal.actor, now=clock.now())
    return ResourceOut.model_validate(row)


@router.get("/v1/resources", response_model=ResourcePage, responses=AUTH_ERRORS, summary="The content library by id, in pages")
def list_resources(
    kind: Literal[KINDS] | None = None,  # type: ignore[valid-type]
    goal: Literal[GOALS] | None = None,  # type: ignore[valid-type]
    tag: str | None = Query(None, max_length=64, description="a value in any tag list (use case, industry, feature, ...)"),
    language: str | None = Query(None, max_length=16),
    enabled: bool | None = None,
    cursor: str | None = Query(None, max_length=128, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops", "csm"),
) -> ResourcePage:
    items = repo.list_resources(session, kind=kind, goal=goal, tag=tag, language=language, enabled=enabled, after=cursor, limit=limit)
    return ResourcePage(items=[ResourceOut.model_validate(r) for r in items], next_cursor=next_key(items, limit, lambda r: r.id))


@router.get("/v1/resources/{resource_id}", response_model=ResourceOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_resource(resource_id: str, session: Session = SessionDep, _p: Principal = require("ops", "csm")) -> ResourceOut:
    return ResourceOut.model_validate(service.get_or_404(session, resource_id))


@router.delete(
    "/v1/resources/{resource_id}",
    status_code=204,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Remove a resource (messages that sent it keep its id: nobody receives it twice)",
)
def delete_resource(
    resource_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("ops")
) -> None:
    service.delete(session, resource_id, actor=principal.actor, now=clock.now())


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resource_id: str = Field(pattern=ID_PATTERN)
    user_id: str = Field(min_length=1, max_length=128, description="the contact of the engagement's account to send it to")
    template: str = Field("resource-pick", pattern=ID_PATTERN, description="a customer template that renders resource.*")


class ShareOut(BaseModel):
    message_id: str
    resource_id: str
    state: str
    next_attempt_at: str


@router.post(
    "/v1/engagements/{engagement_id}/resources",
    status_code=201,
    response_model=ShareOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Conflict, Unprocessable)},
    summary="Send a library resource to a contact of the engagement's account, through the contact gate (a touch)",
    description="409 contact_policy with the reason (contact_cap, account_cap, suppressed, already_received, ...) "
    "when the gate refuses; nothing is written then.",
)
def share_resource(
    body: ShareIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("csm", "ops"),
) -> ShareOut:
    e = visible_to(engagement_repo.get(session, engagement_id, lock=True), principal, engagement_id)
    out = sharing.send_resource(
        session,
        e,
        resource_id=body.resource_id,
        user_id=body.user_id,
        template_id=body.template,
        actor=principal.actor,
        now=clock.now(),
        settings=settings,
    )
    return ShareOut(**out)
