"""Engagements over HTTP.

- CS Ops (role ``ops``): the roster (``/v1/csms``), every engagement (list, filter,
  open by hand, reassign, cancel), the pool report, outcomes and forecast.
- CSMs (role ``csm``, a key bound to a roster entry with ``--csm-id``):
  ``/v1/me/engagements`` and their own engagements only; any other is 403.
- Ops and admin may also act on any engagement as a CSM would (accept, touch,
  note, extend, resolve), for cover.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from services.outreach.engagements import assignment, email, reporting, roster, service
from services.outreach.engagements import repository as repo
from services.outreach.engagements.schemas import (
    ID_PATTERN,
    CancelIn,
    CsmIn,
    CsmOut,
    CsmPage,
    CsmPatch,
    EmailIn,
    EmailOut,
    EngagementDetail,
    EngagementOut,
    EngagementPage,
    EventOut,
    EventPage,
    ExtendIn,
    ForecastOut,
    Goal,
    NoteIn,
    OpenIn,
    OutcomeReport,
    PoolOut,
    ReassignIn,
    ResolveIn,
    Status,
    TouchIn,
)
from services.outreach.models import Csm, Engagement, EngagementEvent
from shared.api import ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, Forbidden, NotFound, Unprocessable, responses
from shared.pagination import MAX_CURSOR_CHARS, NUMBER_CURSOR_PATTERN, decode_cursor, decode_number_cursor, next_cursor, next_key
from shared.settings import Settings

router = APIRouter(tags=["engagements"])
CsmId = Path(pattern=ID_PATTERN, description="lower-case slug, e.g. grace")
ENGAGEMENT_ERRORS = {**AUTH_ERRORS, **responses(NotFound, Conflict)}
LIST_ERRORS = {**AUTH_ERRORS, **responses(Unprocessable)}
Cursor = Query(None, max_length=MAX_CURSOR_CHARS, description="next_cursor from the previous page")
Limit = Query(100, ge=1, le=1000)


def _engagement_page(session: Session, order: str, cursor: str | None, limit: int, **filters: Any) -> EngagementPage:
    after = decode_cursor(cursor, datetime, str, nullable=(0,) if order == "due" else ())  # the unscheduled: no due time
    items = repo.list_engagements(session, order=order, after=after, limit=limit, **filters)
    return EngagementPage(
        items=[EngagementOut.model_validate(e) for e in items], next_cursor=next_cursor(items, limit, lambda e: repo.sort_key(e, order))
    )


def _csm_out(session: Session, csm: Csm, now: datetime) -> CsmOut:
    return roster.out(csm, repo.open_load(session, [csm.id]).get(csm.id, 0), now)


# ---- roster (ops) -------------------------------------------------------------------


@router.put(
    "/v1/csms/{csm_id}",
    response_model=CsmOut,
    tags=["csm pool"],
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Add a CSM to the pool or replace their entry (capacity may not drop below their open load)",
)
def put_csm(
    body: CsmIn,
    csm_id: str = CsmId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> CsmOut:
    now = clock.now()
    return _csm_out(session, roster.put(session, csm_id, body, actor=principal.actor, now=now, settings=settings), now)


@router.patch(
    "/v1/csms/{csm_id}",
    response_model=CsmOut,
    tags=["csm pool"],
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Change a CSM: capacity, availability (away_from/away_until, active), coverage",
    description="Setting a CSM away or inactive re-queues their open engagements and reassigns them "
    "to eligible CSMs at once where there are any.",
)
def patch_csm(
    body: CsmPatch,
    csm_id: str = CsmId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> CsmOut:
    now = clock.now()
    return _csm_out(session, roster.patch(session, csm_id, body, actor=principal.actor, now=now, settings=settings), now)


@router.get("/v1/csms", response_model=CsmPage, tags=["csm pool"], responses=LIST_ERRORS, summary="The roster, by id")
def list_csms(
    cursor: str | None = Query(None, max_length=128, description="next_cursor from the previous page"),
    limit: int = Limit,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require("ops"),
) -> CsmPage:
    csms = repo.list_csms(session, after=cursor, limit=limit)
    loads = repo.open_load(session, [c.id for c in csms])
    return CsmPage(items=[roster.out(c, loads.get(c.id, 0), clock.now()) for c in csms], next_cursor=next_key(csms, limit, lambda c: c.id))


@router.get("/v1/csms/{csm_id}", response_model=CsmOut, tags=["csm pool"], responses={**AUTH_ERRORS, **responses(NotFound)})
def get_csm(csm_id: str, session: Session = SessionDep, clock: Clock = ClockDep, _p: Principal = require("ops")) -> CsmOut:
    return _csm_out(session, roster.get_or_404(session, csm_id), clock.now())


# ---- the CSM's own work -------------------------------------------------------------


@router.get(
    "/v1/me/engagements",
    response_model=EngagementPage,
    responses=LIST_ERRORS,
    summary="My engagements, by due date (csm keys), each with its reason: the evidence and what automation tried",
)
def my_engagements(
    status: Status | None = None,
    cursor: str | None = Cursor,
    limit: int = Limit,
    session: Session = SessionDep,
    principal: Principal = require("csm"),
) -> EngagementPage:
    if not principal.csm_id:
        raise Forbidden("this key is not bound to a CSM; create one with `touchline keys create --role csm --csm-id <id>`")
    return _engagement_page(session, "due", cursor, limit, csm_id=principal.csm_id, status=status)


def _load(session: Session, engagement_id: str, principal: Principal, *, lock: bool = False) -> Engagement:
    return service.visible_to(repo.get(session, engagement_id, lock=lock), principal, engagement_id)


@router.get(
    "/v1/engagements/{engagement_id}",
    response_model=EngagementDetail,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="One engagement with the account context a CSM needs: traits, 90-day usage, the evidence, "
    "contacts by role, messages automation sent and skipped, the timeline, earlier engagements",
)
def get_engagement(
    engagement_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("csm", "ops")
) -> EngagementDetail:
    e = _load(session, engagement_id, principal)
    return reporting.detail(session, e, clock.now())


@router.get(
    "/v1/engagements/{engagement_id}/events",
    response_model=EventPage,
    responses={**LIST_ERRORS, **responses(NotFound)},
    summary="The timeline, oldest first: transitions, notes, touches, reminders",
)
def engagement_events(
    engagement_id: str,
    cursor: str | None = Query(None, pattern=NUMBER_CURSOR_PATTERN, description="next_cursor from the previous page"),
    limit: int = Limit,
    session: Session = SessionDep,
    principal: Principal = require("csm", "ops"),
) -> EventPage:
    _load(session, engagement_id, principal)
    events = repo.events_of(session, engagement_id, after=decode_number_cursor(cursor), limit=limit)
    return EventPage(items=[EventOut.model_validate(x) for x in events], next_cursor=next_key(events, limit, lambda x: str(x.id)))


@router.post(
    "/v1/engagements/{engagement_id}/accept",
    response_model=EngagementOut,
    responses=ENGAGEMENT_ERRORS,
    summary="Accept an assigned engagement (assigned -> active)",
)
def accept(
    engagement_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("csm", "ops")
) -> Engagement:
    e = _load(session, engagement_id, principal, lock=True)
    return service.accept(session, e, actor=principal.actor, now=clock.now())


@router.post(
    "/v1/engagements/{engagement_id}/emails",
    status_code=201,
    response_model=EmailOut,
    responses={**ENGAGEMENT_ERRORS, **responses(Unprocessable)},
    summary="Email a contact of the account, from a template or in your words, through the contact gate and the outbox (a touch)",
    description="409 contact_policy with the reason (no_email, erased, suppressed, contact_cap, account_cap) when the gate "
    "refuses; nothing is written then. Quiet hours defer it (next_attempt_at).",
)
def send_email(
    body: EmailIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("csm", "ops"),
) -> EmailOut:
    e = _load(session, engagement_id, principal, lock=True)
    now = clock.now()
    out = email.send_email(
        session,
        e,
        user_id=body.user_id,
        template_id=body.template,
        subject=body.subject,
        text=body.text,
        actor=principal.actor,
        now=now,
        settings=settings,
    )
    return EmailOut(message_id=out["message_id"], state="queued", next_attempt_at=out["deferred_until"] or now)


@router.post(
    "/v1/engagements/{engagement_id}/touches",
    status_code=201,
    response_model=None,
    responses={**ENGAGEMENT_ERRORS, **responses(Unprocessable)},
    summary="Log a touch (call, email, meeting, sent resource); it counts against the account's touch budget",
)
def log_touch(
    body: TouchIn, engagement_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("csm", "ops")
) -> dict[str, Any]:
    e = _load(session, engagement_id, principal, lock=True)
    return service.log_touch(session, e, kind=body.kind, user_id=body.user_id, summary=body.summary, actor=principal.actor, now=clock.now())


@router.post(
    "/v1/engagements/{engagement_id}/notes",
    status_code=201,
    response_model=EventOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Add a note; answers the note's timeline entry (the whole timeline is GET .../events, paged)",
)
def add_note(
    body: NoteIn, engagement_id: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("csm", "ops")
) -> EngagementEvent:
    e = _load(session, engagement_id, principal)
    return service.add_note(session, e, text=body.text, actor=principal.actor, now=clock.now())


@router.post(
    "/v1/engagements/{engagement_id}/extend",
    response_model=EngagementOut,
    responses={**ENGAGEMENT_ERRORS, **responses(Unprocessable)},
    summary="Take the one extension (at most TOUCHLINE_ENGAGEMENT_MAX_EXTENSION_DAYS)",
)
def extend(
    body: ExtendIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("csm", "ops"),
) -> Engagement:
    e = _load(session, engagement_id, principal, lock=True)
    return service.extend(session, e, days=body.days, reason=body.reason, actor=principal.actor, now=clock.now(), settings=settings)


@router.post(
    "/v1/engagements/{engagement_id}/resolve",
    response_model=EngagementOut,
    responses=ENGAGEMENT_ERRORS,
    summary="Resolve with an outcome; the automatic measurement is recorded beside it",
)
def resolve(
    body: ResolveIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("csm", "ops"),
) -> Engagement:
    e = _load(session, engagement_id, principal, lock=True)
    return service.resolve(session, e, outcome=body.outcome, note=body.note, actor=principal.actor, now=clock.now(), settings=settings)


# ---- CS Ops ---------------------------------------------------------------------------


@router.get(
    "/v1/engagements",
    response_model=EngagementPage,
    responses=LIST_ERRORS,
    summary="Every engagement, newest first (or by due date), filtered by status, CSM, account or goal",
)
def list_engagements(
    status: Status | None = None,
    csm_id: str | None = None,
    account_id: str | None = None,
    goal: Goal | None = None,
    order: str = Query("opened", pattern="^(opened|due)$"),
    cursor: str | None = Cursor,
    limit: int = Limit,
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> EngagementPage:
    return _engagement_page(session, order, cursor, limit, status=status, csm_id=csm_id, account_id=account_id, goal=goal)


@router.post(
    "/v1/engagements",
    response_model=EngagementOut,
    status_code=201,
    responses={
        200: {
            "model": EngagementOut,
            "description": "the account already had an open engagement for this goal: it is answered, "
            "with the note added to it (and reassigned to csm_id if given)",
        },
        **AUTH_ERRORS,
        **responses(Unprocessable),
    },
    summary="Open an engagement by hand (or attach to the open one for this account and goal)",
    description="201 with the new engagement, 200 with the account's open one for this goal.",
)
def open_by_hand(
    body: OpenIn,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> JSONResponse:
    e, opened = service.open_by_hand(session, body, actor=principal.actor, now=clock.now(), settings=settings)
    return JSONResponse(status_code=201 if opened else 200, content=EngagementOut.model_validate(e).model_dump(mode="json"))


@router.post(
    "/v1/engagements/{engagement_id}/reassign",
    response_model=EngagementOut,
    responses={**ENGAGEMENT_ERRORS, **responses(Unprocessable)},
    summary="Move an engagement to another CSM, or back to the queue (csm_id null)",
)
def reassign(
    body: ReassignIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> Engagement:
    e = _load(session, engagement_id, principal)
    return assignment.reassign(session, e, body.csm_id, actor=principal.actor, now=clock.now(), settings=settings, reason=body.reason)


@router.post(
    "/v1/engagements/{engagement_id}/cancel", response_model=EngagementOut, responses=ENGAGEMENT_ERRORS, summary="Cancel an open engagement"
)
def cancel(
    body: CancelIn,
    engagement_id: str,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> Engagement:
    e = _load(session, engagement_id, principal, lock=True)
    return service.cancel(session, e, reason=body.reason, actor=principal.actor, now=clock.now(), settings=settings)


# ---- the pool -------------------------------------------------------------------------


@router.get(
    "/v1/pool",
    response_model=PoolOut,
    tags=["csm pool"],
    responses=AUTH_ERRORS,
    summary="Load per CSM, queue length and age, engagements by status and outcome",
)
def pool(session: Session = SessionDep, clock: Clock = ClockDep, _p: Principal = require("ops")) -> PoolOut:
    return reporting.pool(session, clock.now())


@router.get(
    "/v1/pool/outcomes",
    response_model=OutcomeReport,
    tags=["csm pool"],
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Recovery rate of engaged accounts against the escalation holdout, by rule, playbook and CSM, "
    "with the lift and its 95% interval",
)
def outcomes(
    days: int = Query(365, ge=1, le=3650),
    segment: list[str] = Query([], max_length=reporting.SEGMENTS_MAX, description="also a row per named segment (repeat it)"),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require("ops"),
) -> OutcomeReport:
    return reporting.outcomes(session, clock.now(), days, segment)


@router.get(
    "/v1/pool/forecast",
    response_model=ForecastOut,
    tags=["csm pool"],
    # 404: a rule_ids entry names no saved rule; 422 (as outcomes): an unknown segment, or segment with rule_ids
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Expected engagements per week against the pool's capacity, and the CSMs needed, optionally by named segment",
)
def forecast(
    lookback_days: int = Query(90, ge=7, le=365),
    hours_per_engagement: float = Query(6.0, gt=0, le=200, description="CSM hours one engagement takes"),
    reactive_share: float = Query(0.15, ge=0, lt=1, description="share of a CSM's week on reactive work"),
    collateral_share: float = Query(0.10, ge=0, lt=1, description="share building collateral"),
    overhead_share: float = Query(0.15, ge=0, lt=1, description="share on meetings, training, admin"),
    rule_ids: list[str] | None = Query(
        None,
        description="forecast from these saved rules (enabled or not), replayed over the last lookback_days (at most "
        f"{reporting.REPLAY_MAX_DAYS}) of stored history, instead of the signals received; repeat the parameter per rule",
    ),
    segment: list[str] = Query(
        [],
        max_length=reporting.SEGMENTS_MAX,
        description="also the demand per named segment (repeat it): the signals and engagements of accounts that were "
        "members when each arrived or opened; capacity stays pool-wide; not with rule_ids",
    ),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    _p: Principal = require("ops"),
) -> ForecastOut:
    if reactive_share + collateral_share + overhead_share >= 1:
        raise Unprocessable("reactive, collateral and overhead shares leave no proactive time", code="no_proactive_time")
    return reporting.forecast(
        session,
        clock.now(),
        lookback_days=lookback_days,
        hours_per_engagement=hours_per_engagement,
        reactive=reactive_share,
        collateral=collateral_share,
        overhead=overhead_share,
        time_box_days=settings.engagement_time_box_days,
        rule_ids=rule_ids,
        retention_days=settings.raw_event_retention_days,
        segment_ids=segment,
    )
