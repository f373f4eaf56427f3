"""The lists the console's figures count: signals and messages, each with the filters a
figure links with (a window start, kind or rule; channel, state and skip reason, playbook,
account), the count of everything that matches (``id="count"``) and the newest rows. A
figure on the overview or a playbook page is the count of the list it links to, computed
with the same filters (tests/integration/services/console/test_console.py walks them)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console.web import OPS, Viewer, render
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep

router = APIRouter()
SHOWN = 100
STATES = ("queued", "sending", "sent", "failed", "skipped", "uncertain")
CHANNELS = ("email", "inapp", "webhook", "csm")  # csm: a touch a CSM logged


def _start(since: date | None) -> datetime | None:
    return datetime.combine(since, time.min, tzinfo=UTC) if since else None


@router.get("/signals")
def signals(
    request: Request,
    since: date | None = Query(None, description="fired on or after this UTC day"),
    kind: str = Query("", max_length=64),
    rule_id: str = Query("", max_length=128),
    account_id: str = Query("", max_length=128),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    start = _start(since)
    total = rules.count_signals(session, kind=kind or None, rule_id=rule_id or None, account_id=account_id or None, since=start)
    rows = rules.list_signals(
        session,
        kind=kind or None,
        rule_id=rule_id or None,
        account_id=account_id or None,
        since=start,
        until=None,
        before=None,
        limit=SHOWN,
    )
    return render(
        request,
        "signals.html",
        rows=rows,
        total=total,
        shown=SHOWN,
        filters={"since": since.isoformat() if since else "", "kind": kind, "rule_id": rule_id, "account_id": account_id},
    )


@router.get("/messages")
def messages(
    request: Request,
    since: date | None = Query(None, description="created on or after this UTC day"),
    channel: str = Query("", pattern="^(|email|inapp|webhook|csm)$"),
    state: str = Query("", pattern="^(|queued|sending|sent|failed|skipped|uncertain)$"),
    skip_reason: str = Query("", max_length=64),
    playbook_id: str = Query("", max_length=128),
    account_id: str = Query("", max_length=128),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    filters: dict[str, Any] = {
        "since": _start(since),
        "channel": channel or None,
        "state": state or None,
        "skip_reason": skip_reason or None,
        "playbook_id": playbook_id or None,
        "account_id": account_id or None,
    }
    total = outreach.count_messages(session, **filters)
    rows = outreach.list_messages(session, **filters, enrollment_id=None, limit=SHOWN, before=None)
    return render(
        request,
        "messages.html",
        rows=rows,
        total=total,
        shown=SHOWN,
        states=STATES,
        channels=CHANNELS,
        filters={
            "since": since.isoformat() if since else "",
            "channel": channel,
            "state": state,
            "skip_reason": skip_reason,
            "playbook_id": playbook_id,
            "account_id": account_id,
        },
    )
