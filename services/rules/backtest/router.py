"""Backtests: replay stored history over a period, as a background job. CS Ops (role
ops) only."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from services.rules.backtest import validation
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


VALIDATION_DOC = (
    "Queues the validation of the health model against the recorded contract outcomes (docs/health.md, "
    '"Validation") and answers 202 with the job (and `Location: /v1/jobs/{id}`). Each contract outcome effective '
    "from `start` to `end` is scored as the account stood `horizon_days` before it (a replay, as backtests do); "
    "the job's `result` has the churn rate per label and per 20-point band with Wilson 95% intervals, the score's "
    "ROC AUC for churn, and each component's AUC without it. With `model` (a candidate, not saved) it is "
    "validated instead of the current version and compared with it (`compared_with`, `diff`). A bad request "
    "or model answers 422 with the pointer (`/model/...` for the model); without any model, 404."
)


@router.post(
    "/v1/health/validation",
    response_model=JobOut,
    status_code=202,
    tags=["health"],
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable, TooManyRequests)},
    summary="Validate the health model (or a candidate) against contract outcomes (a background job)",
    description=VALIDATION_DOC,
)
def validate_health(
    body: validation.ValidationIn,
    response: Response,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> JobOut:
    validation.prepare(session, body, settings, clock.now().date())
    job = jobs.submit(session, validation.KIND, body.model_dump(mode="json"), created_by=p.actor, now=clock.now(), settings=settings)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)
