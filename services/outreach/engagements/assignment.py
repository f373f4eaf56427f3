"""Assignment: recording who holds an engagement (:func:`assign`, :func:`requeue`) and
choosing the CSM (the assignment pass).

Eligible CSMs are active, outside any away window, cover the account's segment (or a
named segment it is in now) and the engagement's skill, and are under capacity. With ``TOUCHLINE_ENGAGEMENT_STICKY``
the CSM who last worked the account wins if eligible; otherwise the least loaded
(fewest open engagements) wins and ties go round robin (the lowest ``assign_seq``,
i.e. the one assigned longest ago). Queued engagements are taken highest priority
first, then oldest; those nobody can take stay queued and are assigned as soon as
capacity frees (the next pass).

Concurrency: the pass locks the whole roster (``SELECT ... FOR UPDATE`` in id order)
before it counts loads, and claims queued engagements with ``SKIP LOCKED``. Two
outreach workers therefore take turns on the roster: the second counts loads only
after the first has committed, so no CSM goes over capacity and no engagement is
assigned twice. Every other change to the roster or to who holds an engagement
takes the roster lock first too (lock order: CSMs, then engagements).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from services.outreach.engagements import notices
from services.outreach.engagements import repository as repo
from services.outreach.engagements.availability import available, covers
from services.outreach.engagements.timebox import next_reminder
from services.outreach.engagements.transitions import transition
from services.outreach.models import Csm, Engagement
from services.rules import interface as rules
from shared.errors import Conflict, Unprocessable
from shared.settings import Settings

ACTOR = "system:assignment"


def assign(
    session: Session,
    e: Engagement,
    csm: Csm,
    *,
    actor: str,
    now: datetime,
    settings: Settings,
    seq: int,
    reason: str,
    batch: notices.Notices | None = None,
) -> None:
    """``reason``: why this CSM (least_loaded, sticky, or CS Ops' own), always in the
    timeline. ``batch``: an assignment pass's notices, written once at its end."""
    previous = e.csm_id
    transition(session, e, "assigned", actor=actor, now=now, csm_id=csm.id, previous_csm_id=previous, reason=reason)
    e.csm_id, e.assigned_at = csm.id, now
    e.assignments = (e.assignments or 0) + 1
    if e.due_at is None:  # the time-box starts with the first assignment; a reassignment keeps it
        e.due_at = now + timedelta(days=e.time_box_days)
    e.next_reminder_at = next_reminder(e, settings, now)
    csm.assign_seq = seq
    notices.assigned(session, e, csm, now, settings, batch)


def requeue(session: Session, e: Engagement, *, actor: str, now: datetime, reason: str) -> None:
    transition(session, e, "queued", actor=actor, now=now, previous_csm_id=e.csm_id, reason=reason)
    e.csm_id, e.next_reminder_at = None, None


def choose(e: Engagement, pool: list[Csm], loads: dict[str, int], sticky_csm: str | None, named: Collection[str] = ()) -> Csm | None:
    """``named``: the named segments the engagement's account is in now."""
    candidates = [c for c in pool if covers(c, e, named) and loads.get(c.id, 0) < c.capacity]
    if not candidates:
        return None
    if sticky_csm is not None:
        for c in candidates:
            if c.id == sticky_csm:
                return c
    return min(candidates, key=lambda c: (loads.get(c.id, 0), c.assign_seq, c.id))


def assign_pending(session: Session, now: datetime, settings: Settings, limit: int | None = None, actor: str = ACTOR) -> int:
    """One assignment pass; returns how many engagements were assigned. ``actor``
    names the worker in the timeline and the audit log."""
    roster = repo.lock_roster(session)
    loads = repo.open_load(session)
    for c in roster:  # an away window that has begun since the last pass releases that CSM's work
        if loads.get(c.id) and not available(c, now):
            for e in repo.open_of_csm(session, c.id):
                requeue(session, e, actor=actor, now=now, reason=f"{c.id} is away" if c.active else f"{c.id} is inactive")
            loads.pop(c.id, None)
            session.flush()
    pool = [c for c in roster if available(c, now)]
    if not pool:
        return 0
    if all(loads.get(c.id, 0) >= c.capacity for c in pool):
        return 0
    seq = max((c.assign_seq for c in roster), default=0)
    assigned = 0
    claimed = repo.claim_queued(session, limit or settings.engagement_assign_batch)
    # Set-based: who last worked each account, the accounts and the notice template are
    # read once for the whole pass, and the notices are inserted in one statement at its
    # end (the loop itself issues no query; the flush writes the rest in batches).
    accounts = [e.account_id for e in claimed]
    last_csm = repo.last_csm_for_accounts(session, accounts) if settings.engagement_sticky and claimed else {}
    # Named segments count only where a CSM covers some segments: then one read for the pass.
    named = rules.segment_memberships(session, accounts) if claimed and any(c.segments for c in pool) else {}
    batch = notices.Notices(session, settings)
    batch.prefetch_accounts(accounts)
    for e in claimed:
        sticky = last_csm.get(e.account_id)
        csm = choose(e, pool, loads, sticky, named.get(e.account_id, ()))
        if csm is None:
            continue
        seq += 1
        assign(
            session,
            e,
            csm,
            actor=actor,
            now=now,
            settings=settings,
            seq=seq,
            reason="sticky" if csm.id == sticky else "least_loaded",
            batch=batch,
        )
        loads[csm.id] = loads.get(csm.id, 0) + 1
        last_csm[e.account_id] = csm.id  # a second engagement of the account in this pass sticks to it
        assigned += 1
        if all(loads.get(c.id, 0) >= c.capacity for c in pool):
            break
    batch.flush()
    session.flush()
    return assigned


def reassign(
    session: Session, e: Engagement, csm_id: str | None, *, actor: str, now: datetime, settings: Settings, reason: str
) -> Engagement:
    """CS Ops moving an engagement: to a named CSM (who must be available, cover it and
    have room), or back to the queue (``csm_id`` None)."""
    roster = {c.id: c for c in repo.lock_roster(session)}
    locked = repo.get(session, e.id, lock=True)
    assert locked is not None  # engagements are never deleted
    e = locked
    if e.status not in ("queued", "assigned", "active"):
        raise Conflict(f"engagement {e.id} is {e.status}; only an open engagement can be reassigned", code="engagement_not_open")
    if csm_id is None:
        if e.status != "queued":
            requeue(session, e, actor=actor, now=now, reason=reason or "reassigned by CS Ops")
        session.flush()
        return e
    csm = roster.get(csm_id)
    if csm is None:
        raise Unprocessable(f"no CSM {csm_id!r} on the roster", code="unknown_csm")
    if not available(csm, now):
        raise Unprocessable(f"CSM {csm_id!r} is away or inactive", code="csm_unavailable")
    named = rules.segment_memberships(session, [e.account_id]).get(e.account_id, set()) if csm.segments else set()
    if not covers(csm, e, named):
        raise Unprocessable(
            f"CSM {csm_id!r} does not cover segment {e.segment!r}{''.join(f' / {n!r}' for n in sorted(named))} / skill {e.skill!r}",
            code="csm_does_not_cover",
        )
    if e.csm_id == csm_id:
        return e
    load = repo.open_load(session, [csm_id]).get(csm_id, 0)
    if load >= csm.capacity:
        raise Unprocessable(f"CSM {csm_id!r} is at capacity ({load} of {csm.capacity} open)", code="csm_at_capacity")
    seq = max((c.assign_seq for c in roster.values()), default=0) + 1
    assign(session, e, csm, actor=actor, now=now, settings=settings, seq=seq, reason=reason or "by CS Ops")
    session.flush()
    return e


def release_unavailable(session: Session, csm: Csm, *, actor: str, now: datetime, settings: Settings) -> int:
    """A CSM set away or inactive: their open engagements go back to the queue and are
    reassigned at once where someone else is eligible. The caller holds the roster lock."""
    if available(csm, now):
        return 0
    moved = repo.open_of_csm(session, csm.id)
    for e in moved:
        requeue(session, e, actor=actor, now=now, reason=f"{csm.id} is away" if csm.active else f"{csm.id} is inactive")
    session.flush()
    if moved:
        assign_pending(session, now, settings)
    return len(moved)
