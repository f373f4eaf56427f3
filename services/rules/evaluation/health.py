"""Scoring customer health (docs/health.md): every account, or one on demand.

Scoring is set-based: every component's operand is measured for the whole population
through :class:`~services.rules.evaluation.engine.Measurements` (one query per distinct
operand, shared by components on the same operand, as the tick does), then each
account's points and weighted mean are arithmetic in memory. One account on demand is
the same code over a population of one. It lives beside the engine rather than in
``services/rules/health`` (the model) because the rules worker runs the daily scoring,
and rules' packages import one way: health <- evaluation.

The daily scoring: every account once per UTC day, run by the rules worker from its first
poll of the day behind the scheduled tick's freshness watermark (never on half-loaded
data: docs/rules.md, "Freshness"), one chunk of accounts per poll in id order, so an
event-triggered rule's event waits for one chunk at most, never for the whole day's
scoring. The day is claimed in ``health_runs``, whose cursor (the last account stored)
moves in the transaction that stores the chunk, only from where the chunk started: two
workers store each chunk once, and a restarted worker resumes after the last stored one.
Each chunk is measured in a read transaction (never holding SQLite's write lock) and
stored in a short one; the last also deletes the scores past retention."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.ingest import interface as ingest
from services.rules.evaluation.engine import Measurements
from services.rules.health import repository as health_repo
from services.rules.health import service as health
from services.rules.health.service import CurrentModel
from services.rules.language.ast import Metric
from services.rules.scores import repository as scores
from shared import faults
from shared.db import read_transaction, transaction
from shared.errors import NotFound
from shared.settings import Settings

log = logging.getLogger(__name__)
# The changes every score carries (days back), each against the latest score on or
# before that day and no older than twice as far back.
CHANGES = (7, 30)


def score_accounts(
    session: Session,
    cur: CurrentModel,
    now: datetime,
    accounts: list[str] | None = None,
    *,
    meas: Measurements | None = None,
    replayed: dict[date, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Today's score of every account (``accounts=None``) or of ``accounts``: the rows
    :func:`services.rules.scores.repository.save` stores, not yet stored. A replay
    (:func:`services.rules.backtest.health.score_history`) passes its as-of measurements and the scores it computed for
    the days before, not stored yet, which the changes read before the stored ones."""
    meas = meas or Measurements(session, now, accounts)
    model = cur.model
    rows = meas.rows(with_traits=any(c.measure.label.startswith("account.traits.") for c in model.components))
    measured: dict[str, tuple[dict[str, Any], Any]] = {}
    for c in model.components:
        m = c.measure
        measured[c.id] = meas.metric(m) if isinstance(m, Metric) else (meas.account_field(m), None)
    today = now.date()
    before = {days: _scores_before(session, today, days, accounts, replayed or {}) for days in CHANGES}
    out = []
    for a in sorted(rows):
        r = rows[a]
        result = model.score({cid: vals.get(a, default) for cid, (vals, default) in measured.items()}, r.segment, r.lifecycle_stage)
        s = result["score"]
        change = {days: (round(s - before[days][a], 1) if s is not None and a in before[days] else None) for days in CHANGES}
        out.append(
            {
                "account_id": a,
                "day": today,
                "score": s,
                "label": result["label"],
                "model_version": cur.version,
                "components": result["components"],
                "change_7d": change[7],
                "change_30d": change[30],
                "scored_at": now,
            }
        )
    return out


def _scores_before(
    session: Session, today: date, days: int, accounts: list[str] | None, replayed: dict[date, dict[str, float]]
) -> dict[str, float]:
    """Each account's score ``days`` before ``today`` (the latest on or before that day, no
    older than twice as far back), from ``replayed`` (a replay's days not stored yet) where
    it has one in that range, else from the stored scores."""
    day, earliest = scores.past_days(today, days)
    out = scores.scores_on_or_before(session, day, earliest, accounts)
    for d in sorted(d for d in replayed if earliest <= d <= day):
        out.update(replayed[d])
    return out


def score_account(session: Session, account_id: str, now: datetime) -> dict[str, Any]:
    """Score one account now and store it as today's row (on demand)."""
    cur = health.require_current(session)
    rows = score_accounts(session, cur, now, [account_id])
    if not rows:
        raise NotFound(f"no account {account_id!r}")
    scores.save(session, rows)
    session.flush()
    return rows[0]


@dataclass
class HealthDayReport:
    day: date
    ran: bool = False  # stored scores now (a chunk, or the whole day)
    done: bool = False  # the day is finished (now, or before)
    deferred: bool = False
    scored: int = 0  # scores stored now
    pruned: int = 0
    model_version: int | None = None
    seconds: float = 0.0
    cursor: str | None = None  # the last account the day's scoring has stored


@dataclass
class HealthChunk:
    """A chunk of the day's scoring, measured and not stored yet: the accounts after
    ``start`` (the run's cursor when it was read; None: nothing stored yet), ``rows``
    their scores."""

    day: date
    now: datetime
    version: int
    claim: bool  # the day has no run yet: claim it when storing
    start: str | None
    accounts: list[str]
    rows: list[dict[str, Any]]
    last: bool  # no account after these: the day finishes with this chunk
    result: dict[str, Any]  # the run's result so far
    seconds: float


