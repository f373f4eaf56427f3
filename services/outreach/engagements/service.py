"""The CSM's work on an engagement: who may see it, accept, log a touch, add a note,
extend the time-box once, resolve with an outcome, or cancel. The API's and the
console's engagement actions call these; opening, assignment, the time-box and the
outcome each have their own module beside this one (transitions.py draws the state
machine).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.engagements import repository as repo
from services.outreach.engagements.assignment import reassign
from services.outreach.engagements.closing import close
from services.outreach.engagements.opening import NAMESPACE, open_engagement
from services.outreach.engagements.schemas import OpenIn
from services.outreach.engagements.timebox import next_reminder
from services.outreach.engagements.transitions import event, transition
from services.outreach.models import OPEN_ENGAGEMENT_STATUSES, Engagement, EngagementEvent
from shared import audit
from shared.auth import Principal
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable
from shared.settings import Settings


def visible_to(e: Engagement | None, principal: Principal, engagement_id: str) -> Engagement:
    """A CSM key reaches only its own engagements; ops and admin reach all."""
    if e is None:
        raise NotFound(f"no engagement {engagement_id!r}")
    if principal.role == "csm" and (principal.csm_id is None or e.csm_id != principal.csm_id):
        raise Forbidden("this engagement is not assigned to you")
    return e


def accept(session: Session, e: Engagement, *, actor: str, now: datetime) -> Engagement:
    transition(session, e, "active", actor=actor, now=now)
    e.accepted_at = now
    session.flush()
    return e


def require_open(e: Engagement, action: str) -> None:
    if e.status not in ("assigned", "active"):
        raise Conflict(f"engagement {e.id} is {e.status}; only an assigned or active engagement can {action}", code="engagement_not_open")


def log_touch(
    session: Session, e: Engagement, *, kind: str, user_id: str | None, summary: str, actor: str, now: datetime
) -> dict[str, Any]:
    """A CSM's touch is a row in the message ledger (channel ``csm``, state ``sent``):
    the contact policy counts it against the account's touch budget like an
    automated one, and the sender never picks it up."""
    require_open(e, "log touches")
    recipient = ""
    if user_id is not None:
        contact = next((u for u in ingest.users_by_role(session, e.account_id) if u.id == user_id), None)
        if contact is None:
            raise Unprocessable(f"no contact {user_id!r} in account {e.account_id!r}", code="unknown_contact")
        recipient = contact.email or ""
    n = len([x for x in repo.events_of(session, e.id) if x.kind == "touch"]) + 1
    mid = str(uuid.uuid5(NAMESPACE, f"{e.id}\x1ftouch\x1f{n}"))
    repo.insert_messages(
        session,
        [
            {
                "id": mid,
                "enrollment_id": None,
                "playbook_id": None,
                "step_id": "engagement.touch",
                "touch_key": f"engagement:{e.id}:touch:{n}",
                "account_id": e.account_id,
                "user_id": user_id,
                "channel": "csm",
                "recipient": recipient,
                "template_id": None,
                "subject": f"{kind}: {summary}"[:300],
                "html_body": "",
                "text_body": summary,
                "payload": {"engagement_id": e.id, "kind": kind, "csm_id": e.csm_id},
                "state": "sent",
                "skip_reason": None,
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": now,
            }
        ],
    )
    event(session, e, "touch", actor=actor, now=now, touch=kind, user_id=user_id, summary=summary, message_id=mid)
    e.updated_at = now
    session.flush()
    return {"message_id": mid, "kind": kind}


def add_note(session: Session, e: Engagement, *, text: str, actor: str, now: datetime) -> EngagementEvent:
    note = event(session, e, "note", actor=actor, now=now, text=text)
    e.updated_at = now
    session.flush()
    return note


def extend(session: Session, e: Engagement, *, days: float, reason: str, actor: str, now: datetime, settings: Settings) -> Engagement:
    require_open(e, "be extended")
    limit = settings.engagement_max_extension_days
    if days > limit:
        raise Unprocessable(f"an extension is at most {limit:g} days (set by CS Ops); {days:g} asked", code="extension_too_long")
    if e.extension_days:
        raise Conflict(f"engagement {e.id} was already extended by {e.extension_days:g} days; one extension each", code="already_extended")
    if e.due_at is None:
        raise Conflict(f"engagement {e.id} is {e.status} and has no time-box yet; extend it once it is assigned", code="no_time_box")
    e.extension_days = float(days)
    e.due_at = e.due_at + timedelta(days=days)
    e.next_reminder_at = next_reminder(e, settings, now)
    e.updated_at = now
    event(session, e, "extended", actor=actor, now=now, days=days, reason=reason, due_at=e.due_at)
    audit.record(
        session,
        actor=actor,
        action="extend",
        object_type="engagement",
        object_id=e.id,
        now=now,
        details={"days": days, "due_at": e.due_at.isoformat()},
    )
    session.flush()
    return e


def resolve(session: Session, e: Engagement, *, outcome: str, note: str, actor: str, now: datetime, settings: Settings) -> Engagement:
    require_open(e, "be resolved")
    transition(session, e, "resolved", actor=actor, now=now, outcome=outcome)
    if note:
        event(session, e, "note", actor=actor, now=now, text=note)
    close(session, e, now, settings, outcome=outcome)
    return e


def cancel(session: Session, e: Engagement, *, reason: str, actor: str, now: datetime, settings: Settings) -> Engagement:
    if e.status not in OPEN_ENGAGEMENT_STATUSES:
        raise Conflict(f"engagement {e.id} is {e.status}; only an open engagement can be cancelled", code="engagement_not_open")
    transition(session, e, "cancelled", actor=actor, now=now, reason=reason)
    close(session, e, now, settings, outcome="other")
    return e


def open_by_hand(session: Session, body: OpenIn, *, actor: str, now: datetime, settings: Settings) -> tuple[Engagement, bool]:
    """CS Ops opening an engagement by hand (``POST /v1/engagements``, the console's
    account page): a new one, or the account's open one for this goal with the note
    added. With ``csm_id`` it is assigned to that CSM now (who must be available, cover
    it and have room), else the pool assigns it. Returns it and whether it is new."""
    if body.csm_id is not None and repo.get_csm(session, body.csm_id) is None:
        raise Unprocessable(f"no CSM {body.csm_id!r} on the roster", code="unknown_csm")
    e, opened = open_engagement(
        session,
        account_id=body.account_id,
        goal=body.goal,
        actor=actor,
        now=now,
        settings=settings,
        skill=body.skill,
        priority_override=body.priority,
        time_box_days=body.time_box_days,
        title=body.title,
        note=body.note,
    )
    if not opened and body.note:
        add_note(session, e, text=body.note, actor=actor, now=now)
    if body.csm_id is not None and e.csm_id != body.csm_id:
        e = reassign(session, e, body.csm_id, actor=actor, now=now, settings=settings, reason="opened by hand")
    return e, opened
