"""Backtests: replay stored history over a period, as a background job. CS Ops (role
ops) only."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from services.rules.backtest.jobs import KIND as BACKTEST_KIND
from services.rules.backtest.service import prepare
from services.rules.rules.schemas import BacktestIn
from shared import jobs
from shared.api import ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, TooManyRequests, Unprocessable, responses
from shared.jobs.schemas import JobOut
from shared.settings import Settings

router = APIRouter(tags=["rules"])
AUTHOR = ("ops",)


BACKTEST_DOC = (
    "Queues a backtest job and answers 202 with it (and `Location: /v1/jobs/{id}`). Poll "
    "`GET /v1/jobs/{id}` for its progress (days replayed) and, once `state` is `succeeded`, its `result`: "
    "firings per day and ISO week, distinct accounts, samples with evidence, and with `compare_with_current` "
    "the difference against the saved version. Cancel with `POST /v1/jobs/{id}/cancel`. The request is "
    "checked before it is queued: a bad period or rule answers 422, an unknown rule 404."
)


@router.post(
    "/v1/rules/backtest",
    response_model=JobOut,
    status_code=202,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable, TooManyRequests)},
    summary="Replay stored history over a period (a background job)",
    description=BACKTEST_DOC,
)
def backtest(
    body: BacktestIn,
    response: Response,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> JobOut:
    prepare(session, body, settings, clock.now())
    job = jobs.submit(session, BACKTEST_KIND, body.model_dump(mode="json"), created_by=p.actor, now=clock.now(), settings=settings)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)
