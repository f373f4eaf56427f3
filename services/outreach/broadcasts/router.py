"""Broadcasts over HTTP (CS Ops): create (now or at send_at), preview before sending,
list, read, cancel (withdrawing what is still queued), report. A bad definition is a 422
``broadcast_invalid`` with a JSON pointer per problem."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.outreach.broadcasts import repository as repo
from services.outreach.broadcasts import service
from services.outreach.broadcasts.schemas import CODE, BroadcastIn, BroadcastOut, BroadcastPage, Preview, Report, parse_broadcast
from shared.api import BodyDep, ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, NotFound, PayloadTooLarge, Unprocessable, responses
from shared.pagination import next_key
from shared.settings import Settings

router = APIRouter(tags=["broadcasts"])
MAX_BODY = 16 * 1024
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class PreviewOut(Preview):
    id: str  # pass it to POST /v1/broadcasts as "id" to send with the holdout previewed


_CREATE_SCHEMA = BroadcastIn.model_json_schema(ref_template="#/components/schemas/{model}")
_CREATE_SCHEMA["properties"]["id"] = {
    "type": "string",
    "pattern": _UUID,
    "description": "optional: the id its preview answered, so the broadcast holds out the accounts the preview counted",
}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_SCHEMA}}}}


def _parse(body: bytes) -> tuple[BroadcastIn, str | None]:
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(f"a broadcast is at most {MAX_BODY} bytes")
    try:
        obj: Any = json.loads(body)
    except RecursionError:
        raise Unprocessable([{"pointer": "", "message": "the body nests too deeply"}], code=CODE) from None
    except ValueError as exc:
        raise Unprocessable([{"pointer": "", "message": f"the body is not valid JSON: {exc}"}], code=CODE) from None
    bid = None
    if isinstance(obj, dict) and "id" in obj:
        obj = dict(obj)
        bid = obj.pop("id")
        if not isinstance(bid, str) or not re.match(_UUID, bid):
            raise Unprocessable([{"pointer": "/id", "message": "id is the id a preview answered (a lower-case UUID)"}], code=CODE)
    return parse_broadcast(obj), bid


@router.post(
    "/v1/broadcasts/preview",
    response_model=PreviewOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable, PayloadTooLarge)},
    summary="What a broadcast would do now: its audience, its holdout and the messages the contact gate would skip, and why",
    openapi_extra=_BODY,
)
def preview_broadcast(
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require("ops"),
    body: bytes = BodyDep,
) -> PreviewOut:
    spec, bid = _parse(body)
    bid = bid or service.new_id()
    return PreviewOut(id=bid, **service.preview(session, settings, spec, now=clock.now(), broadcast_id=bid).model_dump())


@router.post(
    "/v1/broadcasts",
    response_model=BroadcastOut,
    status_code=201,
    responses={**AUTH_ERRORS, **responses(Unprocessable, PayloadTooLarge, Conflict)},
    summary="Schedule a broadcast of a template to a segment's members, now or at send_at",
    openapi_extra=_BODY,
)
def create_broadcast(
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
    body: bytes = BodyDep,
) -> BroadcastOut:
    spec, bid = _parse(body)
    b = service.create(session, settings, spec, actor=principal.actor, now=clock.now(), broadcast_id=bid)
    return BroadcastOut.model_validate(repo.as_dict(b))


@router.get("/v1/broadcasts", response_model=BroadcastPage, responses=AUTH_ERRORS, summary="Broadcasts, newest first, in pages")
def list_broadcasts(
    status: Literal["scheduled", "sending", "sent", "cancelled"] | None = None,
    cursor: str | None = Query(None, max_length=36, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> BroadcastPage:
    items = repo.list_broadcasts(session, status=status, limit=limit, after=cursor)
    return BroadcastPage(
        items=[BroadcastOut.model_validate(repo.as_dict(b)) for b in items], next_cursor=next_key(items, limit, lambda b: b.id)
    )


@router.get("/v1/broadcasts/{broadcast_id}", response_model=BroadcastOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_broadcast(broadcast_id: str, session: Session = SessionDep, _p: Principal = require("ops")) -> BroadcastOut:
    return BroadcastOut.model_validate(repo.as_dict(service.get_or_404(session, broadcast_id)))


@router.get(
    "/v1/broadcasts/{broadcast_id}/preview",
    response_model=Preview,
    responses={**AUTH_ERRORS, **responses(NotFound, Conflict)},
    summary="A scheduled broadcast's preview, as of its send time",
)
def preview_stored(
    broadcast_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require("ops"),
) -> Preview:
    return service.preview_of(session, settings, broadcast_id, now=clock.now())


@router.post(
    "/v1/broadcasts/{broadcast_id}/cancel",
    response_model=BroadcastOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Conflict)},
    summary="Cancel a broadcast: no more chunks, and its messages still queued are withdrawn (skipped: cancelled)",
)
def cancel_broadcast(
    broadcast_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("ops")
) -> BroadcastOut:
    b = service.cancel(session, broadcast_id, actor=principal.actor, now=clock.now())
    return BroadcastOut.model_validate(repo.as_dict(b))


@router.get(
    "/v1/broadcasts/{broadcast_id}/report",
    response_model=Report,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="What a broadcast did: its messages by state and skip reason, its holdout, the contacts who clicked",
)
def broadcast_report(broadcast_id: str, session: Session = SessionDep, _p: Principal = require("ops")) -> Report:
    return service.report(session, broadcast_id)
