"""What the pool looks like: one engagement in full (the CSM's view), the pool report,
outcomes against the escalation holdout, and the capacity forecast."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.engagements import availability
from services.outreach.engagements import repository as repo
from services.outreach.engagements.email import STEP_ID as CSM_EMAIL_STEP
from services.outreach.engagements.schemas import (
    ContactOut,
    CsmLoad,
    EngagementDetail,
    EngagementOut,
    EventOut,
    ForecastDemand,
    ForecastOut,
    ForecastSegment,
    GroupRate,
    MessageBrief,
    OutcomeReport,
    OutcomeRow,
    PoolOut,
    WorkingHours,
)
from services.outreach.engagements.transitions import jsonable
from services.outreach.models import Engagement, Message
from services.outreach.stats import lift_interval
from services.outreach.templates.context import account_context
from services.rules import interface as rules
from services.rules.interface import replay_firings
from shared.errors import Unprocessable

SENT_STATES = ("queued", "sending", "sent")


def _by_csm(m: Message) -> bool:
    """A CSM's own touch: one logged by hand, or an email a CSM sent from an engagement
    (in their own words or a template, or a library resource)."""
    return m.channel == "csm" or m.step_id in (CSM_EMAIL_STEP, "engagement.resource")


def detail(session: Session, e: Engagement, now: datetime) -> EngagementDetail:
    account = ingest.account(session, e.account_id)
    contacts: dict[str, list[ContactOut]] = {}
    for u in ingest.users_by_role(session, e.account_id):
        contacts.setdefault(u.role or "unknown", []).append(ContactOut.model_validate(u))
    msgs = repo.account_messages(session, e.account_id, now - timedelta(days=90), limit=500)
    base = EngagementOut.model_validate(e).model_dump()
    return EngagementDetail(
        **base,
        account=jsonable(account_context(account)) if account else {"id": e.account_id},
        usage_90d=ingest.daily_series(session, e.account_id, now.date(), 90),
        contacts=contacts,
        messages_sent=[MessageBrief.model_validate(m) for m in msgs if not _by_csm(m) and m.state in SENT_STATES],
        messages_skipped=[MessageBrief.model_validate(m) for m in msgs if m.state == "skipped"],
        touches=[MessageBrief.model_validate(m) for m in msgs if _by_csm(m)],
        timeline=[EventOut.model_validate(x) for x in repo.events_of(session, e.id)],
        earlier_engagements=[EngagementOut.model_validate(x) for x in repo.for_account(session, e.account_id, exclude=e.id)],
    )


def pool(session: Session, now: datetime) -> PoolOut:
    loads = repo.open_load(session)
    rows = []
    capacity = 0
    for c in repo.list_csms(session):
        ok = availability.available(c, now)
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


SEGMENTS_MAX = 20


def outcomes(session: Session, now: datetime, days: int, segment_ids: list[str] | None = None) -> OutcomeReport:
    """Success is the *measured* outcome (recovered, or expanded for discovery), the
    same measurement for engaged and held-out accounts, so the comparison is fair
    whatever CSMs type. Cancelled engagements are left out. With ``segment_ids``, also
    a row per named segment: the engagements whose account was in it when they opened
    (membership as of then, as the playbook report by segment counts enrolments)."""
    if segment_ids:
        segment_ids = rules.segments_for_report(session, segment_ids, SEGMENTS_MAX)
    rows = repo.closed_for_outcomes(session, now - timedelta(days=days))

    def split(pred: Callable[..., bool]) -> tuple[list[bool], list[bool]]:
        sel = [r for r in rows if pred(r)]
        return (
            [bool((r.measured or {}).get("success")) for r in sel if r.status != "held_out"],
            [bool((r.measured or {}).get("success")) for r in sel if r.status == "held_out"],
        )

    overall = _row("all", *split(lambda r: True))
    by_rule = [_row(k, *split(lambda r, k=k: r.rule_id == k)) for k in sorted({r.rule_id for r in rows if r.rule_id})]
    by_playbook = [_row(k, *split(lambda r, k=k: r.playbook_id == k)) for k in sorted({r.playbook_id for r in rows if r.playbook_id})]
    by_csm = [_row(k, split(lambda r, k=k: r.csm_id == k)[0], None) for k in sorted({r.csm_id for r in rows if r.csm_id})]
    by_segment = []
    if segment_ids:
        members = rules.segment_members_at(session, segment_ids, [(r.account_id, r.opened_at) for r in rows])
        for sid in segment_ids:
            inside = {r.id for r, member in zip(rows, members[sid], strict=True) if member}
            by_segment.append(_row(sid, *split(lambda r, inside=inside: r.id in inside)))
    return OutcomeReport(
        definition="success = the automatic measurement at close: distinct active users since the signal (at most 28 "
        "days) back to the 28-day baseline before it (recover, onboarding, custom) or seats/ARR grown "
        "(discover_expansion); engaged = resolved or expired; held_out = the escalation holdout, measured at the end "
        "of the same time-box; disagreements = CSM outcomes the measurement contradicts",
        overall=overall,
        by_rule=by_rule,
        by_playbook=by_playbook,
        by_csm=by_csm,
        by_segment=by_segment,
        disagreements=sorted(r.id for r in rows if (r.measured or {}).get("csm_agrees") is False),
    )


def _escalating_playbooks(session: Session) -> list[tuple[str, dict[str, Any], float]]:
    """(playbook id, trigger, escalation holdout %) of enabled playbooks with an open_engagement step."""
    out = []
    for playbook_id, definition in repo.enabled_playbook_definitions(session):
        steps = definition.get("steps") or []
        opens = [s for s in steps if s.get("type") == "open_engagement"]
        if opens:
            out.append((playbook_id, definition.get("trigger") or {}, float(opens[0].get("holdout_percent") or 0)))
    return out


def _triggers(trigger: dict[str, Any], rule_id: str, kind: str) -> bool:
    rules, kinds = set(trigger.get("rules") or []), set(trigger.get("kinds") or [])
    return (not rules or rule_id in rules) and (not kinds or kind in kinds)


def _counted_received(received: list[tuple[str, str, int]], weeks: float) -> tuple[list[tuple[str, str, float, str]], list[dict[str, Any]]]:
    """The signals received over the window per rule: (rule, kind, per week, source) and the response's rows."""
    counted = [(rule_id, kind, n / weeks, "received") for rule_id, kind, n in received]
    rows: list[dict[str, Any]] = [
        {"rule_id": rule_id, "kind": kind, "signals_per_week": round(n / weeks, 3), "source": "received", "signals": n}
        for rule_id, kind, n in received
    ]
    return counted, rows


