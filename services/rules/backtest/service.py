"""Backtest: replay stored history over a period, one simulated day at a time, and
answer what a rule would have done: firings per day and per ISO week, the distinct
accounts, sample evidence, and (for an edited rule) the difference against the
current version.

The clock steps to the end of each UTC day. Scheduled rules are evaluated once per
day, set-based over the audience; event-triggered rules once per day for the accounts
that had a triggering event that day (and, when the condition reads the event or its
user, for each such stored event). "days since" is read from the daily rollups as of
that day, so it has day resolution. Audience filters use today's account traits (the
store keeps no trait history). Cooldowns are simulated in memory. Metrics the rollups
cannot answer (property filters and aggregates, ``days_since`` of a role) are read
from the raw events, once per period like the rest, exact within their retention
(:func:`prepare` refuses a period that reaches past it); role metrics use today's roles.

Metric inputs are read once for the whole period
(:class:`~services.rules.backtest.series.DailySeries`) and each day is answered from
memory; ``per_day_queries=True`` asks the database day by day instead (same answers).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from statistics import median
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.rules.backtest.series import DailySeries
from services.rules.evaluation.engine import EventSubject, Measurements
from services.rules.language import RuleDefinition, leaves
from services.rules.language.ast import Metric
from services.rules.language.evaluate import evidence, evidence_of
from services.rules.language.evaluate import select as select_set
from services.rules.rules import service as rules_service
from services.rules.rules.schemas import BacktestIn
from shared.errors import Unprocessable
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    firings: list[tuple[date, str, dict[str, Any] | None]] = field(default_factory=list)  # (day, account, evidence or None)
    evaluated_days: int = 0

    def accounts(self) -> set[str]:
        return {a for _, a, _ in self.firings}


CHUNK_ACCOUNTS = 10_000  # accounts replayed together: memory holds one chunk's series, however many accounts there are


def run_backtest(
    session: Session,
    d: RuleDefinition,
    start: date,
    end: date,
    *,
    progress: Callable[[int, int], None] | None = None,
    lookback_days: int = 400,
    per_day_queries: bool = False,
    chunk_accounts: int = CHUNK_ACCOUNTS,
    evidence: int | None = None,
) -> BacktestResult:
    """Replay ``d`` over [start, end]. The accounts are replayed a chunk of
    ``chunk_accounts`` at a time, in id order (:func:`ingest.account_ids_after`), each
    chunk with its own daily series: a rule's firings and cooldowns are per account, so
    the chunks' firings, merged by day (and, for event-triggered rules, by the event's
    time), are the whole population's. ``progress(done, total)`` counts steps, one per
    replayed day of a chunk (``total``: the days times the chunks). ``evidence``: how many
    firings, the first, keep their evidence (None: all; the others have None), so that what
    a long replay holds is not an evidence per firing (30,000 of them for one starter rule
    over 10,000 accounts). ``per_day_queries=True`` asks the database day by day for every
    account at once."""
    total = (end - start).days + 1
    result = BacktestResult(evaluated_days=total)
    chunks: list[list[str] | None] = [None] if per_day_queries else list(_account_chunks(session, chunk_accounts))
    span = max([(m.window or 0) + (m.baseline or 0) for m in leaves(d.condition) if isinstance(m, Metric)], default=0)
    fired: list[tuple[tuple[date, datetime], str, dict[str, Any] | None]] = []
    for k, accounts in enumerate(chunks):
        series = None if accounts is None else DailySeries(session, start, end, span + 1, accounts)

        def step(done: int, _total: int, k: int = k) -> None:
            if progress:
                progress(k * total + done, total * len(chunks))

        fired += _replay(session, d, start, end, accounts, series, lookback_days, step, evidence)
    fired.sort(key=lambda f: f[0])  # stable: within a day, a chunk's order, and the chunks are in id order
    # Each chunk kept the evidence of its first firings; the first of all are among them.
    result.firings = [(key[0], a, ev if evidence is None or i < evidence else None) for i, (key, a, ev) in enumerate(fired)]
    return result


def _account_chunks(session: Session, size: int) -> Iterator[list[str]]:
    """Every account in id order, ``size`` at a time (at least one chunk, empty when there
    is no account). The ids are read before the replay: 100,000 of them take a few MB;
    the series, the bulk, is one chunk's at a time."""
    chunk = ingest.account_ids_after(session, None, size)
    yield chunk
    while len(chunk) == size:
        chunk = ingest.account_ids_after(session, chunk[-1], size)
        if chunk:
            yield chunk


