"""The segments API (docs/segments.md): validate, create, change (new version), delete
(soft), list with sizes, versions, audit, members and size per day. CS Ops author;
CS Ops and CSMs read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy.orm import Session

from services.rules.models import Segment, SegmentVersion
from services.rules.rules.schemas import AuditPage
from services.rules.segments import repository as repo
from services.rules.segments import service
from services.rules.segments.schemas import (
    SEGMENT_BODY,
    MemberPage,
    SegmentOut,
    SegmentPage,
    SegmentValidateOut,
    SegmentVersionOut,
    SegmentVersionPage,
    SizesOut,
)
from shared.api import ClockDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, NotFound, Unprocessable, responses
from shared.limits import DB_INT_MAX
from shared.pagination import NUMBER_CURSOR_PATTERN, decode_number_cursor, next_key
from shared.settings import Settings

router = APIRouter(tags=["segments"])
AUTHOR = ("ops",)
READERS = ("ops", "csm")
NumberCursor = Query(None, pattern=NUMBER_CURSOR_PATTERN, description="next_cursor from the previous page")
NumberLimit = Query(100, ge=1, le=1000)
MAX_SIZE_DAYS = 400


def _out(session: Session, seg: Segment, size: int | None = None, changed: bool | None = None) -> SegmentOut:
    if size is None:
        size = repo.member_counts(session, [seg.id]).get(seg.id, 0)
    return SegmentOut(
        id=seg.id,
        name=seg.name,
        current_version=seg.current_version,
        size=size,
        created_at=seg.created_at,
        created_by=seg.created_by,
        updated_at=seg.updated_at,
        updated_by=seg.updated_by,
        deleted_at=seg.deleted_at,
        changed=changed,
        definition=service.current_definition(session, seg),
    )


@router.post(
    "/v1/segments/validate",
    response_model=SegmentValidateOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Check a segment definition without saving it",
    openapi_extra=SEGMENT_BODY,
)
def validate_segment(body: Any = Body(...), settings: Settings = SettingsDep, _p: Principal = require(*AUTHOR)) -> SegmentValidateOut:
    return SegmentValidateOut(segment=service.parse(body, settings.raw_event_retention_days).to_dict())


@router.post(
    "/v1/segments",
    response_model=SegmentOut,
    status_code=201,
    responses={**AUTH_ERRORS, **responses(Conflict, Unprocessable)},
    summary="Create a segment (version 1; its members appear at the next tick)",
    openapi_extra=SEGMENT_BODY,
)
def create_segment(
    body: Any = Body(...),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> SegmentOut:
    definition = service.parse(body, settings.raw_event_retention_days)
    return _out(session, service.create(session, definition, p.actor, clock.now()))


@router.get(
    "/v1/segments", response_model=SegmentPage, responses=AUTH_ERRORS, summary="List segments with their size, in pages ordered by id"
)
def list_segments(
    include_deleted: bool = False,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> SegmentPage:
    items = repo.list_segments(session, include_deleted=include_deleted, after=cursor, limit=limit)
    sizes = repo.member_counts(session, [s.id for s in items])
    return SegmentPage(items=[_out(session, s, sizes.get(s.id, 0)) for s in items], next_cursor=next_key(items, limit, lambda s: s.id))


@router.get("/v1/segments/{segment_id}", response_model=SegmentOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_segment(segment_id: str, session: Session = SessionDep, _p: Principal = require(*READERS)) -> SegmentOut:
    return _out(session, service.get(session, segment_id))


@router.put(
    "/v1/segments/{segment_id}",
    response_model=SegmentOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Change a segment: a new version if the definition differs",
    openapi_extra=SEGMENT_BODY,
)
def update_segment(
    segment_id: str,
    body: Any = Body(...),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    p: Principal = require(*AUTHOR),
) -> SegmentOut:
    definition = service.parse(body, settings.raw_event_retention_days, segment_id=segment_id)
    seg, changed = service.update(session, segment_id, definition, p.actor, clock.now())
    return _out(session, seg, changed=changed)


@router.delete(
    "/v1/segments/{segment_id}",
    response_model=SegmentOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Delete a segment (soft: its members are dropped; versions, audit and sizes stay readable)",
)
def delete_segment(segment_id: str, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = require(*AUTHOR)) -> SegmentOut:
    return _out(session, service.delete(session, segment_id, p.actor, clock.now()), size=0)


@router.get(
    "/v1/segments/{segment_id}/versions",
    response_model=SegmentVersionPage,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Every version of a segment, oldest first, in pages",
)
def list_versions(
    segment_id: str,
    cursor: str | None = NumberCursor,
    limit: int = NumberLimit,
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> SegmentVersionPage:
    service.get(session, segment_id)
    items = repo.list_versions(session, segment_id, after=decode_number_cursor(cursor), limit=limit)
    return SegmentVersionPage(items=items, next_cursor=next_key(items, limit, lambda v: str(v.version)))


@router.get(
    "/v1/segments/{segment_id}/versions/{version}", response_model=SegmentVersionOut, responses={**AUTH_ERRORS, **responses(NotFound)}
)
def get_version(
    segment_id: str, version: int = Path(ge=1, le=DB_INT_MAX), session: Session = SessionDep, _p: Principal = require(*READERS)
) -> SegmentVersion:
    row = repo.get_version(session, segment_id, version)
    if row is None:
        raise NotFound(f"segment {segment_id!r} has no version {version}; list them with GET /v1/segments/{segment_id}/versions")
    return row


@router.get(
    "/v1/segments/{segment_id}/audit",
    response_model=AuditPage,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Who changed this segment, when, and how (oldest first, in pages)",
)
def segment_audit(
    segment_id: str,
    cursor: str | None = NumberCursor,
    limit: int = NumberLimit,
    session: Session = SessionDep,
    _p: Principal = require(*AUTHOR),
) -> AuditPage:
    service.get(session, segment_id)
    items = repo.audit_for(session, segment_id, after=decode_number_cursor(cursor), limit=limit)
    return AuditPage(items=items, next_cursor=next_key(items, limit, lambda a: str(a.id)))


@router.get(
    "/v1/segments/{segment_id}/members",
    response_model=MemberPage,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="The segment's member accounts now, in pages ordered by account id",
)
def list_members(
    segment_id: str,
    cursor: str | None = Query(None, max_length=128, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> MemberPage:
    service.get(session, segment_id)
    items = repo.list_members(session, segment_id, after=cursor, limit=limit)
    return MemberPage(items=items, next_cursor=next_key(items, limit, lambda m: m.account_id))


@router.get(
    "/v1/segments/{segment_id}/sizes",
    response_model=SizesOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="The segment's size per UTC day (measured by the tick), oldest first",
)
def list_sizes(
    segment_id: str,
    days: int = Query(90, ge=1, le=MAX_SIZE_DAYS, description="the last this many UTC days, today included"),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require(*READERS),
) -> SizesOut:
    service.get(session, segment_id)
    end = clock.now().date()
    start = end - timedelta(days=days - 1)
    return SizesOut(segment_id=segment_id, start=start, end=end, items=repo.sizes(session, segment_id, start, end))
