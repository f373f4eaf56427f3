"""Dry-runs: would a rule (saved or not) fire now for one account, and why; how many
accounts a segment definition would hold now. Nothing is stored. CS Ops (role ops)
only. And scoring an account's health now (ops and csm; the rest of the health API is
in services/rules/health/router.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from sqlalchemy.orm import Session

from services.rules.evaluation import health
from services.rules.evaluation.dryrun import dry_run
from services.rules.evaluation.segments import preview_size
from services.rules.health.schemas import HealthScoreOut
from services.rules.rules import service
from services.rules.rules.schemas import DryRunOut
from services.rules.segments import service as segments
from services.rules.segments.schemas import SEGMENT_BODY, SegmentPreviewOut
from shared.api import ClockDep, ReadSessionDep, SessionDep, SettingsDep, require_visible_account
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.settings import Settings

router = APIRouter(tags=["rules"])
AUTHOR = ("ops",)

TEST_DOC = (
    "Would the rule fire now for this account, and why or why not, predicate by predicate. Nothing is stored. "
    'Event-triggered rules use `event` from the body if given ({"event": {"name": ..., "properties": {...}, '
    '"user_id": ...}}), else the account\'s latest stored triggering event.'
)


@router.post(
    "/v1/rules/test",
    response_model=DryRunOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Dry-run an unsaved rule for one account",
    description=TEST_DOC + ' Body: {"rule": {...}, "event": {...}?}',
)
def test_unsaved_rule(
    account_id: str,
    body: Any = Body(...),
    session: Session = ReadSessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require(*AUTHOR),
) -> dict[str, Any]:
    if not isinstance(body, dict) or "rule" not in body:
        raise Unprocessable([{"pointer": "/rule", "message": 'send {"rule": {<rule definition>}, "event": {...} (optional)}'}])
    definition, _ = service.parse(body["rule"], settings.raw_event_retention_days)
    return dry_run(session, definition, None, account_id, clock.now(), body.get("event"))


@router.post(
    "/v1/rules/{rule_id}/test",
    response_model=DryRunOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Dry-run a saved rule (current version) for one account",
    description=TEST_DOC,
)
def test_rule(
    rule_id: str,
    account_id: str,
    body: Any = Body(None),
    session: Session = ReadSessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require(*AUTHOR),
) -> dict[str, Any]:
    rule = service.get(session, rule_id)
    definition, _ = service.parse(service.current_definition(session, rule), 100_000)
    event = body.get("event") if isinstance(body, dict) else None
    return dry_run(session, definition, rule.current_version, account_id, clock.now(), event)


@router.post(
    "/v1/accounts/{account_id}/health",
    response_model=HealthScoreOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    tags=["health"],
    summary="Score an account's health now with the current model (stored as today's score)",
    description="A CSM key: only an account with one of its engagements (open or closed), else 403.",
)
def score_account_health(
    request: Request, account_id: str, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = require("ops", "csm")
) -> HealthScoreOut:
    require_visible_account(request, session, p.role, p.csm_id, account_id)
    return HealthScoreOut.of(health.score_account(session, account_id, clock.now()))


@router.post(
    "/v1/segments/preview",
    response_model=SegmentPreviewOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="How many accounts a segment definition would hold now, without saving it",
    tags=["segments"],
    openapi_extra=SEGMENT_BODY,
)
def preview_segment(
    body: Any = Body(...),
    session: Session = ReadSessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require(*AUTHOR),
) -> SegmentPreviewOut:
    """The console's *Preview* (the members count beside the segment editor) over the API:
    the definition is checked as on create (the same 422s), then matched against every
    account as the tick would; nothing is written."""
    definition = segments.parse(body, settings.raw_event_retention_days)
    return SegmentPreviewOut(size=preview_size(session, definition, clock.now()), segment=definition.to_dict())