def _replay(
    session: Session,
    d: RuleDefinition,
    start: date,
    end: date,
    accounts: list[str] | None,
    series: DailySeries | None,
    lookback_days: int,
    progress: Callable[[int, int], None],
    evidence_kept: int | None,
) -> list[tuple[tuple[date, datetime], str, dict[str, Any] | None]]:
    """:func:`run_backtest` for ``accounts`` (None: every account): ((day, the firing's
    order in the day), account, evidence) in the order they fire; the evidence of the
    first ``evidence_kept`` only (None: of all)."""
    out: list[tuple[tuple[date, datetime], str, dict[str, Any] | None]] = []
    cooldown = timedelta(seconds=d.cooldown_seconds)
    until: dict[str, datetime] = {}
    needs_event = any(leaf.needs_event for leaf in leaves(d.condition))
    total = (end - start).days + 1
    for i in range(total):
        day = start + timedelta(days=i)
        now = datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=UTC) - timedelta(microseconds=1)
        meas = Measurements(session, now, accounts, as_of=True, lookback_days=lookback_days, series=series)
        audience = meas.audience(d.audience)
        fired: list[tuple[datetime, str, dict[str, Any] | None]] = []  # a scheduled rule's evidence: built below
        if d.trigger.scheduled or not needs_event:
            candidates = (
                audience
                if d.trigger.scheduled
                else (ingest.accounts_with_events(session, list(d.trigger.events), day, accounts) & audience)
            )
            matched = select_set(d.condition, candidates, meas.matching)
            # In cooldown: it would be dropped below, so skip sorting it.
            fired = [(now, a, None) for a in sorted(a for a in matched if a not in until or now >= until[a])]
        else:
            day_start = datetime.combine(day, dtime.min, tzinfo=UTC)
            stored = ingest.events_between(session, list(d.trigger.events), day_start, day_start + timedelta(days=1), accounts)
            done: set[str] = set()
            for e in stored:
                if e.account_id in done or e.account_id not in audience:
                    continue
                subject = EventSubject(e.event_id, e.account_id, e.user_id, e.name, e.timestamp, e.properties or {})
                ok, tree = meas.explain(d.condition, e.account_id, subject)
                if ok:
                    done.add(e.account_id)
                    fired.append((e.timestamp, e.account_id, evidence(tree)))
        for at, a, ev in fired:
            if a in until and now < until[a]:
                continue
            until[a] = now + cooldown
            if evidence_kept is not None and len(out) >= evidence_kept:
                ev = None
            elif ev is None:
                ev = evidence_of(d.condition, meas.value_getter(a))[1]  # held: the set algebra chose it
            out.append(((day, at), a, ev))
        progress(i + 1, total)
    return out


def summarise(result: BacktestResult, start: date, end: date, samples: int) -> dict[str, Any]:
    per_day = Counter(day for day, _, _ in result.firings)
    per_week = Counter(day - timedelta(days=day.weekday()) for day, _, _ in result.firings)
    days = [
        {"day": (start + timedelta(days=i)).isoformat(), "firings": per_day.get(start + timedelta(days=i), 0)}
        for i in range((end - start).days + 1)
    ]
    first_monday = start - timedelta(days=start.weekday())
    weeks = []
    w = first_monday
    while w <= end:
        weeks.append({"week_start": w.isoformat(), "firings": per_week.get(w, 0)})
        w += timedelta(days=7)
    accounts = sorted(result.accounts())
    return {
        "total_firings": len(result.firings),
        "distinct_accounts": len(accounts),
        "accounts": accounts[:1000],
        "per_day": days,
        "per_week": weeks,
        "samples": [{"day": d.isoformat(), "account_id": a, "evidence": ev} for d, a, ev in result.firings[:samples]],
    }


