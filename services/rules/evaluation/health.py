"""Scoring customer health (docs/health.md): every account, or one on demand.

Scoring is set-based: every component's operand is measured for the whole population
through :class:`~services.rules.evaluation.engine.Measurements` (one query per distinct
operand, shared by components on the same operand, as the tick does), then each
account's points and weighted mean are arithmetic in memory. One account on demand is
the same code over a population of one. It lives beside the engine rather than in
``services/rules/health`` (the model) because the rules worker runs the daily scoring,
and rules' packages import one way: health <- evaluation.

The daily scoring: every account once per UTC day, run by the rules worker at its first
poll of the day behind the scheduled tick's freshness watermark (never on half-loaded
data: docs/rules.md, "Freshness"), and claimed per day in ``health_runs`` so that two
workers, or a restarted one, score a day once. The scores are computed in a read
transaction (never holding SQLite's write lock); the claim, the scores and the
retention's deletions then commit together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.rules.evaluation.engine import Measurements
from services.rules.health import repository as health_repo
from services.rules.health import service as health
from services.rules.health.service import CurrentModel
from services.rules.language.ast import Metric
from services.rules.scores import repository as scores
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
    ran: bool = False  # scored the day now
    done: bool = False  # the day is scored (now, or before)
    deferred: bool = False
    scored: int = 0
    pruned: int = 0
    model_version: int | None = None
    seconds: float = 0.0


def run_health_day(
    session_factory: sessionmaker[Session], settings: Settings, now: datetime, gate: Callable[[], bool] | None = None
) -> HealthDayReport:
    """Score every account for ``now``'s UTC day unless that day is scored already (or
    there is no model). ``gate`` (the worker's freshness watermark) is asked only when
    there is work; if it answers False nothing is claimed and the report says ``deferred``."""
    today = now.date()
    report = HealthDayReport(day=today)
    with transaction(session_factory) as session:
        if health_repo.current(session) is None:
            return report
        if health_repo.get_run(session, today) is not None:
            report.done = True
            return report
    if gate is not None and not gate():
        report.deferred = True
        return report
    started = time.perf_counter()
    # Measure and score in a read transaction (on SQLite it never holds the write lock,
    # so ingest keeps writing meanwhile), then claim the day and store in a short one.
    with read_transaction(session_factory) as session:
        cur = health.current(session)
        if cur is None:
            return report
        rows = score_accounts(session, cur, now)
    with transaction(session_factory) as session:
        if not health_repo.claim_run(session, today, now, cur.version):
            report.done = True  # another worker scored the day meanwhile
            return report
        scores.save(session, rows)
        report.pruned = scores.prune(session, today - timedelta(days=settings.health_score_retention_days))
        report.ran = report.done = True
        report.scored, report.model_version = len(rows), cur.version
        report.seconds = round(time.perf_counter() - started, 3)
        health_repo.record_run_result(session, today, {"scored": report.scored, "pruned": report.pruned, "seconds": report.seconds})
    log.info(
        "health: scored %d accounts for %s with model version %d in %.1fs (%d old scores deleted)",
        report.scored,
        today.isoformat(),
        cur.version,
        report.seconds,
        report.pruned,
    )
    return report
