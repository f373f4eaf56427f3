"""The lists the console's figures count: signals and messages, each with the filters a
figure links with (a window start, kind or rule; channel, state and skip reason, playbook,
account), the count of everything that matches (``id="count"``) and the newest rows. A
figure on the overview or a playbook page is the count of the list it links to, computed
with the same filters (tests/integration/services/console/test_console.py walks them)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from services.console.web import CSP_EMAIL_PREVIEW, OPS, Viewer, render
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep
from shared.errors import NotFound

router = APIRouter()
SHOWN = 100
STATES = ("queued", "sending", "sent", "failed", "skipped", "uncertain")
CHANNELS = ("email", "inapp", "webhook", "csm")  # csm: a touch a CSM logged
SORT_PATTERN = "^[a-z_]{0,32}$"


def _start(since: date | None) -> datetime | None:
    return datetime.combine(since, time.min, tzinfo=UTC) if since else None


def _order(sort: str, direction: str, sorts: dict[str, Any], default: str) -> tuple[str, bool]:
    """The column a list is sorted by and whether descending: ``default`` newest first
    unless asked otherwise; another column ascending unless ``dir=desc``."""
    key = sort if sort in sorts else default
    return key, (direction == "desc") if direction else (key == default)


@router.get("/signals")
def signals(
    request: Request,
    since: date | None = Query(None, description="fired on or after this UTC day"),
    until: date | None = Query(None, description="fired on or before this UTC day"),
    kind: str = Query("", max_length=64),
    rule_id: str = Query("", max_length=128),
    account_id: str = Query("", max_length=128),
    sort: str = Query("", pattern=SORT_PATTERN, description="the column: " + ", ".join(rules.SIGNAL_SORTS)),
    dir: str = Query("", pattern="^(|asc|desc)$", description="the direction (default: newest first)"),
    before: str = Query("", max_length=300, description="the page after this signal id (the Older link's)"),
    limit: int = Query(SHOWN, ge=1, le=500, description="signals a page"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    start = _start(since)
    end = _start(until + timedelta(days=1)) if until else None
    where: dict[str, Any] = {"kind": kind or None, "rule_id": rule_id or None, "account_id": account_id or None, "since": start}
    total = rules.count_signals(session, **where, until=end)
    key, desc = _order(sort, dir, rules.SIGNAL_SORTS, "fired")
    # One more than a page: whether there is a next page, without counting again.
    rows = rules.find_signals(session, **where, until=end, sort=key, descending=desc, after=before or None, limit=limit + 1)
    older = rows[limit - 1] if len(rows) > limit else None
    rows = rows[:limit]
    filters_only = {
        "since": since.isoformat() if since else "",
        "until": until.isoformat() if until else "",
        "kind": kind,
        "rule_id": rule_id,
        "account_id": account_id,
        "limit": "" if limit == SHOWN else str(limit),
    }
    return render(
        request,
        "signals.html",
        rows=rows,
        total=total,
        shown=limit,
        filters={**filters_only, "sort": sort, "dir": dir},
        filters_only=filters_only,
        sort=key,
        desc=desc,
        default_order=not sort,
        paged=bool(before),
        older=older.signal_id if older else None,
    )


@router.get("/signals/{signal_id}")
def signal(request: Request, signal_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    """One signal and its evidence: what the rule saw when it fired."""
    s = rules.get_signal(session, signal_id)
    if s is None:
        raise NotFound(f"no signal {signal_id!r}")
    return render(request, "signal.html", s=s)


@router.get("/messages")
def messages(
    request: Request,
    since: date | None = Query(None, description="created on or after this UTC day"),
    channel: str = Query("", pattern="^(|email|inapp|webhook|csm)$"),
    state: str = Query("", pattern="^(|queued|sending|sent|failed|skipped|uncertain)$"),
    skip_reason: str = Query("", max_length=64),
    playbook_id: str = Query("", max_length=128),
    account_id: str = Query("", max_length=128),
    resource_id: str = Query("", max_length=128, description="messages a recommend step chose this resource for"),
    survey_id: str = Query("", max_length=64, description="messages of a survey step asking this survey"),
    broadcast_id: str = Query("", max_length=36, description="messages of this broadcast"),
    sort: str = Query("", pattern=SORT_PATTERN, description="the column: " + ", ".join(outreach.MESSAGE_SORTS)),
    dir: str = Query("", pattern="^(|asc|desc)$", description="the direction (default: newest first)"),
    before: str = Query("", max_length=128, description="the page after this message (the Older link's)"),
    limit: int = Query(SHOWN, ge=1, le=500, description="messages a page"),
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
        "resource_id": resource_id or None,
        "survey_id": survey_id or None,
        "broadcast_id": broadcast_id or None,
    }
    total = outreach.count_messages(session, **filters)
    # One more than a page: whether there is an older page (keyset, by the last row's id).
    key, desc = _order(sort, dir, outreach.MESSAGE_SORTS, "created")
    rows = outreach.list_messages(session, **filters, enrollment_id=None, limit=limit + 1, before=before or None, sort=key, descending=desc)
    older = rows[limit - 1].id if len(rows) > limit else None
    filters_only = {
        "since": since.isoformat() if since else "",
        "channel": channel,
        "state": state,
        "skip_reason": skip_reason,
        "playbook_id": playbook_id,
        "account_id": account_id,
        "resource_id": resource_id,
        "survey_id": survey_id,
        "broadcast_id": broadcast_id,
        "limit": "" if limit == SHOWN else str(limit),
    }
    return render(
        request,
        "messages.html",
        rows=rows[:limit],
        total=total,
        shown=limit,
        states=STATES,
        channels=CHANNELS,
        paged=bool(before),
        older=older,
        filters={**filters_only, "sort": sort, "dir": dir},
        filters_only=filters_only,
        sort=key,
        desc=desc,
        default_order=not sort,
    )


ENROLMENT_STATUSES = ("active", "converted", "completed", "failed")


@router.get("/enrolments")
def enrolments(
    request: Request,
    playbook_id: str = Query("", max_length=128),
    status: str = Query("", pattern="^(|active|converted|completed|failed)$"),
    account_id: str = Query("", max_length=128),
    sort: str = Query("", pattern=SORT_PATTERN, description="the column: " + ", ".join(outreach.ENROLLMENT_SORTS)),
    dir: str = Query("", pattern="^(|asc|desc)$", description="the direction (default: newest first)"),
    after: str = Query("", max_length=36, description="the page after this enrolment (the Next link's)"),
    limit: int = Query(SHOWN, ge=1, le=500, description="enrolments a page"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """Every playbook's enrolments (issue 23, item 2), filtered by playbook, state and
    account, sorted by any column either way (then the id), paged after the last row."""
    key, desc = _order(sort, dir, outreach.ENROLLMENT_SORTS, "enrolled")
    where: dict[str, Any] = {"playbook_id": playbook_id or None, "status": status or None, "account_id": account_id or None}
    total = outreach.count_enrollments(session, **where)
    rows = outreach.find_enrollments(session, **where, sort=key, descending=desc, after=after or None, limit=limit + 1)
    filters_only = {"playbook_id": playbook_id, "status": status, "account_id": account_id, "limit": "" if limit == SHOWN else str(limit)}
    return render(
        request,
        "enrolments.html",
        rows=rows[:limit],
        total=total,
        shown=limit,
        statuses=ENROLMENT_STATUSES,
        playbooks=[h.id for h in outreach.list_playbook_heads(session)],
        sort=key,
        desc=desc,
        filters_only=filters_only,
        filters={**filters_only, "sort": sort, "dir": dir},
        paged=bool(after),
        next_after=rows[limit - 1].id if len(rows) > limit else "",
    )


@router.get("/messages/{message_id}")
def message(request: Request, message_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    """One message as its recipient got it: the HTML in a sandboxed frame (no script, no
    same-origin access; the template preview's policy), the text as text."""
    m = outreach.get_message(session, message_id)
    if m is None:
        raise NotFound(f"no message {message_id!r}")
    response = render(request, "message.html", m=m)
    if m.html_body:
        response.headers["Content-Security-Policy"] = CSP_EMAIL_PREVIEW
    return response
