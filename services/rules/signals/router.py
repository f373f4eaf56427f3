"""The signals API: what fired, for whom, and why (the evidence). Readable by CS Ops and CSMs."""

from __future__ import annotations

import base64
from datetime import datetime

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.rules.signals import repository as repo
from services.rules.signals.schemas import SignalOut, SignalPage
from shared.api import SessionDep
from shared.auth import Principal, require
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses

router = APIRouter(tags=["signals"])
READERS = ("ops", "csm")


def _cursor(item) -> str:
    return base64.urlsafe_b64encode(f"{item.fired_at.isoformat()}|{item.signal_id}".encode()).decode()


def _parse_cursor(cursor: str | None):
    if not cursor:
        return None
    try:
        at, sid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), sid
    except Exception:
        raise Unprocessable("cursor is not one this API returned; pass next_cursor from the previous page unchanged") from None


def _page(session: Session, limit: int, cursor: str | None, **filters) -> SignalPage:
    items = repo.list_signals(session, before=_parse_cursor(cursor), limit=limit, **filters)
    return SignalPage(items=items, next_cursor=_cursor(items[-1]) if len(items) == limit else None)


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
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
):
    for name, v in (("since", since), ("until", until)):
        if v is not None and v.tzinfo is None:
            raise Unprocessable(f"{name} needs a zone offset, e.g. 2026-03-02T00:00:00Z")
    return _page(session, limit, cursor, kind=kind, rule_id=rule_id, account_id=account_id, since=since, until=until)


@router.get("/v1/signals/{signal_id}", response_model=SignalOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_signal(signal_id: str, session: Session = SessionDep, _p: Principal = require(*READERS)):
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
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
):
    return _page(session, limit, cursor, kind=kind, rule_id=None, account_id=account_id, since=None, until=None)