def _demand(
    counted: list[tuple[str, str, float, str]],
    rules_counted: list[dict[str, Any]],
    received: list[tuple[str, str, int]],
    opened: dict[str | None, int],
    mean_open: tuple[float | None, int, int],
    playbooks: list[tuple[str, dict[str, Any], float]],
    weeks: float,
    time_box_days: float,
    hours_per_engagement: float,
) -> tuple[ForecastDemand, float, float]:
    """Engagements per week, open at once and hours needed from the signals counted, the
    signals received and engagements opened over the window, and the mean days open: the
    one formula, for the whole pool and for each segment (given only its rows). Returns
    the figures, and open at once and hours needed unrounded (the pool's capacity test)."""
    by_playbook = []
    total_engagements = 0.0
    for pid, trigger, holdout in playbooks:
        received_here = sum(n for rule_id, kind, n in received if _triggers(trigger, rule_id, kind))
        escalated = opened.get(pid, 0)  # engaged and held out alike
        # Escalations per signal received (held-out included: the holdout factor takes them
        # out once); 1 until the playbook has history: every signal escalates, an upper bound.
        rate = min(1.0, escalated / received_here) if received_here else 1.0
        signals = sum(per_week for rule_id, kind, per_week, _src in counted if _triggers(trigger, rule_id, kind))
        per_week = signals * rate * (1 - holdout / 100)
        total_engagements += per_week
        by_playbook.append(
            {
                "playbook_id": pid,
                "rules": sorted({rule_id for rule_id, kind, _n, _src in counted if _triggers(trigger, rule_id, kind)}),
                "signals_per_week": round(signals, 3),
                "signals_received": received_here,
                "escalated": escalated,
                "escalation_rate": round(rate, 4),
                "escalation_rate_observed": bool(received_here),
                "holdout_percent": holdout,
                "engagements_per_week": round(per_week, 3),
            }
        )
    hand = opened.get(None, 0) / weeks
    all_signals = sum(n for _r, _k, n, _s in counted)
    total_engagements += hand
    mean_days, n_closed, n_open = mean_open
    mean_weeks = (mean_days if mean_days is not None else time_box_days) / 7
    concurrent = total_engagements * mean_weeks
    hours_needed = total_engagements * hours_per_engagement
    figures = ForecastDemand(
        rules=rules_counted,
        signals_per_week=round(all_signals, 3),
        # Of all the signals counted (not only the escalating playbooks'), so that signals per
        # week x this rate + hand-opened = engagements per week, as the Pool page says.
        escalation_rate=round((total_engagements - hand) / all_signals, 4) if all_signals else 0.0,
        engagements_per_week=round(total_engagements, 3),
        hand_opened_per_week=round(hand, 3),
        mean_open_weeks=round(mean_weeks, 3),
        mean_open_from={"closed": n_closed, "open": n_open, "time_box": mean_days is None},
        concurrent_open_expected=round(concurrent, 2),
        hours_needed_per_week=round(hours_needed, 2),
        by_playbook=by_playbook,
    )
    return figures, concurrent, hours_needed