def measure_chunk(session_factory: sessionmaker[Session], now: datetime, limit: int) -> HealthChunk | None:
    """Score the next ``limit`` accounts of ``now``'s day after its run's cursor, in a read
    transaction (on SQLite it never holds the write lock, so ingest keeps writing
    meanwhile), with the model version the day's run started with. None: there is no model."""
    started = time.perf_counter()
    today = now.date()
    with read_transaction(session_factory) as session:
        run = health_repo.get_run(session, today)
        cur = health.at_version(session, run.model_version) if run is not None else health.current(session)
        if cur is None:
            return None
        start = run.cursor if run is not None else None
        accounts = ingest.account_ids_after(session, start, limit)
        rows = score_accounts(session, cur, now, accounts) if accounts else []
        result = dict(run.result) if run is not None else {}
    return HealthChunk(
        today, now, cur.version, run is None, start, accounts, rows, len(accounts) < limit, result, time.perf_counter() - started
    )


def store_chunk(session_factory: sessionmaker[Session], settings: Settings, chunk: HealthChunk) -> bool:
    """Store ``chunk`` in one short transaction with the move of the run's cursor past it
    (claiming the day first if it had no run), only if the cursor is still where the chunk
    started: a chunk another worker stored meanwhile is not stored again. The last chunk
    finishes the day and deletes the scores past retention. False: nothing stored."""
    stored = time.perf_counter()
    with transaction(session_factory) as session:
        if chunk.claim and not health_repo.claim_run(session, chunk.day, chunk.now, chunk.version):
            return False  # another worker claimed the day meanwhile: its cursor decides
        result = {
            "scored": chunk.result.get("scored", 0) + len(chunk.rows),
            "pruned": 0,
            "chunks": chunk.result.get("chunks", 0) + 1,
            "seconds": round(chunk.result.get("seconds", 0.0) + chunk.seconds + (time.perf_counter() - stored), 3),
        }
        end = chunk.accounts[-1] if chunk.accounts else chunk.start
        if not health_repo.advance_run(session, chunk.day, chunk.start, end, result, chunk.now if chunk.last else None):
            return False  # nothing written
        scores.save(session, chunk.rows)
        if chunk.last:
            result["pruned"] = scores.prune(session, chunk.day - timedelta(days=settings.health_score_retention_days))
            health_repo.record_run_result(session, chunk.day, result)
        faults.point("health.before_chunk_commit")
    chunk.result = result
    return True


def score_health_chunk(
    session_factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    gate: Callable[[], bool] | None = None,
    limit: int | None = None,
) -> HealthDayReport:
    """One step of the daily scoring of ``now``'s UTC day (the rules worker takes one per
    poll, so an event waits for one chunk at most): the next ``limit`` accounts
    (``TOUCHLINE_HEALTH_CHUNK_ACCOUNTS``) after the day's cursor, stored. Nothing when the
    day is finished (``done``) or there is no model. ``gate`` (the worker's freshness
    watermark) is asked before every chunk when there is work; if it answers False nothing
    is claimed or stored and the report says ``deferred``."""
    today = now.date()
    report = HealthDayReport(day=today)
    with read_transaction(session_factory) as session:
        if health_repo.current(session) is None:
            return report
        run = health_repo.get_run(session, today)
        if run is not None and run.finished_at is not None:
            report.done, report.cursor = True, run.cursor
            return report
    if gate is not None and not gate():
        report.deferred = True
        return report
    chunk = measure_chunk(session_factory, now, limit or settings.health_chunk_accounts)
    if chunk is None or not store_chunk(session_factory, settings, chunk):
        return report
    report.ran, report.done, report.scored, report.model_version = True, chunk.last, len(chunk.rows), chunk.version
    report.cursor = chunk.accounts[-1] if chunk.accounts else chunk.start
    report.pruned, report.seconds = chunk.result["pruned"], chunk.result["seconds"]
    if chunk.last:
        log.info(
            "health: scored %d accounts for %s with model version %d in %d chunks, %.1fs (%d old scores deleted)",
            chunk.result["scored"],
            today.isoformat(),
            chunk.version,
            chunk.result["chunks"],
            chunk.result["seconds"],
            report.pruned,
        )
    return report


def run_health_day(
    session_factory: sessionmaker[Session],
    settings: Settings,
    now: datetime,
    gate: Callable[[], bool] | None = None,
    limit: int | None = None,
) -> HealthDayReport:
    """Score every account of ``now``'s UTC day not scored yet, chunk after chunk, to the
    end of the day's run (``touchline health score``, the demo; the rules worker takes one
    chunk per poll instead: :func:`score_health_chunk`). Resumes a run left unfinished;
    nothing when the day is finished or there is no model. The report adds up the chunks
    stored now (``seconds``: the run's scoring time, all its chunks)."""
    total = HealthDayReport(day=now.date())
    while True:
        step = score_health_chunk(session_factory, settings, now, gate, limit)
        total.done, total.deferred, total.cursor = step.done, step.deferred, step.cursor
        if not step.ran:
            return total
        total.ran = True
        total.scored += step.scored
        total.pruned += step.pruned
        total.model_version, total.seconds = step.model_version, step.seconds
        if step.done:
            return total
