"""The outbox over HTTP: list messages by state, account, playbook; retry a failed or
uncertain one."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.outreach.delivery import repository as repo
from services.outreach.delivery.schemas import MessageOut, MessagePage
from services.outreach.models import Message
from shared.api import ClockDep, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, NotFound, responses
from shared.limits import UtcDatetime
from shared.pagination import next_key

router = APIRouter(tags=["messages"])


@router.get(
    "/v1/messages",
    response_model=MessagePage,
    responses=AUTH_ERRORS,
    summary="Outbox messages, newest first, by state, account, playbook, channel, enrolment or broadcast",
)
def list_messages(
    state: Literal["queued", "sending", "sent", "failed", "skipped", "uncertain"] | None = Query(
        None,
        description="uncertain: the SMTP peer may have the message (no reply to the final dot); "
        "check with the relay, then retry or leave it",
    ),
    account_id: str | None = None,
    playbook_id: str | None = None,
    channel: Literal["email", "webhook", "inapp", "csm"] | None = Query(None, description="csm: a touch a CSM logged"),
    enrollment_id: str | None = None,
    skip_reason: str | None = Query(None, max_length=64, description="with state=skipped: only this reason (e.g. contact_cap)"),
    since: UtcDatetime | None = Query(None, description="created at or after this time (RFC 3339, with zone)"),
    resource_id: str | None = Query(None, max_length=128, description="messages a recommend step chose this resource for"),
    survey_id: str | None = Query(None, max_length=64, description="messages of a survey step asking this survey"),
    broadcast_id: str | None = Query(None, max_length=36, description="messages of this broadcast (docs/broadcasts.md)"),
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> MessagePage:
    items = repo.list_messages(
        session,
        state=state,
        account_id=account_id,
        playbook_id=playbook_id,
        channel=channel,
        enrollment_id=enrollment_id,
        skip_reason=skip_reason,
        since=since,
        resource_id=resource_id,
        survey_id=survey_id,
        broadcast_id=broadcast_id,
        limit=limit,
        before=cursor,
    )
    return MessagePage(items=items, next_cursor=next_key(items, limit, lambda m: m.id))


@router.post(
    "/v1/messages/{message_id}/retry",
    response_model=MessageOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Conflict)},
    summary="Queue a failed or uncertain message again (its idempotency key and Message-ID stay the same)",
)
def retry_message(
    message_id: str, session: Session = SessionDep, clock: Clock = ClockDep, _p: Principal = require("ops")
) -> Message | None:
    m = repo.get(session, message_id)
    if m is None:
        raise NotFound(f"no message {message_id!r}")
    if m.state not in ("failed", "uncertain"):
        raise Conflict(f"message {message_id} is {m.state}; only failed or uncertain messages can be retried")
    return repo.requeue(session, message_id, clock.now())
