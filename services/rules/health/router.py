"""The health API: the model (validate, read, change: a new version, versions, audit;
role ops) and the scores (an account's health with its explanation and history, the
accounts by health; roles ops and csm, a CSM key seeing only the accounts of its own
engagements, open or closed: docs/health.md). Scoring an account now is in
services/rules/evaluation/router.py, beside the engine it measures with."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Body, Path, Query, Request
from sqlalchemy.orm import Session

from services.rules.health import repository as repo
from services.rules.health import service
from services.rules.health.schemas import (
    MODEL_BODY,
    AccountHealthOut,
    HealthAuditPage,
    HealthModelOut,
    HealthModelPage,
    HealthModelSaved,
    HealthPage,
    HealthPoint,
    HealthScoreOut,
    HealthValidateOut,
)
from services.rules.models import HealthModelVersion
from services.rules.scores import repository as scores
from shared.api import ClockDep, SessionDep, SettingsDep, require_visible_account, visible_account_filter
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.limits import DB_INT_MAX
from shared.pagination import (
    MAX_CURSOR_CHARS,
    NUMBER_CURSOR_PATTERN,
    decode_cursor,
    decode_number_cursor,
    next_cursor,
    next_key,
)
from shared.settings import Settings

router = APIRouter(tags=["health"])
AUTHOR = ("ops",)
READERS = ("ops", "csm")
NumberCursor = Query(None, pattern=NUMBER_CURSOR_PATTERN, description="next_cursor from the previous page")
NumberLimit = Query(100, ge=1, le=1000)


@router.post(
    "/v1/health/model/validate",
    response_model=HealthValidateOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Check a health model without saving it",
    openapi_extra=MODEL_BODY,
)
def validate_model(body: Any = Body(...), settings: Settings = SettingsDep, _p: Principal = require(*AUTHOR)) -> HealthValidateOut:
    return HealthValidateOut(model=service.parse(body, settings.raw_event_retention_days).to_dict())


@router.get("/v1/health/model", response_model=HealthModelOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_model(session: Session = SessionDep, _p: Principal = require(*AUTHOR)) -> HealthModelVersion:
    return service.require_current(session).row


@router.put(
    "/v1/health/model",
    response_model=HealthModelSaved,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Define or change the health model: a new version if the definition differs",
    openapi_extra=MODEL_BODY,
)
def put_model(
    body: Any = Body(...),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> HealthModelSaved:
    model = service.parse(body, settings.raw_event_retention_days)
    row, changed = service.save(session, model, p.actor, clock.now())
    return HealthModelSaved(**HealthModelOut.model_validate(row).model_dump(), changed=changed)


@router.get(
    "/v1/health/model/versions",
    response_model=HealthModelPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Every version of the health model, oldest first, in pages",
)
def list_versions(
    cursor: str | None = NumberCursor, limit: int = NumberLimit, session: Session = SessionDep, _p: Principal = require(*AUTHOR)
) -> HealthModelPage:
    items = repo.list_versions(session, after=decode_number_cursor(cursor), limit=limit)
    return HealthModelPage(items=items, next_cursor=next_key(items, limit, lambda m: str(m.version)))


@router.get("/v1/health/model/versions/{version}", response_model=HealthModelOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_version(
    version: int = Path(ge=1, le=DB_INT_MAX), session: Session = SessionDep, _p: Principal = require(*AUTHOR)
) -> HealthModelVersion:
    row = repo.get_version(session, version)
    if row is None:
        raise NotFound(f"the health model has no version {version}; list them with GET /v1/health/model/versions")
    return row


@router.get(
    "/v1/health/model/audit",
    response_model=HealthAuditPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Who defined and changed the health model, when, and how (oldest first, in pages)",
)
def model_audit(
    cursor: str | None = NumberCursor, limit: int = NumberLimit, session: Session = SessionDep, _p: Principal = require(*AUTHOR)
) -> HealthAuditPage:
    items = repo.audit_for(session, after=decode_number_cursor(cursor), limit=limit)
    return HealthAuditPage(items=items, next_cursor=next_key(items, limit, lambda a: str(a.id)))


def _account_health(session: Session, account_id: str, now: datetime, days: int) -> AccountHealthOut:
    today = now.date()
    rows = scores.history(session, account_id, today - timedelta(days=days - 1), today)
    current = rows[0] if rows else scores.latest_on_or_before(session, today, date.min, [account_id]).get(account_id)
    return AccountHealthOut(
        account_id=account_id,
        current=HealthScoreOut.of(current) if current is not None else None,
        history=[HealthPoint(day=r.day, score=r.score, label=r.label) for r in rows],
    )


@router.get(
    "/v1/accounts/{account_id}/health",
    response_model=AccountHealthOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="An account's latest health score, explained component by component, and its daily history",
    description="A CSM key: only an account with one of its engagements (open or closed), else 403.",
)
def account_health(
    request: Request,
    account_id: str,
    days: int = Query(90, ge=1, le=3660, description="history of this many days, up to today"),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    p: Principal = require(*READERS),
) -> AccountHealthOut:
    require_visible_account(request, session, p.role, p.csm_id, account_id)
    return _account_health(session, account_id, clock.now(), days)


@router.get(
    "/v1/health/accounts",
    response_model=HealthPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Accounts by their current health (each one's latest score of the last 7 days), lowest first (order=desc: highest first), in pages",
    description="A CSM key lists only the accounts of its own engagements (open or closed).",
)
def list_accounts(
    request: Request,
    label: str | None = Query(None, pattern="^(healthy|watch|at_risk)$"),
    order: str = Query("asc", pattern="^(asc|desc)$"),
    cursor: str | None = Query(None, max_length=MAX_CURSOR_CHARS, description="next_cursor from the previous page"),
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    p: Principal = require(*READERS),
) -> HealthPage:
    day = scores.latest_day(session, clock.now().date())
    if day is None:
        return HealthPage(day=None, items=[])
    # The cursor is the last item's (score in tenths, account id): scores are stored to one decimal.
    after = decode_cursor(cursor, int, str)
    # A CSM key's list is of its own engagements' accounts: read first (the engagements are
    # outreach's, so the query cannot join them) and handed to the page's query as a filter.
    accounts = visible_account_filter(request, session, p.role, p.csm_id)
    items = (
        scores.current_page(
            session,
            clock.now().date(),
            label=label,
            descending=order == "desc",
            after=(after[0] / 10, after[1]) if after else None,
            limit=limit,
            accounts=accounts,
        )
        if accounts is None or accounts
        else []
    )
    next_after = next_cursor(items, limit, lambda r: (round((r.score or 0) * 10), r.account_id))
    return HealthPage(day=day, items=[HealthScoreOut.of(r) for r in items], next_cursor=next_after)