def _first_days(result: BacktestResult) -> dict[str, date]:
    first: dict[str, date] = {}
    for day, account, _ev in result.firings:
        if account not in first or day < first[account]:
            first[account] = day
    return first


def compare_timing(edited: BacktestResult, current: BacktestResult, start: date, end: date, listed: int = 1000) -> dict[str, Any]:
    """What an edit changes beyond who fires: both versions' firings per day side by
    side, and for the accounts that fire under both, how much earlier (or later) the
    edit fires for each the first time. An edit from "14 days" to "10 days" fires on
    the same accounts about four days earlier: no newly firing account, but a shift."""
    by_day_edited = Counter(day for day, _, _ in edited.firings)
    by_day_current = Counter(day for day, _, _ in current.firings)
    per_day = [
        {"day": d.isoformat(), "edited": by_day_edited.get(d, 0), "current": by_day_current.get(d, 0)}
        for d in (start + timedelta(days=i) for i in range((end - start).days + 1))
    ]
    first_edited, first_current = _first_days(edited), _first_days(current)
    both = sorted(first_edited.keys() & first_current.keys(), key=lambda a: ((first_edited[a] - first_current[a]).days, a))
    moved = [(first_current[a] - first_edited[a]).days for a in both]
    shifts = [
        {
            "account_id": a,
            "current_first": first_current[a].isoformat(),
            "edited_first": first_edited[a].isoformat(),
            "days_earlier": days,
        }
        for a, days in zip(both, moved, strict=True)
    ]
    return {
        "per_day": per_day,
        "first_firing": {
            "earlier": sum(1 for m in moved if m > 0),
            "later": sum(1 for m in moved if m < 0),
            "same_day": sum(1 for m in moved if m == 0),
            "median_days_earlier": float(median(moved)) if moved else None,
            "accounts": shifts[:listed],
        },
    }


@dataclass
class PreparedBacktest:
    candidate: RuleDefinition
    current: RuleDefinition | None  # with compare_with_current: the saved version
    current_version: int | None


def reads_raw_events(m: Metric) -> bool:
    """Metrics the daily rollups cannot answer: a backtest reads them from the raw events
    (count with ``where``, aggregates, ``days_since`` of a role), day by day."""
    return (m.metric == "count" and bool(m.where)) or m.metric == "aggregate" or (m.metric == "days_since" and m.role is not None)


def _raw_history_problems(d: RuleDefinition, start: date, now: datetime, retention_days: int, which: str) -> list[dict[str, str]]:
    """A replay is exact for the metrics that read raw events only while every window it
    asks lies within the retained raw events (ingest prunes them after
    ``TOUCHLINE_RAW_EVENT_RETENTION_DAYS``; the rollups are kept). Refuse the rest."""
    oldest = now.date() - timedelta(days=retention_days - 1)
    out = []
    for m in leaves(d.condition):
        if not isinstance(m, Metric) or not reads_raw_events(m):
            continue
        first = start - timedelta(days=(m.window or retention_days) - 1)
        if first < oldest:
            out.append(
                {
                    "pointer": "/start",
                    "message": f"{which}: {m.label} reads the raw events (the daily rollups keep no properties or roles), and the "
                    f"first replayed day's window starts on {first.isoformat()}, before the oldest retained raw event day "
                    f"({oldest.isoformat()}, TOUCHLINE_RAW_EVENT_RETENTION_DAYS={retention_days}): the replay could not be exact. "
                    f"Start the period on {(oldest + timedelta(days=(m.window or retention_days) - 1)).isoformat()} or later",
                }
            )
    return out


