"""Every query on the health model's versions and its audit trail (the scores are in
:mod:`services.rules.scores.repository`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.rules.models import HealthModelVersion, HealthRun
from shared import audit
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


def get_run(session: Session, day) -> HealthRun | None:
    return session.get(HealthRun, day)
