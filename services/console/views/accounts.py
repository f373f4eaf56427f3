"""Accounts: search and filter, and one account on one page (traits, 90-day usage,
users by role, signals with evidence, messages, enrolments and a merged timeline)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console import charts
from services.console.views import health
from services.console.web import READER, Viewer, now_of, render, seg, signal_source
from services.ingest import interface as ingest
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep
from shared.errors import NotFound

router = APIRouter()
PAGE = 50
SIGNAL_DAYS = 30
USAGE_DAYS = 90
CONTRACT_OUTCOMES_SHOWN = 20  # the newest; the API lists them all


SORTS = ("id", "health", *ingest.ACCOUNT_SORTS)


@router.get("/accounts")
def accounts(
    request: Request,
    q: str = Query("", max_length=200),
    segment: str = "",
    plan: str = "",
    lifecycle_stage: str = "",
    signalled: bool = False,
    label: str = "",
    sort: str = "id",
    desc: bool = False,
    page: int = Query(1, ge=1, le=100_000),
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    now = now_of(request)
    today = now.date()
    # Health orders and filters the list for CS Ops only: a CSM sees health on their own
    # engagements' accounts, and an order by it would tell them about the others.
    by_health = viewer.can("ops")
    label = label if by_health and label in rules.HEALTH_LABELS else ""
    sort = sort if sort in SORTS and (by_health or sort != "health") else "id"
    only: Any = rules.accounts_signalled_since(session, now - timedelta(days=SIGNAL_DAYS)) if signalled else None
    if label:
        labelled = rules.accounts_health_labelled(session, today, label)
        only = labelled if only is None else labelled.where(labelled.selected_columns[0].in_(only))
    items, total = ingest.search_accounts(
        session,
        text=q.strip() or None,
        segment=segment or None,
        plan=plan or None,
        lifecycle_stage=lifecycle_stage or None,
        only_ids=only,
        offset=(page - 1) * PAGE,
        limit=PAGE,
        order=rules.current_health_scores(session, today) if sort == "health" else sort,
        descending=desc,
    )
    pages = max(1, -(-total // PAGE))
    filters = {
        "q": q,
        "segment": segment,
        "plan": plan,
        "lifecycle_stage": lifecycle_stage,
        "signalled": "1" if signalled else "",
        "label": label,
        "sort": "" if sort == "id" else sort,
        "desc": "1" if desc else "",
    }
    ids = sorted(health.visible_accounts(session, viewer, (a.id for a in items)))
    return render(
        request,
        "accounts.html",
        items=items,
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        choices=ingest.distinct_traits(session),
        signal_days=SIGNAL_DAYS,
        by_health=by_health,
        labels=rules.HEALTH_LABELS,
        health=health.current(session, today, ids),
        sparks=health.sparklines(session, today, ids),
        spark_days=health.SPARK_DAYS,
    )


def _timeline(
    signals: Sequence[Any], messages: Sequence[Any], enrollments: Sequence[Any], events: Sequence[Any], link_rules: bool
) -> list[dict[str, Any]]:
    """Rows of rules, outreach and ingest (their ORM classes stay behind the doors, hence Any)."""
    out = []
    for s in signals:
        out.append(
            {
                "at": s.fired_at,
                "what": "signal",
                "text": f"{s.rule_name} ({s.kind}, {s.severity})",
                "link": signal_source(s.rule_id) if link_rules else None,
            }
        )
    for m in messages:
        detail = m.skip_reason if m.state == "skipped" else m.subject or m.template_id or ""
        out.append(
            {
                "at": m.sent_at or m.created_at,
                "what": f"message {m.state}",
                "text": f"{m.channel} to {m.recipient or m.user_id or '—'}: {detail}",
                "link": None,
            }
        )
    for e in enrollments:
        out.append(
            {
                "at": e.enrolled_at,
                "what": "enrolled",
                "text": f"{e.playbook_id} v{e.playbook_version}" + (" (holdout)" if e.holdout else ""),
                "link": f"/console/playbooks/{seg(e.playbook_id)}",
            }
        )
        if e.ended_at:
            out.append(
                {
                    "at": e.ended_at,
                    "what": f"enrolment {e.status}",
                    "text": e.playbook_id,
                    "link": f"/console/playbooks/{seg(e.playbook_id)}",
                }
            )
    for ev in events:
        out.append(
            {"at": ev.timestamp, "what": f"event {ev.type}", "text": ev.name + (f" by {ev.user_id}" if ev.user_id else ""), "link": None}
        )
    return sorted(out, key=lambda r: r["at"], reverse=True)


def account_or_404(session: Session, account_id: str) -> Any:
    account = ingest.account(session, account_id)
    if account is None:
        raise NotFound(f"There is no account {account_id!r}.")
    return account


@router.get("/accounts/{account_id}")
def account(request: Request, account_id: str, session: Session = SessionDep, viewer: Viewer = READER) -> HTMLResponse:
    acct = account_or_404(session, account_id)
    now = now_of(request)
    end = now.date()
    start = end - timedelta(days=USAGE_DAYS - 1)
    usage = ingest.usage_report(session, account_id, start, end)
    by_day = {d.day: d for d in usage.days}
    days = [start + timedelta(days=i) for i in range(USAGE_DAYS)]
    labels = [d.strftime("%m-%d") for d in days]
    usage_chart = charts.lines(
        f"Usage of {acct.name or acct.id}, last {USAGE_DAYS} days",
        labels,
        {
            "events": [by_day[d].events if d in by_day else 0 for d in days],
            "active users": [by_day[d].active_users if d in by_day else 0 for d in days],
        },
        x_label="day (UTC)",
        y_label="per day",
    )
    users = ingest.list_users(session, account_id, role=None, after=None, limit=500)
    by_role: dict[str, list[Any]] = {}
    for u in users:
        by_role.setdefault(u.role or "no role", []).append(u)
    signals = rules.list_signals(session, kind=None, rule_id=None, account_id=account_id, since=None, until=None, before=None, limit=50)
    ops = viewer.can("ops")  # messages and enrolments are CS Ops data in the API too
    messages = (
        outreach.list_messages(
            session, state=None, account_id=account_id, playbook_id=None, channel=None, enrollment_id=None, limit=50, before=None
        )
        if ops
        else []
    )
    enrollments = outreach.enrollments_for_account(session, account_id, 50) if ops else []
    events = ingest.recent_events(session, account_id, 30)
    contract_outcomes = ingest.contract_outcomes(session, account_id, limit=CONTRACT_OUTCOMES_SHOWN)
    health_chart, health_rows = (
        health.history_chart(session, account_id, acct.name or acct.id, end)
        if health.visible_accounts(session, viewer, [account_id])
        else (None, [])
    )
    return render(
        request,
        "account.html",
        account=acct,
        usage=usage,
        usage_chart=usage_chart,
        by_role=by_role,
        user_count=len(users),
        signals=signals,
        messages=messages,
        enrollments=enrollments,
        show_outreach=ops,
        timeline=_timeline(signals, messages, enrollments, events, ops),
        contract_outcomes=contract_outcomes,
        health_chart=health_chart,
        latest_health=health_rows[0] if health_rows else None,
        health_days=health.HISTORY_DAYS,
        named_segments=sorted(rules.segment_memberships(session, [account_id]).get(account_id, set())),
    )
