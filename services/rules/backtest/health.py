"""Scores of past days: every account scored as of the end of each day of a range over
the stored history, as the daily scoring (:mod:`services.rules.evaluation.health`) would
have, measured as a backtest measures (docs/health.md, "Scores of past days")."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.rules.backtest.series import DailySeries
from services.rules.evaluation.engine import Measurements
from services.rules.evaluation.health import score_accounts
from services.rules.health import repository as health_repo
from services.rules.health import service as health
from services.rules.language.ast import Metric
from services.rules.scores import repository as scores
from shared.db import read_transaction, transaction

log = logging.getLogger(__name__)


@dataclass
class HealthHistoryReport:
    scored_days: list[date]  # the days scored now (the others had their scoring already)
    scored: int = 0  # rows stored
    model_version: int | None = None
    seconds: float = 0.0


def score_history(
    session_factory: sessionmaker[Session], now: datetime, start: date, end: date, *, lookback_days: int = 400
) -> HealthHistoryReport:
    """Score every account as of the end of each UTC day from ``start`` to ``end`` that has
    no scoring yet, over the stored history, as the daily scoring would have (for a world
    loaded at once, such as the demo's). The replay measures as a backtest does
    (docs/rules.md, "Backtest"): each metric's input read once for the whole range, each
    day answered from memory, "days since" with day resolution, today's traits and roles.
    Each day is claimed in ``health_runs`` like a daily scoring, so neither the daily job
    nor a second replay scores it again; the changes run from day to day. Nothing is
    scored without a model. Measured in a read transaction, stored in one short one."""
    started = time.perf_counter()
    report = HealthHistoryReport(scored_days=[])
    with read_transaction(session_factory) as session:
        cur = health.current(session)
        if cur is None:
            return report
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        days = [d for d in days if health_repo.get_run(session, d) is None]
        if not days:
            return report
        span = max(
            [(m.window or 0) + (m.baseline or 0) for m in (c.measure for c in cur.model.components) if isinstance(m, Metric)], default=0
        )
        series = DailySeries(session, days[0], days[-1], span + 1)
        replayed: dict[date, dict[str, float]] = {}
        by_day: dict[date, list[dict[str, Any]]] = {}
        for day in days:
            as_of = datetime.combine(day + timedelta(days=1), dtime.min, tzinfo=UTC) - timedelta(microseconds=1)
            meas = Measurements(session, as_of, None, as_of=True, lookback_days=lookback_days, series=series)
            rows = score_accounts(session, cur, as_of, meas=meas, replayed=replayed)
            by_day[day] = rows
            replayed[day] = {r["account_id"]: r["score"] for r in rows if r["score"] is not None}
    with transaction(session_factory) as session:
        for day, rows in by_day.items():
            if not health_repo.claim_run(session, day, now, cur.version, finished=True):
                continue  # the daily scoring took the day meanwhile
            scores.save(session, rows)
            health_repo.record_run_result(session, day, {"scored": len(rows), "pruned": 0, "replayed": True})
            report.scored_days.append(day)
            report.scored += len(rows)
    report.model_version = cur.version
    report.seconds = round(time.perf_counter() - started, 3)
    log.info(
        "health: replayed %d days (%s to %s) with model version %d, %d scores in %.1fs",
        len(report.scored_days),
        start.isoformat(),
        end.isoformat(),
        cur.version,
        report.scored,
        report.seconds,
    )
    return report