def prepare(session: Session, body: BacktestIn, settings: Settings, now: datetime | None = None) -> PreparedBacktest:
    """Check a backtest request and parse its rules (cheap): the API does this before it
    queues the job, so a bad request is a 422 or 404 at once; the job does it again.
    With ``now`` (the clock), a rule whose raw-event metrics reach past the retained raw
    events is refused (422)."""
    if body.rule_id is None and body.rule is None:
        raise Unprocessable([{"pointer": "/rule_id", "message": 'give "rule_id" (a saved rule) or "rule" (a definition)'}])
    if body.end < body.start:
        raise Unprocessable([{"pointer": "/end", "message": f"end {body.end} is before start {body.start}; swap them"}])
    span = (body.end - body.start).days + 1
    if span > settings.raw_event_retention_days:
        raise Unprocessable(
            [
                {
                    "pointer": "/start",
                    "message": f"{span} days is longer than the retained history "
                    f"({settings.raw_event_retention_days} days); shorten the period",
                }
            ]
        )
    if body.rule is not None:
        candidate, _ = rules_service.parse(body.rule, settings.raw_event_retention_days, rule_id=body.rule_id)
    else:
        assert body.rule_id is not None  # one of the two, checked above
        rule = rules_service.get(session, body.rule_id)
        candidate, _ = rules_service.parse(rules_service.current_definition(session, rule), 100_000)
    current = version = None
    if body.compare_with_current:
        rule = rules_service.get(session, candidate.id)
        current, _ = rules_service.parse(rules_service.current_definition(session, rule), 100_000)
        version = rule.current_version
    if now is not None:
        problems = _raw_history_problems(candidate, body.start, now, settings.raw_event_retention_days, "the rule")
        if current is not None:
            problems += _raw_history_problems(current, body.start, now, settings.raw_event_retention_days, "the current version")
        if problems:
            raise Unprocessable(problems)
    return PreparedBacktest(candidate, current, version)


def backtest_request(
    session: Session,
    body: BacktestIn,
    settings: Settings,
    progress: Callable[[int, int, str], None] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Run a backtest request; ``progress(done, total, message)`` is called after every
    replayed day (of both rules, with compare_with_current)."""
    prep = prepare(session, body, settings, now)
    candidate, current = prep.candidate, prep.current
    started = time.perf_counter()
    days = (body.end - body.start).days + 1
    total = days * (2 if current is not None else 1)

    def step(offset: int, label: str) -> Callable[[int, int], None]:
        def on_step(done: int, steps: int) -> None:
            # A step is a day of a chunk of accounts (run_backtest): progress counts days' worth of steps.
            day, chunk, chunks = (done - 1) % days + 1, (done - 1) // days + 1, steps // days
            message = f"{label}: day {day}/{days}" + (f", accounts {chunk}/{chunks}" if chunks > 1 else "")
            if day % 10 == 0 or day == days:
                log.info("backtest %s: %s (%.1fs)", candidate.id, message, time.perf_counter() - started)
            if progress:
                progress(offset + done * days // steps, total, message)

        return on_step

    res = run_backtest(
        session,
        candidate,
        body.start,
        body.end,
        progress=step(0, "rule"),
        lookback_days=settings.raw_event_retention_days,
        evidence=body.samples,
    )
    out: dict[str, Any] = {
        "rule_id": candidate.id,
        "start": body.start.isoformat(),
        "end": body.end.isoformat(),
        "rule": candidate.to_dict(),
        **summarise(res, body.start, body.end, body.samples),
    }
    if current is not None:
        cur = run_backtest(
            session,
            current,
            body.start,
            body.end,
            progress=step(days, "current version"),
            lookback_days=settings.raw_event_retention_days,
            evidence=0,
        )
        new_accounts, old_accounts = res.accounts(), cur.accounts()
        out["compared_with"] = {"version": prep.current_version, "total_firings": len(cur.firings), "distinct_accounts": len(old_accounts)}
        out["diff"] = {
            "newly_firing": sorted(new_accounts - old_accounts),
            "stop_firing": sorted(old_accounts - new_accounts),
            "both": len(new_accounts & old_accounts),
            **compare_timing(res, cur, body.start, body.end),
        }
    out["elapsed_seconds"] = round(time.perf_counter() - started, 3)
    return out
