"""Pooled CSMs and the pool: a CSM's inbox, an engagement on one screen with its
actions (accept, log a touch, note, extend, resolve; reassign and cancel for CS Ops),
CS Ops opening one by hand from an account, and the pool page (load against capacity, the queue by age, status and outcome, the
forecast). Every rule is the engagements service's; these views only call it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.console import charts
from services.console.views import health
from services.console.views.accounts import account_or_404
from services.console.web import CSP_EMAIL_PREVIEW, OPS, READER, ConsoleForbidden, Form, FormDep, Viewer, now_of, render, seg
from services.ingest import interface as ingest
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep, context_of
from shared.errors import Forbidden, NotFound, TouchlineError, Unprocessable
from shared.settings import Settings

router = APIRouter()
INBOX_LIMIT = 200


def _days_left(e: outreach.Engagement, now: datetime) -> float | None:
    return None if e.due_at is None else (e.due_at - now).total_seconds() / 86400


@router.get("/inbox")
def inbox(request: Request, session: Session = SessionDep, viewer: Viewer = READER) -> HTMLResponse:
    if not viewer.principal.csm_id:
        raise ConsoleForbidden(
            "The inbox is a CSM's: sign in with a csm key bound to a roster entry "
            "(`touchline console-link --csm <id>`). CS Ops see every engagement on the Pool page."
        )
    now = now_of(request)
    # Highest priority first, then the soonest due (the overdue among them): one order, in SQL.
    rows = outreach.list_engagements(
        session, csm_id=viewer.principal.csm_id, statuses=outreach.OPEN_ENGAGEMENT_STATUSES, limit=INBOX_LIMIT, order="priority"
    )
    # The 20 newest closed ones (filtered in SQL: not the closed among the 20 newest of any status).
    closed_statuses = [s for s in outreach.ENGAGEMENT_STATUSES if s not in outreach.OPEN_ENGAGEMENT_STATUSES]
    closed = outreach.list_engagements(session, csm_id=viewer.principal.csm_id, statuses=closed_statuses, limit=20, order="opened")
    # Reminders due (issue 23, item 3): the engagement timers' own reminders
    # (TOUCHLINE_ENGAGEMENT_REMINDER_DAYS before the due time) that have come, soonest due first.
    due = [(e, at) for e in rows if (at := outreach.engagement_reminder_due(e, now)) is not None]
    due.sort(key=lambda pair: (pair[0].due_at or now, pair[0].id))
    return render(
        request,
        "inbox.html",
        reminders=[(e, at, _days_left(e, now)) for e, at in due],
        reminder_days=" and ".join(f"{d:g} day{'' if d == 1 else 's'}" for d in context_of(request).settings.engagement_reminders),
        rows=[(e, _days_left(e, now)) for e in rows],
        accounts=ingest.accounts(session, [e.account_id for e in rows]),
        closed=closed,
        now=now,
        health=health.of_engagements(session, now.date(), rows),
    )


def _load(session: Session, engagement_id: str, viewer: Viewer, *, lock: bool = False) -> outreach.Engagement:
    try:
        return outreach.engagement_visible_to(outreach.get_engagement(session, engagement_id, lock=lock), viewer.principal, engagement_id)
    except Forbidden as exc:
        raise ConsoleForbidden(f"{exc.detail}.") from None


def _page(
    request: Request,
    session: Session,
    e: outreach.Engagement,
    viewer: Viewer,
    *,
    status_code: int = 200,
    problem: Any = None,
    done: str | None = None,
    already: bool = False,
    typed: dict[str, Any] | None = None,
) -> HTMLResponse:
    """The engagement on one screen. ``typed``: the form that was refused (its action and
    fields), shown again as it was typed beside the problem; ``already``: opening it by
    hand found it already open."""
    now = now_of(request)
    d = outreach.engagement_detail(session, e, now)
    labels = [u["day"][5:] for u in d.usage_90d]
    usage_chart = charts.lines(
        f"Usage of {e.account_id}, last 90 days",
        labels,
        {
            "events": [sum(u["events"].values()) for u in d.usage_90d],
            "active users": [u["active_users"] for u in d.usage_90d],
        },
        x_label="day (UTC)",
        y_label="per day",
    )
    csms = outreach.list_csms(session) if viewer.can("ops") else []
    return render(
        request,
        "engagement.html",
        status_code=status_code,
        e=d,
        usage_chart=usage_chart,
        days_left=_days_left(e, now),
        open=e.status in outreach.OPEN_ENGAGEMENT_STATUSES,
        touch_kinds=outreach.TOUCH_KINDS,
        outcomes=outreach.ENGAGEMENT_OUTCOMES,
        csms=csms,
        contacts=sorted((c for people in d.contacts.values() for c in people), key=lambda c: ((c.name or c.id).lower(), c.id)),
        templates=[t for t in outreach.list_templates(session) if t.audience != "internal"],
        problem=problem,
        done=done,
        already=already,
        typed=typed or {},
        is_ops=viewer.can("ops"),
        health=health.of_engagements(session, now.date(), [e]).get(e.id),
    )


@router.get("/engagements/{engagement_id}")
def engagement(
    request: Request, engagement_id: str, done: str = "", already: bool = False, session: Session = SessionDep, viewer: Viewer = READER
) -> Response:
    return _page(request, session, _load(session, engagement_id, viewer), viewer, done=done or None, already=already)


def _apply(
    action: str, session: Session, e: outreach.Engagement, form: dict[str, Any], viewer: Viewer, now: datetime, settings: Settings
) -> None:
    actor = viewer.principal.actor
    if action == "email":
        outreach.email_contact(
            session,
            e,
            user_id=form.get("user_id", ""),
            template_id=form.get("template_id") or None,
            subject=form.get("subject", ""),
            text=form.get("body", ""),
            actor=actor,
            now=now,
            settings=settings,
        )
    elif action == "accept":
        outreach.accept_engagement(session, e, actor=actor, now=now)
    elif action == "touch":
        touch = outreach.TouchIn(kind=form.get("kind", ""), user_id=form.get("user_id") or None, summary=form.get("summary", ""))
        outreach.log_touch(session, e, kind=touch.kind, user_id=touch.user_id, summary=touch.summary, actor=actor, now=now)
    elif action == "note":
        note = outreach.NoteIn(text=form.get("text", ""))
        outreach.add_note(session, e, text=note.text, actor=actor, now=now)
    elif action == "extend":
        ext = outreach.ExtendIn(days=form.get("days") or 0, reason=form.get("reason", ""))
        outreach.extend_engagement(session, e, days=ext.days, reason=ext.reason, actor=actor, now=now, settings=settings)
    elif action == "resolve":
        res = outreach.ResolveIn(outcome=form.get("outcome", ""), note=form.get("note", ""))
        outreach.resolve_engagement(session, e, outcome=res.outcome, note=res.note, actor=actor, now=now, settings=settings)
    elif action == "reassign" and viewer.can("ops"):
        move = outreach.ReassignIn(csm_id=form.get("csm_id") or None, reason=form.get("reason", ""))
        outreach.reassign_engagement(session, e, move.csm_id, actor=actor, now=now, settings=settings, reason=move.reason)
    elif action == "cancel" and viewer.can("ops"):
        stop = outreach.CancelIn(reason=form.get("reason", ""))
        outreach.cancel_engagement(session, e, reason=stop.reason, actor=actor, now=now, settings=settings)
    elif action in ("reassign", "cancel"):
        raise ConsoleForbidden(f"Only CS Ops can {action} an engagement.")
    else:
        raise Unprocessable(f"unknown action {action!r}")


ACTIONS = ("accept", "touch", "email", "note", "extend", "resolve", "reassign", "cancel")


@router.post("/engagements/{engagement_id}/{action}")
def act(
    request: Request, engagement_id: str, action: str, session: Session = SessionDep, viewer: Viewer = READER, form: Form = FormDep
) -> Response:
    if action not in ACTIONS:
        raise Unprocessable(f"unknown action {action!r}")
    e = _load(session, engagement_id, viewer, lock=True)
    typed = {"action": action, **{k: v for k, v in form.items() if k != "csrf"}}
    if form.problems:  # the API's input limits, before anything is stored
        return _page(request, session, e, viewer, status_code=422, problem=form.problem_text())
    try:
        _apply(action, session, e, form, viewer, now_of(request), context_of(request).settings)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        return _page(request, session, e, viewer, status_code=422, problem=problem, typed=typed)
    except TouchlineError as exc:
        session.rollback()
        e = _load(session, engagement_id, viewer)
        detail = exc.detail
        if isinstance(detail, dict) and "message" in detail:  # e.g. the contact gate's {reason, message}
            detail = f"{str(detail['message'])[:1].upper()}{str(detail['message'])[1:]}" + (
                f" ({detail['reason']})." if "reason" in detail else "."
            )
        return _page(request, session, e, viewer, status_code=exc.status_code, problem=detail, typed=typed)
    return RedirectResponse(f"/console/engagements/{seg(engagement_id)}?done={action}", status_code=303)


@router.get("/engagements/{engagement_id}/messages/{message_id}")
def message(request: Request, engagement_id: str, message_id: str, session: Session = SessionDep, viewer: Viewer = READER) -> Response:
    """A message about the engagement's account as its recipient got it: what automation
    sent (and a CSM's own emails), the HTML in a sandboxed frame (no script, no
    same-origin access), never spliced into this page."""
    e = _load(session, engagement_id, viewer)
    m = outreach.get_message(session, message_id)
    # What the engagement page lists: the account's messages, not the notices about the
    # engagement sent to CSMs (internal mail of the pool; the repository leaves them out too).
    if m is None or m.account_id != e.account_id or (m.audience == "internal" and m.step_id.startswith("engagement.")):
        raise NotFound(f"no message {message_id!r} about this engagement's account")
    response = render(request, "engagement_message.html", e=e, m=m)
    if m.html_body:
        response.headers["Content-Security-Policy"] = CSP_EMAIL_PREVIEW
    return response


LIST_PAGE = 50
DUE_WINDOWS = ("overdue", "week")


@router.get("/engagements")
def engagements(
    request: Request,
    status: str = Query("", max_length=32, description="a status, or 'open' (queued, assigned or active)"),
    csm_id: str = Query("", max_length=128),
    goal: str = Query("", max_length=64),
    outcome: str = Query("", max_length=64),
    due: str = Query("", pattern="^(|overdue|week)$", description="overdue, or due within 7 days from now"),
    sort: str = Query(
        "", pattern="^[a-z_]{0,32}$", description="a column (priority and opened: highest and newest first); default: by due date"
    ),
    dir: str = Query("", pattern="^(|asc|desc)$", description="the direction"),
    page: int = Query(1, ge=1, le=100_000),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """Every engagement, filtered by status, CSM, goal, outcome and due window, counted
    and paged: the list the overview's engagement figures count (same filters)."""
    now = now_of(request)
    statuses = outreach.OPEN_ENGAGEMENT_STATUSES if status == "open" else ((status,) if status else None)
    due_from, due_before = {"overdue": (None, now), "week": (now, now + timedelta(days=7))}.get(due, (None, None))
    rows, total = outreach.find_engagements(
        session,
        statuses=statuses,
        csm_id=csm_id or None,
        goal=goal or None,
        outcome=outcome or None,
        due_from=due_from,
        due_before=due_before,
        offset=(page - 1) * LIST_PAGE,
        limit=LIST_PAGE,
        sort=sort if sort in outreach.ENGAGEMENT_SORTS else "due",
        descending=(dir == "desc") if dir else None,
    )
    sort = sort if sort in outreach.ENGAGEMENT_SORTS else ""
    desc = (dir == "desc") if dir else sort in ("priority", "opened")
    filters = {"status": status, "csm_id": csm_id, "goal": goal, "outcome": outcome, "due": due, "sort": sort, "dir": dir}
    return render(
        request,
        "engagements.html",
        rows=[(e, _days_left(e, now)) for e in rows],
        total=total,
        page=page,
        pages=max(1, -(-total // LIST_PAGE)),
        filters=filters,
        filters_only={k: v for k, v in filters.items() if k not in ("sort", "dir")},
        sort=sort,
        desc=desc,
        statuses=("open", *outreach.ENGAGEMENT_STATUSES),
        goals=outreach.ENGAGEMENT_GOALS,
        outcomes=outreach.ENGAGEMENT_OUTCOMES,
        csms=outreach.list_csms(session),
    )


@router.get("/pool")
def pool(
    request: Request,
    segment: list[str] = Query([], max_length=20),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """The pool, and its forecast; with ``segment=`` (ticked in the page) also the
    forecast's demand per named segment, as ``GET /v1/pool/forecast?segment=``."""
    now = now_of(request)
    chosen = [s for s in dict.fromkeys(segment) if s]
    settings = context_of(request).settings
    p = outreach.pool_report(session, now)
    load_chart = (
        charts.bars(
            "Open engagements per CSM against capacity",
            [c.name for c in p.csms],
            {
                "open": [c.open for c in p.csms],
                "free capacity": [max(0, c.capacity - c.open) for c in p.csms],
            },
            x_label="CSM",
            y_label="engagements",
        )
        if p.csms
        else None
    )
    queued = outreach.list_engagements(session, status="queued", limit=100, order="opened")
    queued.sort(key=lambda e: e.opened_at)
    f = outreach.pool_forecast(
        session,
        now,
        lookback_days=90,
        hours_per_engagement=6.0,
        reactive=0.15,
        collateral=0.10,
        overhead=0.15,
        time_box_days=settings.engagement_time_box_days,
        retention_days=settings.raw_event_retention_days,
        segment_ids=chosen,
    )
    forecast_chart = charts.hbars(
        "Expected load against the pool",
        [
            ("engagements opened per week", f.engagements_per_week),
            ("expected open at once", f.concurrent_open_expected),
            ("pool capacity (open at once)", f.pool_capacity),
            ("CSMs available", f.csms_available),
            ("CSMs needed", f.csms_needed),
        ],
        x_label="per week, at once, or CSMs",
    )
    recent = outreach.list_engagements(session, limit=50, order="opened")
    return render(
        request,
        "pool.html",
        p=p,
        load_chart=load_chart,
        queued=[(e, (now - e.opened_at).total_seconds() / 3600) for e in queued],
        f=f,
        forecast_chart=forecast_chart,
        recent=recent,
        chosen=chosen,
        segments=rules.list_segments(session, include_deleted=False, after=None, limit=500),
    )


@router.get("/pool/outcomes")
def pool_outcomes(
    request: Request,
    days: int = Query(365, ge=1, le=3650),
    segment: list[str] = Query([], max_length=20),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """``GET /v1/pool/outcomes`` as a page: engaged against the escalation holdout,
    overall and by rule, playbook, CSM and the named segments picked."""
    chosen = [s for s in dict.fromkeys(segment) if s]
    report = outreach.engagement_outcomes(session, now_of(request), days, chosen)
    segments = rules.list_segments(session, include_deleted=False, after=None, limit=500)
    return render(request, "pool_outcomes.html", r=report, days=days, chosen=chosen, segments=segments)


OPEN_FIELDS = ("goal", "title", "note", "csm_id")


def _open_page(
    request: Request,
    session: Session,
    account: Any,
    values: dict[str, str],
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "engagement_open.html",
        status_code=status_code,
        account=account,
        values=values,
        errors=errors or {},
        goals=outreach.ENGAGEMENT_GOALS,
        csms=outreach.list_csms(session),
    )


@router.get("/accounts/{account_id}/open-engagement")
def open_form(request: Request, account_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    account = account_or_404(session, account_id)
    return _open_page(request, session, account, {"goal": "recover_usage", "title": "", "note": "", "csm_id": ""})


@router.post("/accounts/{account_id}/open-engagement")
def open_engagement(
    request: Request, account_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    """CS Ops open an engagement by hand, as ``POST /v1/engagements`` (the same
    ``OpenIn`` and service): then its page; a refusal beside the field it concerns."""
    account = account_or_404(session, account_id)
    values = {f: form.get(f, "").strip() for f in OPEN_FIELDS}
    if form.problems:
        return _open_page(request, session, account, values, status_code=422, errors=dict(form.problems))
    try:
        body = outreach.OpenIn(
            account_id=account.id, goal=values["goal"], title=values["title"], note=values["note"], csm_id=values["csm_id"] or None
        )
    except ValidationError as exc:
        errors = {str(e["loc"][0]) if e["loc"] else "form": e["msg"].removeprefix("Value error, ") for e in exc.errors()}
        return _open_page(request, session, account, values, status_code=422, errors=errors)
    try:
        with session.begin_nested():  # a refusal after the opening (the CSM cannot take it) undoes the opening too
            e, opened = outreach.open_engagement_by_hand(
                session, body, actor=viewer.principal.actor, now=now_of(request), settings=context_of(request).settings
            )
    except TouchlineError as exc:
        if exc.status_code == 404:
            raise
        field = "csm_id" if exc.code.startswith("csm_") or exc.code == "unknown_csm" else "form"  # the CSM cannot take it
        return _open_page(request, session, account, values, status_code=exc.status_code, errors={field: str(exc.detail)})
    # The account's open one for this goal (the note added to it) says so, as the API's 200 does.
    return RedirectResponse(f"/console/engagements/{seg(e.id)}{'' if opened else '?already=1'}", status_code=303)
