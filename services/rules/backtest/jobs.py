"""Backtests run as background jobs (kind ``rules.backtest``): ``POST /v1/rules/backtest``
and ``touchline rules backtest`` queue one; the jobs worker replays the period inside a
read transaction, reporting progress per replayed day. The validation of the health model
against contract outcomes (kind ``health.validation``, ``POST /v1/health/validation``) is
a replay too, reporting progress per scoring day."""

from __future__ import annotations

from typing import Any

from services.rules.backtest import validation
from services.rules.backtest.service import backtest_request
from services.rules.rules.schemas import BacktestIn
from shared import jobs

KIND = "rules.backtest"


def run_backtest_job(ctx: jobs.JobContext, params: dict[str, Any], progress: jobs.Progress) -> dict[str, Any]:
    body = BacktestIn.model_validate(params)
    with ctx.read_session() as session:
        return backtest_request(session, body, ctx.settings, progress=progress, now=ctx.clock.now())


jobs.register(KIND, run_backtest_job, roles=("ops",))


def run_validation_job(ctx: jobs.JobContext, params: dict[str, Any], progress: jobs.Progress) -> dict[str, Any]:
    body = validation.ValidationIn.model_validate(params)
    today = ctx.clock.now().date()
    with ctx.read_session() as session:
        prep = validation.prepare(session, body, ctx.settings, today)
        return validation.validate(session, prep, ctx.settings, today, progress=progress)


jobs.register(validation.KIND, run_validation_job, roles=("ops",))
