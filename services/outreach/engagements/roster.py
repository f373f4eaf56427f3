"""The CSM roster: create or replace, change, read with current load.

Capacity may not drop below a CSM's open load (422: reassign first). Setting a CSM
away or inactive re-queues their open engagements and reassigns what can be."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.outreach.engagements import assignment
from services.outreach.engagements import repository as repo
from services.outreach.engagements.availability import available
from services.outreach.engagements.schemas import CsmIn, CsmOut, CsmPatch
from services.outreach.engagements.transitions import jsonable
from services.outreach.models import Csm
from shared import audit
from shared.errors import NotFound, Unprocessable
from shared.settings import Settings


def out(csm: Csm, load: int, now: datetime) -> CsmOut:
    return CsmOut(
        id=csm.id,
        name=csm.name,
        email=csm.email,
        timezone=csm.timezone,
        working_hours=csm.working_hours or {},
        capacity=csm.capacity,
        segments=list(csm.segments or []),
        skills=list(csm.skills or []),
        active=csm.active,
        away_from=csm.away_from,
        away_until=csm.away_until,
        available=available(csm, now),
        open_engagements=load,
        created_at=csm.created_at,
        updated_at=csm.updated_at,
    )


def _apply(session: Session, csm: Csm, fields: dict[str, Any], *, actor: str, now: datetime, settings: Settings, action: str) -> Csm:
    load = repo.open_load(session, [csm.id]).get(csm.id, 0)
    if "capacity" in fields and fields["capacity"] < load:
        raise Unprocessable(
            f"capacity {fields['capacity']} is below {csm.id}'s {load} open engagements; "
            "reassign some first (POST /v1/engagements/{id}/reassign)",
            code="capacity_below_load",
        )
    for k, v in fields.items():
        setattr(csm, k, v.model_dump() if hasattr(v, "model_dump") else v)
    csm.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="csm",
        object_id=csm.id,
        now=now,
        details=jsonable({k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in fields.items()}),
    )
    assignment.release_unavailable(session, csm, actor=actor, now=now, settings=settings)
    return csm


def put(session: Session, csm_id: str, body: CsmIn, *, actor: str, now: datetime, settings: Settings) -> Csm:
    roster = {c.id: c for c in repo.lock_roster(session)}
    csm = roster.get(csm_id)
    fields = body.model_dump()
    fields["working_hours"] = body.working_hours.model_dump()
    if csm is None:
        csm = Csm(id=csm_id, assign_seq=0, created_at=now, updated_at=now, **fields)
        session.add(csm)
        session.flush()
        audit.record(session, actor=actor, action="create", object_type="csm", object_id=csm_id, now=now, details=jsonable(fields))
        return csm
    return _apply(session, csm, fields, actor=actor, now=now, settings=settings, action="update")


def patch(session: Session, csm_id: str, body: CsmPatch, *, actor: str, now: datetime, settings: Settings) -> Csm:
    roster = {c.id: c for c in repo.lock_roster(session)}
    csm = roster.get(csm_id)
    if csm is None:
        raise NotFound(f"no CSM {csm_id!r}; create one with PUT /v1/csms/{csm_id}")
    fields = body.model_dump(exclude_unset=True)
    if "working_hours" in fields and body.working_hours is not None:
        fields["working_hours"] = body.working_hours.model_dump()
    return _apply(session, csm, fields, actor=actor, now=now, settings=settings, action="update")


def get_or_404(session: Session, csm_id: str) -> Csm:
    csm = repo.get_csm(session, csm_id)
    if csm is None:
        raise NotFound(f"no CSM {csm_id!r}")
    return csm


def preview_patch(session: Session, csm_id: str, body: CsmPatch, *, actor: str, now: datetime, settings: Settings) -> list[dict[str, Any]]:
    """What :func:`patch` would do to the CSM's open engagements, without doing it: the
    patch runs (requeue and reassignment included) inside a savepoint that is rolled
    back. One entry per engagement open with the CSM before: its id, account, goal, and
    its status and CSM after (``queued`` and None: back in the queue, nobody eligible)."""
    before = [(e.id, e.account_id, e.goal) for e in repo.open_of_csm(session, csm_id)]
    savepoint = session.begin_nested()
    try:
        patch(session, csm_id, body, actor=actor, now=now, settings=settings)
        after = {eid: repo.get(session, eid) for eid, _, _ in before}
        return [
            {
                "id": eid,
                "account_id": account_id,
                "goal": goal,
                "status": (e.status if (e := after[eid]) is not None else None),
                "csm_id": e.csm_id if e is not None else None,
            }
            for eid, account_id, goal in before
        ]
    finally:
        savepoint.rollback()
