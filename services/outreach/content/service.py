"""Saving, reading and removing resources; every change is audited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from services.outreach.content import repository as repo
from services.outreach.content.schemas import ResourceIn
from services.outreach.models import Resource
from shared import audit
from shared.errors import NotFound

FIELDS = tuple(ResourceIn.model_fields)


def definition_of(row: Resource) -> dict[str, object]:
    return {f: getattr(row, f) for f in FIELDS}


def save(session: Session, resource_id: str, body: ResourceIn, *, actor: str, now: datetime) -> tuple[Resource, str]:
    """Create or update; an unchanged definition is a no-op. Returns the row and what
    happened: created, updated or unchanged."""
    wanted = body.model_dump()
    row = repo.get(session, resource_id)
    if row is not None and definition_of(row) == wanted:
        return row, "unchanged"
    action = "update"
    if row is None:
        row = Resource(id=resource_id, version=0, created_at=now)
        session.add(row)
        action = "create"
    for field, value in wanted.items():
        setattr(row, field, value)
    row.version = (row.version or 0) + 1
    row.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="resource",
        object_id=resource_id,
        now=now,
        version=row.version,
        details={"title": row.title, "url": row.url},
    )
    return row, f"{action}d"


def get_or_404(session: Session, resource_id: str) -> Resource:
    row = repo.get(session, resource_id)
    if row is None:
        raise NotFound(f"no resource {resource_id!r}; create it with PUT /v1/resources/{resource_id}")
    return row


def delete(session: Session, resource_id: str, *, actor: str, now: datetime) -> None:
    """Remove it from the library. Messages that sent it keep its id (and its title and
    URL in their reasons), so a contact who received it still never gets it again."""
    row = get_or_404(session, resource_id)
    details = {"title": row.title, "url": row.url}
    repo.remove(session, resource_id)
    audit.record(session, actor=actor, action="delete", object_type="resource", object_id=resource_id, now=now, details=details)
