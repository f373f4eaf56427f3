"""The rules API: validate, create, change (new version), enable, disable, delete
(soft), list, versions, audit. CS Ops (role ops) only. Dry-runs are in
services/rules/evaluation/router.py, backtests in services/rules/backtest/router.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.rules.models import Rule, RuleVersion
from services.rules.rules import repository as repo
from services.rules.rules import service
from services.rules.rules.schemas import (
    RULE_BODY,
    AuditPage,
    RuleOut,
    RulePage,
    RuleVersionOut,
    RuleVersionPage,
    ValidateOut,
)
from shared.api import ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, NotFound, Unprocessable, responses
from shared.limits import DB_INT_MAX
from shared.pagination import NUMBER_CURSOR_PATTERN, decode_number_cursor, next_key
from shared.settings import Settings

router = APIRouter(tags=["rules"])
T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)
AUTHOR = ("ops",)


def _out(session: Session, rule: Rule) -> RuleOut:
    return RuleOut.model_validate(
        {
            **{c: getattr(rule, c) for c in RuleOut.model_fields if c != "definition"},
            "definition": service.current_definition(session, rule),
        }
    )


@router.post(
    "/v1/rules/validate",
    response_model=ValidateOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Check a rule without saving it",
    openapi_extra=RULE_BODY,
)
def validate_rule(body: Any = Body(...), settings: Settings = SettingsDep, _p: Principal = require(*AUTHOR)) -> ValidateOut:
    definition, _enabled = service.parse(body, settings.raw_event_retention_days)
    return ValidateOut(rule=definition.to_dict())


@router.post(
    "/v1/rules",
    response_model=RuleOut,
    status_code=201,
    responses={**AUTH_ERRORS, **responses(Conflict, Unprocessable)},
    summary="Create a rule (version 1; disabled unless enabled=true)",
    openapi_extra=RULE_BODY,
)
def create_rule(
    body: Any = Body(...),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> RuleOut:
    definition, enabled = service.parse(body, settings.raw_event_retention_days)
    return _out(session, service.create(session, definition, enabled, p.actor, clock.now()))


@router.get("/v1/rules", response_model=RulePage, responses=AUTH_ERRORS, summary="List rules, filtered, in pages ordered by id")
def list_rules(
    kind: str | None = None,
    enabled: bool | None = None,
    trigger: str | None = Query(None, description="events or schedule"),
    event: str | None = Query(None, description="only rules triggered by this event name"),
    include_deleted: bool = False,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*AUTHOR),
) -> RulePage:
    items = repo.list_rules(
        session, kind=kind, enabled=enabled, trigger_type=trigger, include_deleted=include_deleted, after=cursor, limit=limit
    )
    next_cursor = next_key(items, limit, lambda r: r.id)
    if event:
        items = [r for r in items if event in (r.trigger_events or [])]
    return RulePage(items=[_out(session, r) for r in items], next_cursor=next_cursor)


@router.get("/v1/rules/{rule_id}", response_model=RuleOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_rule(rule_id: str, session: Session = SessionDep, _p: Principal = require(*AUTHOR)) -> RuleOut:
    return _out(session, service.get(session, rule_id))


@router.put(
    "/v1/rules/{rule_id}",
    response_model=RuleOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Change a rule: a new version if the definition differs",
    openapi_extra=RULE_BODY,
)
def update_rule(
    rule_id: str,
    body: Any = Body(...),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> RuleOut:
    definition, enabled = service.parse(body, settings.raw_event_retention_days, rule_id=rule_id)
    return _out(session, service.update(session, rule_id, definition, enabled, p.actor, clock.now()))


@router.delete(
    "/v1/rules/{rule_id}",
    response_model=RuleOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Delete a rule (soft: it stops firing; its versions and signals stay readable)",
)
def delete_rule(rule_id: str, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = require(*AUTHOR)) -> RuleOut:
    return _out(session, service.delete(session, rule_id, p.actor, clock.now()))


@router.post("/v1/rules/{rule_id}/enable", response_model=RuleOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def enable_rule(rule_id: str, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = require(*AUTHOR)) -> RuleOut:
    return _out(session, service.set_enabled(session, rule_id, True, p.actor, clock.now()))


@router.post("/v1/rules/{rule_id}/disable", response_model=RuleOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def disable_rule(rule_id: str, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = require(*AUTHOR)) -> RuleOut:
    return _out(session, service.set_enabled(session, rule_id, False, p.actor, clock.now()))


# Versions and audit entries are numbered: the cursor is the last number of a page.
NumberCursor = Query(None, pattern=NUMBER_CURSOR_PATTERN, description="next_cursor from the previous page")
NumberLimit = Query(100, ge=1, le=1000)


def _numbered_page(
    page: type[P],
    session: Session,
    rule_id: str,
    cursor: str | None,
    limit: int,
    fetch: Callable[..., list[T]],
    number: Callable[[T], int],
) -> P:
    """A page of the rule's versions or audit entries (``fetch``) after number
    ``cursor``; 404 if there is no such rule."""
    service.get(session, rule_id)
    items = fetch(session, rule_id, after=decode_number_cursor(cursor), limit=limit)
    return page(items=items, next_cursor=next_key(items, limit, lambda x: str(number(x))))


@router.get(
    "/v1/rules/{rule_id}/versions",
    response_model=RuleVersionPage,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Every version of a rule, oldest first, in pages",
)
def list_versions(
    rule_id: str,
    cursor: str | None = NumberCursor,
    limit: int = NumberLimit,
    session: Session = SessionDep,
    _p: Principal = require(*AUTHOR),
) -> RuleVersionPage:
    return _numbered_page(RuleVersionPage, session, rule_id, cursor, limit, repo.list_versions, lambda v: v.version)


@router.get("/v1/rules/{rule_id}/versions/{version}", response_model=RuleVersionOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_version(
    rule_id: str, version: int = Path(ge=1, le=DB_INT_MAX), session: Session = SessionDep, _p: Principal = require(*AUTHOR)
) -> RuleVersion:
    row = repo.get_version(session, rule_id, version)
    if row is None:
        raise NotFound(f"rule {rule_id!r} has no version {version}; list them with GET /v1/rules/{rule_id}/versions")
    return row


@router.get(
    "/v1/rules/{rule_id}/audit",
    response_model=AuditPage,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Who changed this rule, when, and how (oldest first, in pages)",
)
def rule_audit(
    rule_id: str,
    cursor: str | None = NumberCursor,
    limit: int = NumberLimit,
    session: Session = SessionDep,
    _p: Principal = require(*AUTHOR),
) -> AuditPage:
    return _numbered_page(AuditPage, session, rule_id, cursor, limit, repo.audit_for, lambda a: a.id)
