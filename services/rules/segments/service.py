"""Authoring named segments (docs/segments.md): create, change (every change is a new
version), delete (soft), each with an audit record of who did it, as rules are
authored (services/rules/rules/service.py). Membership is the refresh's job
(:mod:`services.rules.evaluation.segments`). Flushes; never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from services.rules.language.segment import SegmentDefinition, parse_segment
from services.rules.models import Segment, SegmentVersion
from services.rules.segments import repository as repo
from shared import audit
from shared.errors import Conflict, NotFound, Unprocessable


@dataclass(frozen=True)
class LoadedSegment:
    """A live segment as the refresh sees it: the parsed definition of its current version."""

    id: str
    version: int
    definition: SegmentDefinition


def parse(payload: Any, retention_days: int, segment_id: str | None = None) -> SegmentDefinition:
    return parse_segment(payload, retention_days=retention_days, segment_id=segment_id)


def load_live(session: Session) -> list[LoadedSegment]:
    # Stored definitions were validated when written; a lower retention since must not make them unloadable.
    return [LoadedSegment(s.id, v.version, parse_segment(v.definition, retention_days=100_000)) for s, v in repo.live_segments(session)]


def get(session: Session, segment_id: str, *, include_deleted: bool = True) -> Segment:
    seg = repo.get_segment(session, segment_id)
    if seg is None or (seg.deleted_at is not None and not include_deleted):
        raise NotFound(f"no segment {segment_id!r}; list segments with GET /v1/segments")
    return seg


def current_definition(session: Session, seg: Segment) -> dict[str, Any]:
    version = repo.get_version(session, seg.id, seg.current_version)
    if version is None:  # versions are never deleted: a broken invariant, not a user error
        raise LookupError(f"segment {seg.id} has no version {seg.current_version}")
    return version.definition


def _audit(session: Session, actor: str, action: str, seg: Segment, now: datetime, **details: Any) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type=repo.AUDIT_TYPE,
        object_id=seg.id,
        now=now,
        version=seg.current_version,
        details=details,
    )


def _new_version(session: Session, seg: Segment, definition: SegmentDefinition, actor: str, now: datetime) -> None:
    seg.name = definition.name
    seg.updated_at, seg.updated_by = now, actor
    session.add(
        SegmentVersion(segment_id=seg.id, version=seg.current_version, definition=definition.to_dict(), created_at=now, created_by=actor)
    )


def create(session: Session, definition: SegmentDefinition, actor: str, now: datetime) -> Segment:
    seg = repo.get_segment(session, definition.id, for_update=True)
    if seg is not None and seg.deleted_at is None:
        raise Conflict(f"segment {definition.id!r} exists; change it with PUT /v1/segments/{definition.id} (a new version)")
    if seg is not None:  # re-creating a deleted id continues its version history
        seg.current_version += 1
        seg.deleted_at = None
    else:
        seg = Segment(id=definition.id, current_version=1, created_at=now, created_by=actor)
        session.add(seg)
    _new_version(session, seg, definition, actor, now)
    session.flush()
    _audit(session, actor, "create", seg, now)
    session.flush()
    return seg


def update(session: Session, segment_id: str, definition: SegmentDefinition, actor: str, now: datetime) -> tuple[Segment, bool]:
    """A new version if the definition differs: (the segment, whether it changed)."""
    seg = repo.get_segment(session, segment_id, for_update=True)
    if seg is None or seg.deleted_at is not None:
        raise NotFound(f"no segment {segment_id!r}; create it with POST /v1/segments")
    before, after = current_definition(session, seg), definition.to_dict()
    if before == after:
        return seg, False
    seg.current_version += 1
    _new_version(session, seg, definition, actor, now)
    _audit(session, actor, "update", seg, now, changed_fields=sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))
    session.flush()
    return seg, True


def delete(session: Session, segment_id: str, actor: str, now: datetime) -> Segment:
    """Soft delete: the segment stops being refreshed and its members are dropped (no
    ``segment_left`` signals: nobody left it, it ended); versions, audit and sizes stay."""
    seg = repo.get_segment(session, segment_id, for_update=True)
    if seg is None or seg.deleted_at is not None:
        raise NotFound(f"no segment {segment_id!r}")
    seg.deleted_at = now
    seg.updated_at, seg.updated_by = now, actor
    dropped = repo.clear_members(session, seg.id)
    _audit(session, actor, "delete", seg, now, members_dropped=dropped)
    session.flush()
    return seg


STARTER_SEGMENTS = Path(__file__).resolve().parent / "starter.yaml"


def install_starter(session: Session, actor: str, now: datetime, retention_days: int) -> list[str]:
    """Create the starter segments (``starter.yaml``: one per use case) that do not exist
    (a deleted one is not brought back, one changed since is left as it is). Returns the
    ids it created."""
    created = []
    for segment_id, body in yaml.safe_load(STARTER_SEGMENTS.read_text(encoding="utf-8")).items():
        if repo.get_segment(session, segment_id) is None:
            create(session, parse({**body, "id": segment_id}, retention_days), actor, now)
            created.append(segment_id)
    return created


def named_for_report(session: Session, segment_ids: list[str], limit: int) -> list[str]:
    """The segments a report is asked to split by (``segment=`` repeated), each once, in
    the order given: 1 to ``limit`` that exist, else a 422 naming what is wrong."""
    segment_ids = list(dict.fromkeys(segment_ids))
    if not segment_ids or len(segment_ids) > limit:
        raise Unprocessable(f"name 1 to {limit} segments with segment=<id> (repeat it for several)", code="validation_error")
    known = repo.existing(session, segment_ids)
    missing = [s for s in segment_ids if s not in known]
    if missing:
        raise Unprocessable(f"no segment {', '.join(repr(s) for s in missing)}; list them with GET /v1/segments", code="unknown_segment")
    return segment_ids
