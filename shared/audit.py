"""The audit trail: who changed which rule, template, playbook or suppression, and when.
Services call :func:`record` inside the transaction that makes the change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import AuditRecord


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    now: datetime,
    version: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditRecord:
    row = AuditRecord(
        at=now, actor=actor, action=action, object_type=object_type, object_id=object_id, version=version, details=details or {}
    )
    session.add(row)
    return row


def history(session: Session, object_type: str, object_id: str, *, after: int | None = None, limit: int | None = None) -> list[AuditRecord]:
    q = (
        select(AuditRecord)
        .where(AuditRecord.object_type == object_type, AuditRecord.object_id == object_id)
        .order_by(AuditRecord.id)
        .limit(limit)
    )
    if after is not None:
        q = q.where(AuditRecord.id > after)
    return list(session.scalars(q))
