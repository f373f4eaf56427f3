"""What the pool looks like: one engagement in full (the CSM's view), the pool report,
outcomes against the escalation holdout, and the capacity forecast."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.ingest import usage
from services.outreach.engagements import repository as repo
from services.outreach.engagements import service
from services.outreach.engagements.schemas import (
    ContactOut,
    CsmLoad,
    EngagementDetail,
    EngagementOut,
    EventOut,
    ForecastOut,
    GroupRate,
    MessageBrief,
    OutcomeReport,
    OutcomeRow,
    PoolOut,
    WorkingHours,
)
from services.outreach.models import Enrollment, Engagement, SignalReceipt
from services.outreach.stats import lift_interval
from services.outreach.templates.rendering import account_context

SENT_STATES = ("queued", "sending", "sent")


def detail(session: Session, e: Engagement, now: datetime) -> EngagementDetail:
    account = usage.account(session, e.account_id)
    contacts: dict[str, list[ContactOut]] = {}
    for u in usage.users_by_role(session, e.account_id):
        contacts.setdefault(u.role or "unknown", []).append(ContactOut.model_validate(u))
    msgs = repo.account_messages(session, e.account_id, now - timedelta(days=90), limit=500)
    base = EngagementOut.model_validate(e).model_dump()
    return EngagementDetail(
        **base,
        account=service._jsonable(account_context(account)) if account else {"id": e.account_id},
        usage_90d=usage.daily_series(session, e.account_id, now.date(), 90),
        contacts=contacts,
        messages_sent=[MessageBrief.model_validate(m) for m in msgs if m.channel != "csm" and m.state in SENT_STATES],
        messages_skipped=[MessageBrief.model_validate(m) for m in msgs if m.state == "skipped"],
        touches=[MessageBrief.model_validate(m) for m in msgs if m.channel == "csm"],
        timeline=[EventOut.model_validate(x) for x in repo.events_of(session, e.id)],
        earlier_engagements=[EngagementOut.model_validate(x) for x in repo.for_account(session, e.account_id, exclude=e.id)],
    )


def pool(session: Session, now: datetime) -> PoolOut:
    loads = repo.open_load(session)
    rows = []
    capacity = 0
    for c in repo.list_csms(session):
        ok = service.available(c, now)
        n = loads.get(c.id, 0)
        if ok:
            capacity += c.capacity
        rows.append(
            CsmLoad(
                csm_id=c.id,
                name=c.name,
                available=ok,
                capacity=c.capacity,
                open=n,
                utilisation=round(n / c.capacity, 3) if c.capacity else None,
            )
        )
    by_status: dict[str, int] = {}
    by_outcome: dict[str, int] = {}
    for status, outcome, n in repo.counts_by_status_outcome(session):
        by_status[status] = by_status.get(status, 0) + n
        if outcome:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    qlen, oldest = repo.queue_stats(session)
    return PoolOut(
        csms=rows,
        capacity=capacity,
        open=sum(loads.values()),
        queue_length=qlen,
        oldest_queued_at=oldest,
        queue_age_hours=round((now - oldest).total_seconds() / 3600, 2) if oldest else None,
        by_status=by_status,
        by_outcome=by_outcome,
    )


def _rate(n: int, x: int) -> GroupRate:
    return GroupRate(n=n, recovered=x, rate=round(x / n, 4) if n else None)


def _row(key: str, engaged: list[bool], held: list[bool] | None) -> OutcomeRow:
    e = _rate(len(engaged), sum(engaged))
    if held is None:
        return OutcomeRow(key=key, engaged=e)
    h = _rate(len(held), sum(held))
    lift = ci = None
    if e.n and h.n:
        lift = round(e.recovered / e.n - h.recovered / h.n, 4)
        interval = lift_interval(e.recovered, e.n, h.recovered, h.n)
        ci = [round(v, 4) for v in interval] if interval else None
    return OutcomeRow(key=key, engaged=e, held_out=h, lift=lift, confidence_interval=ci)


def outcomes(session: Session, now: datetime, days: int) -> OutcomeReport:
    """Success is the *measured* outcome (recovered, or expanded for discovery), the
    same measurement for engaged and held-out accounts, so the comparison is fair
    whatever CSMs type. Cancelled engagements are left out."""
    rows = repo.closed_for_outcomes(session, now - timedelta(days=days))

    def split(pred) -> tuple[list[bool], list[bool]]:
        sel = [r for r in rows if pred(r)]
        return (
            [bool((r.measured or {}).get("success")) for r in sel if r.status != "held_out"],
            [bool((r.measured or {}).get("success")) for r in sel if r.status == "held_out"],
        )

    overall = _row("all", *split(lambda r: True))
    by_rule = [_row(k, *split(lambda r, k=k: r.rule_id == k)) for k in sorted({r.rule_id for r in rows if r.rule_id})]
    by_playbook = [_row(k, *split(lambda r, k=k: r.playbook_id == k)) for k in sorted({r.playbook_id for r in rows if r.playbook_id})]
    by_csm = [_row(k, split(lambda r, k=k: r.csm_id == k)[0], None) for k in sorted({r.csm_id for r in rows if r.csm_id})]
    return OutcomeReport(
        definition="success = the automatic measurement at close: distinct active users since the signal (at most 28 "
        "days) back to the 28-day baseline before it (recover, onboarding, custom) or seats/ARR grown "
        "(discover_expansion); engaged = resolved or expired; held_out = the escalation holdout, measured at the end "
        "of the same time-box; disagreements = CSM outcomes the measurement contradicts",
        overall=overall,
        by_rule=by_rule,
        by_playbook=by_playbook,
        by_csm=by_csm,
        disagreements=sorted(r.id for r in rows if (r.measured or {}).get("csm_agrees") is False),
    )


def _escalating_playbooks(session: Session) -> list[tuple[str, dict, float]]:
    """(playbook id, trigger, escalation holdout %) of enabled playbooks with an open_engagement step."""
    out = []
    for playbook_id, definition in repo.enabled_playbook_definitions(session):
        steps = definition.get("steps") or []
        opens = [s for s in steps if s.get("type") == "open_engagement"]
        if opens:
            out.append((playbook_id, definition.get("trigger") or {}, float(opens[0].get("holdout_percent") or 0)))
    return out


def forecast(
    session: Session,
    now: datetime,
    *,
    lookback_days: int,
    hours_per_engagement: float,
    reactive: float,
    collateral: float,
    overhead: float,
    time_box_days: float = 30.0,
) -> ForecastOut:
    """Bounded and synchronous: a handful of grouped counts over the lookback, whatever
    the number of accounts (see docs/engagements.md for the arithmetic)."""
    since = now - timedelta(days=lookback_days)
    weeks = lookback_days / 7
    received = list(
        session.execute(
            select(SignalReceipt.rule_id, SignalReceipt.kind, func.count())
            .where(SignalReceipt.received_at >= since)
            .group_by(SignalReceipt.rule_id, SignalReceipt.kind)
        )
    )
    enrolled = dict(
        session.execute(
            select(Enrollment.playbook_id, func.count()).where(Enrollment.enrolled_at >= since).group_by(Enrollment.playbook_id)
        ).all()
    )
    opened = repo.opened_since(session, since)
    by_playbook = []
    total_signals = total_engagements = 0.0
    for pid, trigger, holdout in _escalating_playbooks(session):
        rules, kinds = set(trigger.get("rules") or []), set(trigger.get("kinds") or [])
        signals = sum(n for rule_id, kind, n in received if (not rules or rule_id in rules) and (not kinds or kind in kinds))
        escalated = sum(1 for p, _r, _s, _t in opened if p == pid)  # engaged and held out alike
        n_enrolled = enrolled.get(pid, 0)
        rate = escalated / n_enrolled if n_enrolled else 1.0
        per_week = signals / weeks * rate * (1 - holdout / 100)
        total_signals += signals / weeks
        total_engagements += per_week
        by_playbook.append(
            {
                "playbook_id": pid,
                "signals_per_week": round(signals / weeks, 3),
                "enrolled": n_enrolled,
                "escalated": escalated,
                "escalation_rate": round(rate, 4),
                "holdout_percent": holdout,
                "engagements_per_week": round(per_week, 3),
            }
        )
    hand = sum(1 for p, _r, _s, _t in opened if p is None) / weeks
    total_engagements += hand
    mean_days = repo.mean_open_days(session, since)
    available = [c for c in repo.list_csms(session) if service.available(c, now)]
    mean_weeks = (mean_days if mean_days is not None else time_box_days) / 7
    concurrent = total_engagements * mean_weeks
    capacity = sum(c.capacity for c in available)
    proactive_share = 1 - reactive - collateral - overhead
    per_csm_hours = [WorkingHours.model_validate(c.working_hours or {}).weekly_hours() * proactive_share for c in available]
    pool_hours = sum(per_csm_hours)
    hours_needed = total_engagements * hours_per_engagement
    mean_hours = (pool_hours / len(per_csm_hours)) if per_csm_hours else 40 * proactive_share
    mean_capacity = (capacity / len(available)) if available else 10
    needed = max(math.ceil(hours_needed / mean_hours) if mean_hours else 0, math.ceil(concurrent / mean_capacity) if mean_capacity else 0)
    all_signals = sum(n for _r, _k, n in received) / weeks
    return ForecastOut(
        lookback_days=lookback_days,
        accounts=usage.count_accounts(session),
        assumptions={
            "hours_per_engagement": hours_per_engagement,
            "reactive_share": reactive,
            "collateral_share": collateral,
            "overhead_share": overhead,
            "proactive_share": round(proactive_share, 4),
        },
        signals_per_week=round(all_signals, 3),
        escalation_rate=round(total_engagements / total_signals, 4) if total_signals else 0.0,
        engagements_per_week=round(total_engagements, 3),
        hand_opened_per_week=round(hand, 3),
        mean_open_weeks=round(mean_weeks, 3),
        concurrent_open_expected=round(concurrent, 2),
        pool_capacity=capacity,
        pool_proactive_hours_per_week=round(pool_hours, 2),
        hours_needed_per_week=round(hours_needed, 2),
        csms_available=len(available),
        csms_needed=needed,
        queue_grows=concurrent > capacity or hours_needed > pool_hours,
        by_playbook=by_playbook,
        method="signals outreach received over the lookback x each escalating playbook's observed escalation rate "
        "(1 until it has history) x (1 - escalation holdout), plus hand-opened; open engagements = rate x mean "
        "weeks open (Little's law); CSMs needed = max(hours needed / proactive hours per CSM, open / capacity)",
    )
