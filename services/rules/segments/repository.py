"""Every query on named segments: heads, versions, audit trail, members and sizes."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.ingest.interface import AccountRange
from services.rules.language.segment import ENTERED, LEFT, SIGNAL_PREFIX
from services.rules.models import Segment, SegmentMember, SegmentSize, SegmentVersion, SignalRecord
from shared import audit
from shared.db import insert_new, is_in, upsert
from shared.models import AuditRecord

AUDIT_TYPE = "segment"
CHUNK = 900  # SQLite's IN lists stay well under its parameter limit


def get_segment(session: Session, segment_id: str, *, for_update: bool = False) -> Segment | None:
    q = select(Segment).where(Segment.id == segment_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.scalar(q)


def get_version(session: Session, segment_id: str, version: int) -> SegmentVersion | None:
    return session.get(SegmentVersion, (segment_id, version))


def list_versions(session: Session, segment_id: str, *, after: int | None = None, limit: int | None = None) -> list[SegmentVersion]:
    q = select(SegmentVersion).where(SegmentVersion.segment_id == segment_id).order_by(SegmentVersion.version).limit(limit)
    if after is not None:
        q = q.where(SegmentVersion.version > after)
    return list(session.scalars(q))


def list_segments(session: Session, *, include_deleted: bool = False, after: str | None = None, limit: int | None = None) -> list[Segment]:
    q = select(Segment).order_by(Segment.id).limit(limit)
    if not include_deleted:
        q = q.where(Segment.deleted_at.is_(None))
    if after:
        q = q.where(Segment.id > after)
    return list(session.scalars(q))


def live_segments(session: Session) -> list[tuple[Segment, SegmentVersion]]:
    """Every segment not deleted, with its current version (what the refresh evaluates)."""
    q = (
        select(Segment, SegmentVersion)
        .join(SegmentVersion, (SegmentVersion.segment_id == Segment.id) & (SegmentVersion.version == Segment.current_version))
        .where(Segment.deleted_at.is_(None))
        .order_by(Segment.id)
    )
    return [(s, v) for s, v in session.execute(q)]


def existing(session: Session, segment_ids: Iterable[str]) -> set[str]:
    """Which of ``segment_ids`` name a segment that is not deleted."""
    ids = sorted(set(segment_ids))
    if not ids:
        return set()
    return set(session.scalars(select(Segment.id).where(Segment.id.in_(ids), Segment.deleted_at.is_(None))))


def audit_for(session: Session, segment_id: str, *, after: int | None = None, limit: int | None = None) -> list[AuditRecord]:
    return audit.history(session, AUDIT_TYPE, segment_id, after=after, limit=limit)


# ---- members -----------------------------------------------------------------


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def members(session: Session, segment_ids: list[str], accounts: list[str] | None) -> dict[str, set[str]]:
    """segment -> its member accounts (of ``accounts`` only, when given)."""
    out: dict[str, set[str]] = {s: set() for s in segment_ids}
    if not segment_ids:
        return out
    base = select(SegmentMember.segment_id, SegmentMember.account_id).where(SegmentMember.segment_id.in_(segment_ids))
    if accounts is None:
        rows: Iterable[Any] = session.execute(base)
    else:
        rows = [
            r
            for chunk in _chunks(sorted(set(accounts)))
            for r in session.execute(base.where(is_in(session, SegmentMember.account_id, chunk)))
        ]
    for s, a in rows:
        out[s].add(a)
    return out


def add_members(session: Session, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Insert membership rows; returns the (segment, account) pairs actually inserted (a
    concurrent refresh that inserted one first keeps it, and fires its signal)."""
    return insert_new(session, SegmentMember.__table__, rows, ["segment_id", "account_id"])


def remove_members(session: Session, segment_id: str, accounts: Iterable[str]) -> set[str]:
    """Delete ``accounts`` from the segment; returns those actually deleted."""
    out: set[str] = set()
    for chunk in _chunks(sorted(set(accounts))):
        stmt = (
            delete(SegmentMember)
            .where(SegmentMember.segment_id == segment_id, is_in(session, SegmentMember.account_id, chunk))
            .returning(SegmentMember.account_id)
        )
        out.update(session.scalars(stmt))
    return out


def clear_members(session: Session, segment_id: str) -> int:
    return len(
        list(session.scalars(delete(SegmentMember).where(SegmentMember.segment_id == segment_id).returning(SegmentMember.account_id)))
    )