def _by_segment(
    session: Session,
    segment_ids: list[str],
    since: datetime,
    now: datetime,
    playbooks: list[tuple[str, dict[str, Any], float]],
    weeks: float,
    time_box_days: float,
    hours_per_engagement: float,
) -> list[ForecastSegment]:
    """Per named segment, :func:`_demand` over the signals received and the engagements
    opened in the window by accounts that were members at that instant (as the outcomes
    report by segment counts engagements), read row by row and grouped here into the
    shapes the whole pool's grouped queries give. The pool's capacity is not split: CSMs
    are pooled, so a segment has demand, not CSMs of its own."""
    signals = repo.received_rows(session, since)
    engagements = repo.opened_rows(session, since, now)
    members = rules.segment_members_at(session, segment_ids, [(a, at) for a, at, *_ in signals] + [(a, at) for a, at, *_ in engagements])
    out = []
    for sid in segment_ids:
        inside = members[sid]
        sig = [r for r, m in zip(signals, inside[: len(signals)], strict=True) if m]
        eng = [r for r, m in zip(engagements, inside[len(signals) :], strict=True) if m]
        by_rule = Counter((rule_id, kind) for _a, _at, rule_id, kind in sig)
        received = [(rule_id, kind, n) for (rule_id, kind), n in sorted(by_rule.items())]
        opened = dict(Counter(pid for _a, _at, pid, _c, _s in eng))
        open_rows = [(closed, s) for _a, _at, _pid, closed, s in eng if s is not None]  # held-out rows have none
        mean_open = repo.mean_open_of(sum(s for _c, s in open_rows), len(open_rows), sum(1 for c, _s in open_rows if c))
        counted, rules_counted = _counted_received(received, weeks)
        demand, _concurrent, _hours = _demand(
            counted, rules_counted, received, opened, mean_open, playbooks, weeks, time_box_days, hours_per_engagement
        )
        out.append(ForecastSegment(segment_id=sid, signals_received=len(sig), engagements_opened=len(eng), **dict(demand)))
    return out


