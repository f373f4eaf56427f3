"""The audit trail of authored outreach objects (templates, playbooks, suppressions)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from shared.models import AuditRecord


def record(session: Session, *, actor: str, action: str, object_type: str, object_id: str, now: datetime,
           version: int | None = None, details: dict | None = None) -> None:
    session.add(AuditRecord(at=now, actor=actor, action=action, object_type=object_type, object_id=object_id,
                            version=version, details=details or {}))
