"""The engagement state machine and its audited transitions.

State machine (docs/engagements.md draws it)::

    queued ──assign──▶ assigned ──accept──▶ active
      ▲                  │  │                 │ │
      └──── requeue ─────┘  └── reassign ─────┘ │
    queued/assigned/active ──cancel──▶ cancelled
    assigned/active ──resolve──▶ resolved     (the CSM's outcome)
    assigned/active ──due time─▶ expired      (the automatic outcome)
    held_out: escalation holdout, never open; measured at the end of its time-box

Every transition writes an ``engagement_events`` row (from, to, who, when) and an
audit record in the same transaction. Services only flush; the request, the batch
or the tick commits. :func:`event` writes the other events (notes, touches, reminders).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, overload

from sqlalchemy.orm import Session

from services.outreach.engagements import repository as repo
from services.outreach.models import Engagement, EngagementEvent
from shared import audit
from shared.errors import Conflict

TRANSITIONS: dict[str, set[str]] = {
    "queued": {"assigned", "cancelled"},
    "assigned": {"active", "assigned", "queued", "resolved", "expired", "cancelled"},
    "active": {"assigned", "queued", "resolved", "expired", "cancelled"},
}


def event(
    session: Session, e: Engagement, kind: str, *, actor: str, now: datetime, frm: str | None = None, to: str | None = None, **details: Any
) -> EngagementEvent:
    return repo.add_event(
        session, engagement_id=e.id, at=now, actor=actor, kind=kind, from_status=frm, to_status=to, details=jsonable(details)
    )


def transition(session: Session, e: Engagement, to: str, *, actor: str, now: datetime, **details: Any) -> None:
    frm = e.status
    if to not in TRANSITIONS.get(frm, set()):
        raise Conflict(f"engagement {e.id} is {frm}; it cannot become {to}", code="invalid_transition")
    e.status, e.updated_at = to, now
    event(session, e, "transition", actor=actor, now=now, frm=frm, to=to, **details)
    audit.record(
        session, actor=actor, action=to, object_type="engagement", object_id=e.id, now=now, details=jsonable({"from": frm, **details})
    )


@overload
def jsonable(obj: dict[str, Any]) -> dict[str, Any]: ...
@overload
def jsonable(obj: Any) -> Any: ...
def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    return obj
