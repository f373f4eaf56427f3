"""The signals API: what fired, for whom, and why (the evidence). Readable by CS Ops and CSMs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.rules.models import SignalRecord
from services.rules.signals import repository as repo
from services.rules.signals.schemas import SignalOut, SignalPage
from shared.api import SessionDep
from shared.auth import Principal, require
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.limits import UtcDatetime
from shared.pagination import MAX_CURSOR_CHARS, decode_cursor, next_cursor

router = APIRouter(tags=["signals"])
READERS = ("ops", "csm")


Cursor = Query(None, max_length=MAX_CURSOR_CHARS, description="next_cursor from the previous page")


def _page(session: Session, limit: int, cursor: str | None, **filters: Any) -> SignalPage:
    items = repo.list_signals(session, before=decode_cursor(cursor, datetime, str), limit=limit, **filters)
    return SignalPage(items=items, next_cursor=next_cursor(items, limit, lambda s: (s.fired_at, s.signal_id)))


@router.get(
    "/v1/signals",
    response_model=SignalPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Signals, newest first, filtered by kind, rule, account and time (fired_at in [since, until))",
)
def list_signals(
    kind: str | None = None,
    rule_id: str | None = None,
    account_id: str | None = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    cursor: str | None = Cursor,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> SignalPage:
    return _page(session, limit, cursor, kind=kind, rule_id=rule_id, account_id=account_id, since=since, until=until)


@router.get("/v1/signals/{signal_id}", response_model=SignalOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_signal(signal_id: str, session: Session = SessionDep, _p: Principal = require(*READERS)) -> SignalRecord:
    row = repo.get_signal(session, signal_id)
    if row is None:
        raise NotFound(f"no signal {signal_id!r}")
    return row


@router.get(
    "/v1/accounts/{account_id}/signals",
    response_model=SignalPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="An account's signals, newest first",
)
def account_signals(
    account_id: str,
    kind: str | None = None,
    cursor: str | None = Cursor,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> SignalPage:
    return _page(session, limit, cursor, kind=kind, rule_id=None, account_id=account_id, since=None, until=None)
