"""Every query on the health model's versions, its audit trail and the daily scoring's
claims (``health_runs``); the scores are in :mod:`services.rules.scores.repository`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.rules.models import HealthModelVersion, HealthRun
from shared import audit
from shared.db import insert_on_conflict, rowcount
from shared.models import AuditRecord

AUDIT_TYPE = "health_model"
AUDIT_ID = "health"


def current(session: Session) -> HealthModelVersion | None:
    return session.scalar(select(HealthModelVersion).order_by(HealthModelVersion.version.desc()).limit(1))


def get_version(session: Session, version: int) -> HealthModelVersion | None:
    return session.get(HealthModelVersion, version)


def list_versions(session: Session, *, after: int | None = None, limit: int | None = None) -> list[HealthModelVersion]:
    q = select(HealthModelVersion).order_by(HealthModelVersion.version).limit(limit)
    if after is not None:
        q = q.where(HealthModelVersion.version > after)
    return list(session.scalars(q))


def audit_for(session: Session, *, after: int | None = None, limit: int | None = None) -> list[AuditRecord]:
    return audit.history(session, AUDIT_TYPE, AUDIT_ID, after=after, limit=limit)


def get_run(session: Session, day: date) -> HealthRun | None:
    return session.get(HealthRun, day)


def claim_run(session: Session, day: date, now: datetime, version: int, *, finished: bool = False) -> bool:
    """Take the day's scoring: with two workers only one claims it (a replay claims a day
    ``finished``, scored in one go)."""
    t = HealthRun.__table__
    stmt = insert_on_conflict(session, t).on_conflict_do_nothing(index_elements=["day"]).returning(t.c.day)
    row = {"day": day, "started_at": now, "model_version": version, "result": {}, "cursor": None, "finished_at": now if finished else None}
    return bool(list(session.scalars(stmt, [row])))


def advance_run(
    session: Session, day: date, start: str | None, end: str | None, result: dict[str, Any], finished_at: datetime | None
) -> bool:
    """Move the unfinished day's cursor from ``start`` (where the chunk began) to ``end``
    (its last account), with the running result, and finish it with the last chunk. False
    (nothing changed) when the cursor is no longer ``start`` or the day is finished: another
    worker stored this chunk, and its scores must not be stored again."""
    at = HealthRun.cursor.is_(None) if start is None else HealthRun.cursor == start
    stmt = (
        update(HealthRun)
        .where(HealthRun.day == day, HealthRun.finished_at.is_(None), at)
        .values(cursor=end, result=result, finished_at=finished_at)
    )
    return rowcount(session.execute(stmt)) == 1


def record_run_result(session: Session, day: date, result: dict[str, Any]) -> None:
    """What the day's scoring did (accounts scored, old scores deleted, seconds)."""
    session.execute(update(HealthRun).where(HealthRun.day == day).values(result=result))
