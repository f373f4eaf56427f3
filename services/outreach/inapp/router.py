"""In-app messages for the product to fetch and mark read.

These routes are called by the product's backend, with the same ``ingest`` key it
uses to send events (ops and admin keys work too): the product already speaks for
its users, and a key per end-user would be a different product (a client SDK).
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.outreach.delivery import repository as repo
from services.outreach.delivery.schemas import InAppMessageOut, InAppPage
from services.outreach.models import Message
from shared.api import ClockDep, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, responses
from shared.pagination import next_key

router = APIRouter(tags=["in-app"])
PRODUCT = ("ingest", "ops")


@router.get(
    "/v1/accounts/{account_id}/messages",
    response_model=InAppPage,
    responses=AUTH_ERRORS,
    summary="In-app messages for an account (or one of its users), newest first",
)
def list_inapp(
    account_id: str,
    user_id: str | None = None,
    unread: bool = False,
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*PRODUCT),
) -> InAppPage:
    items = repo.inapp_for(session, account_id, user_id, unread, limit, before=cursor)
    return InAppPage(items=items, next_cursor=next_key(items, limit, lambda m: m.id), unread=sum(1 for m in items if m.read_at is None))


@router.post(
    "/v1/accounts/{account_id}/messages/{message_id}/read",
    response_model=InAppMessageOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Mark an in-app message read (idempotent)",
)
def mark_read(
    account_id: str, message_id: str, session: Session = SessionDep, clock: Clock = ClockDep, _p: Principal = require(*PRODUCT)
) -> Message:
    m = repo.mark_read(session, account_id, message_id, clock.now())
    if m is None:
        raise NotFound(f"no in-app message {message_id!r} for account {account_id!r}")
    return m