def list_members(session: Session, segment_id: str, *, after: str | None = None, limit: int = 100) -> list[SegmentMember]:
    q = select(SegmentMember).where(SegmentMember.segment_id == segment_id).order_by(SegmentMember.account_id).limit(limit)
    if after:
        q = q.where(SegmentMember.account_id > after)
    return list(session.scalars(q))


def member_counts(session: Session, segment_ids: list[str] | None = None) -> dict[str, int]:
    """segment -> its number of members now (one grouped count)."""
    q = select(SegmentMember.segment_id, func.count()).group_by(SegmentMember.segment_id)
    if segment_ids is not None:
        q = q.where(SegmentMember.segment_id.in_(segment_ids))
    return {s: int(n) for s, n in session.execute(q)}


def memberships(session: Session, account_ids: Iterable[str] | None) -> dict[str, set[str]]:
    """account -> the segments it is in now (of ``account_ids``; None: every account; an
    :class:`AccountRange`, a backtest's chunk: those from its first id to its last)."""
    out: dict[str, set[str]] = {}
    if account_ids is None or (isinstance(account_ids, AccountRange) and account_ids):
        q = select(SegmentMember.account_id, SegmentMember.segment_id)
        if account_ids is not None:
            q = q.where(SegmentMember.account_id.between(account_ids[0], account_ids[-1]))
        for a, s in session.execute(q):
            out.setdefault(a, set()).add(s)
        return out
    for chunk in _chunks(sorted(set(account_ids))):
        q = select(SegmentMember.account_id, SegmentMember.segment_id).where(is_in(session, SegmentMember.account_id, chunk))
        for a, s in session.execute(q):
            out.setdefault(a, set()).add(s)
    return out


# ---- sizes -------------------------------------------------------------------


def save_sizes(session: Session, sizes: dict[str, int], day: date, now: datetime) -> None:
    """Each segment's size on ``day`` (the day's last measurement wins)."""
    rows = [{"segment_id": s, "day": day, "size": n, "measured_at": now} for s, n in sorted(sizes.items())]
    upsert(session, SegmentSize.__table__, rows, ["segment_id", "day"], update=lambda ex: {"size": ex.size, "measured_at": ex.measured_at})


def sizes(session: Session, segment_id: str, start: date, end: date) -> list[SegmentSize]:
    q = (
        select(SegmentSize)
        .where(SegmentSize.segment_id == segment_id, SegmentSize.day >= start, SegmentSize.day <= end)
        .order_by(SegmentSize.day)
    )
    return list(session.scalars(q))


def membership_history(
    session: Session, segment_ids: list[str], account_ids: Iterable[str]
) -> dict[tuple[str, str], list[tuple[datetime, bool]]]:
    """(segment, account) -> its entering (True) and leaving (False), oldest first, from
    the segments' signals (kept like every signal): what membership was at any past
    time, for reports that split by segment as of each enrolment."""
    out: dict[tuple[str, str], list[tuple[datetime, bool]]] = {}
    if not segment_ids:
        return out
    rule_ids = [SIGNAL_PREFIX + s for s in segment_ids]
    for chunk in _chunks(sorted(set(account_ids))):
        q = (
            select(SignalRecord.rule_id, SignalRecord.account_id, SignalRecord.fired_at, SignalRecord.kind)
            .where(
                SignalRecord.rule_id.in_(rule_ids), SignalRecord.kind.in_((ENTERED, LEFT)), is_in(session, SignalRecord.account_id, chunk)
            )
            .order_by(SignalRecord.fired_at)
        )
        for rule_id, account_id, fired_at, kind in session.execute(q):
            out.setdefault((rule_id[len(SIGNAL_PREFIX) :], account_id), []).append((fired_at, kind == ENTERED))
    return out


def members_at(session: Session, segment_ids: list[str], rows: list[tuple[str, datetime]]) -> dict[str, list[bool]]:
    """Per segment, for each of ``rows`` ((account, at)), whether the account was in it
    at that instant: its last change on or before it was entering (:func:`membership_history`).
    The reports by segment count an enrolment, or an engagement, by membership as of
    when it began."""
    history = membership_history(session, segment_ids, {a for a, _ in rows})
    out: dict[str, list[bool]] = {}
    for sid in segment_ids:
        flags = []
        for account_id, at in rows:
            changes = history.get((sid, account_id), [])
            index = bisect_right([t for t, _ in changes], at)
            flags.append(bool(index and changes[index - 1][1]))
        out[sid] = flags
    return out