# A forecast is a request: replaying rules is bounded so it answers in seconds; beyond
# these, run the rules.backtest job (POST /v1/rules/backtest) and size from its counts.
REPLAY_MAX_RULES = 5
REPLAY_MAX_DAYS = 90
REPLAY_MAX_ACCOUNTS = 10_000


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
    rule_ids: list[str] | None = None,
    retention_days: int = 400,
    segment_ids: list[str] | None = None,
) -> ForecastOut:
    """The one forecast the API and the console's Pool page both show (docs/engagements.md,
    "The forecast"). Without ``rule_ids``: a handful of grouped counts over the window,
    whatever the number of accounts. With ``rule_ids``: those rules (enabled or not)
    replayed over the window by the rules service's backtest, bounded by REPLAY_MAX_*.
    With ``segment_ids``, also the demand per named segment (:func:`_by_segment`)."""
    if segment_ids:
        segment_ids = rules.segments_for_report(session, segment_ids, SEGMENTS_MAX)
        if rule_ids:
            raise Unprocessable(
                "segment= splits the signals received by the accounts' membership when each arrived; replayed rules "
                "(rule_ids) are not split by segment: ask for one or the other",
                code="validation_error",
            )
    since = now - timedelta(days=lookback_days)
    history_start = repo.history_start(session)
    if rule_ids:
        if len(rule_ids) > REPLAY_MAX_RULES:
            raise Unprocessable(
                f"{len(rule_ids)} rules to replay; at most {REPLAY_MAX_RULES} per forecast: forecast fewer, or backtest "
                "the rest with POST /v1/rules/backtest",
                code="forecast_too_large",
            )
        if lookback_days > REPLAY_MAX_DAYS:
            raise Unprocessable(
                f"lookback_days={lookback_days} with rule_ids replays {lookback_days} days; at most {REPLAY_MAX_DAYS}: "
                "shorten lookback_days, or backtest longer periods with POST /v1/rules/backtest",
                code="forecast_too_large",
            )
        n_accounts = ingest.count_accounts(session)
        if n_accounts > REPLAY_MAX_ACCOUNTS:
            raise Unprocessable(
                f"{n_accounts} accounts to replay; a forecast replays at most {REPLAY_MAX_ACCOUNTS}: backtest the rules "
                "with POST /v1/rules/backtest (a background job) and forecast without rule_ids",
                code="forecast_too_large",
            )
        clipped = False  # the replay reads stored usage history, not what outreach has received
    else:
        # Outreach has only received signals since it started: a window longer than that
        # would divide its counts by weeks in which nothing could have arrived.
        clipped = history_start is not None and history_start > since
        if clipped and history_start is not None:
            since = min(history_start, now - timedelta(days=7))
    window_days = (now - since).total_seconds() / 86400
    weeks = window_days / 7
    received = repo.received_since(session, since)
    opened = repo.opened_by_playbook(session, since)
    replays = []
    if rule_ids:
        start_day, end_day = (now - timedelta(days=lookback_days)).date(), now.date() - timedelta(days=1)
        for rid in dict.fromkeys(rule_ids):
            replays.append(replay_firings(session, rid, start_day, end_day, lookback_days=retention_days))
        weeks = ((end_day - start_day).days + 1) / 7
        window_days = weeks * 7
        since = datetime.combine(start_day, datetime.min.time(), tzinfo=now.tzinfo)
    counted: list[tuple[str, str, float, str]] = []  # (rule, kind, signals per week, source)
    rules_counted: list[dict[str, Any]] = []
    if replays:
        counted = [(r.rule_id, r.kind, len(r.firings) / weeks, "replayed") for r in replays]
        rules_counted = [
            {
                "rule_id": r.rule_id,
                "kind": r.kind,
                "signals_per_week": round(len(r.firings) / weeks, 3),
                "source": "replayed",
                "enabled": r.enabled,
                "version": r.version,
                "firings": len(r.firings),
            }
            for r in replays
        ]
    else:
        counted, rules_counted = _counted_received(received, weeks)
    playbooks = _escalating_playbooks(session)
    whole, concurrent, hours_needed = _demand(
        counted,
        rules_counted,
        received,
        opened,
        repo.mean_open_days(session, since, now),
        playbooks,
        weeks,
        time_box_days,
        hours_per_engagement,
    )
    by_segment = _by_segment(session, segment_ids, since, now, playbooks, weeks, time_box_days, hours_per_engagement) if segment_ids else []
    available = [c for c in repo.list_csms(session) if availability.available(c, now)]
    capacity = sum(c.capacity for c in available)
    proactive_share = 1 - reactive - collateral - overhead
    per_csm_hours = [WorkingHours.model_validate(c.working_hours or {}).weekly_hours() * proactive_share for c in available]
    pool_hours = sum(per_csm_hours)
    mean_hours = (pool_hours / len(per_csm_hours)) if per_csm_hours else 40 * proactive_share
    mean_capacity = (capacity / len(available)) if available else 10
    needed = max(math.ceil(hours_needed / mean_hours) if mean_hours else 0, math.ceil(concurrent / mean_capacity) if mean_capacity else 0)
    return ForecastOut(
        lookback_days=lookback_days,
        window={
            "start": since,
            "end": now,
            "days": round(window_days, 2),
            "clipped_to_history": clipped,
            "source": "replayed" if replays else "received",
        },
        accounts=ingest.count_accounts(session),
        assumptions={
            "hours_per_engagement": hours_per_engagement,
            "reactive_share": reactive,
            "collateral_share": collateral,
            "overhead_share": overhead,
            "proactive_share": round(proactive_share, 4),
            "time_box_days": time_box_days,
            "proactive_hours_per_csm": round(mean_hours, 2),
            "capacity_per_csm": round(mean_capacity, 2),
        },
        **dict(whole),
        open_now=sum(repo.open_load(session).values()) + repo.queue_stats(session)[0],
        pool_capacity=capacity,
        pool_proactive_hours_per_week=round(pool_hours, 2),
        csms_available=len(available),
        csms_needed=needed,
        queue_grows=concurrent > capacity or hours_needed > pool_hours,
        by_segment=by_segment,
        method="signals per week (received over the window, or with rule_ids those rules replayed over stored history) "
        "x each escalating playbook's escalations per signal received (held-out included; 1 until it has history) "
        "x (1 - its escalation holdout), plus hand-opened per week = engagements per week; open at once = engagements "
        "per week x mean weeks open, opened to closed, a still-open one to its due date (Little's law); CSMs needed "
        "= max(hours needed / proactive hours per CSM, open at once / capacity per CSM)",
    )
