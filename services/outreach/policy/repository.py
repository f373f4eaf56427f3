"""Every query of the contact policy: suppressions, frequency-cap counts, erasure."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from services.ingest.models import User
from services.outreach.models import Message, Suppression
from shared.db import upsert

# "csm" rows are touches a CSM logged on an engagement: one budget for machines and people.
CUSTOMER_CHANNELS = ("email", "inapp", "csm")
COUNTED_STATES = ("queued", "sending", "sent")


def suppressed(session: Session, hashes: Iterable[str]) -> set[str]:
    hashes = list(set(hashes))
    if not hashes:
        return set()
    return set(session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(hashes))))


def add_suppression(session: Session, *, email_hash: str, email: str | None, reason: str, detail: str, now: datetime) -> None:
    # The first reason is kept: an address that bounced and was later unsubscribed is still a bounce.
    upsert(session, Suppression.__table__,
           [{"email_hash": email_hash, "email": email, "reason": reason, "detail": detail, "created_at": now}], ["email_hash"])


def remove_suppression(session: Session, email_hash: str) -> bool:
    return session.execute(delete(Suppression).where(Suppression.email_hash == email_hash)).rowcount > 0


def get_suppression(session: Session, email_hash: str) -> Suppression | None:
    return session.get(Suppression, email_hash)


def list_suppressions(session: Session, *, reason: str | None, limit: int, after: str | None) -> list[Suppression]:
    q = select(Suppression).order_by(Suppression.email_hash).limit(limit)
    if reason:
        q = q.where(Suppression.reason == reason)
    if after:
        q = q.where(Suppression.email_hash > after)
    return list(session.scalars(q))


def contact_messages_since(session: Session, account_id: str, user_id: str, since: datetime,
                           playbook_id: str | None = None) -> int:
    q = select(func.count()).select_from(Message).where(
        Message.account_id == account_id, Message.user_id == user_id, Message.created_at >= since,
        Message.channel.in_(CUSTOMER_CHANNELS), Message.state.in_(COUNTED_STATES))
    if playbook_id is not None:
        q = q.where(Message.playbook_id == playbook_id)
    return session.scalar(q) or 0


def account_touches_since(session: Session, account_id: str, since: datetime, playbook_id: str | None = None) -> int:
    q = select(func.count(func.distinct(Message.touch_key))).where(
        Message.account_id == account_id, Message.created_at >= since,
        Message.channel.in_(CUSTOMER_CHANNELS), Message.state.in_(COUNTED_STATES))
    if playbook_id is not None:
        q = q.where(Message.playbook_id == playbook_id)
    return session.scalar(q) or 0


def erase_contact(session: Session, account_id: str, user_id: str, now: datetime) -> tuple[str | None, int]:
    """Scrub a contact's personal data from users and messages; return the address it had
    (for suppression) and how many messages were scrubbed."""
    user = session.get(User, (account_id, user_id))
    email = user.email if user else None
    if user is not None:
        user.email, user.name, user.traits, user.updated_at = None, None, {"erased": True}, now
    emails = {email} if email else set()
    emails |= set(session.scalars(select(Message.recipient).where(
        Message.account_id == account_id, Message.user_id == user_id, Message.channel == "email")))
    scrubbed = session.execute(update(Message).where(Message.account_id == account_id, Message.user_id == user_id).values(
        recipient="erased", subject="", html_body="", text_body="", payload={}, updated_at=now)).rowcount
    # What was still waiting to go out can no longer go: say so, rather than fail it at send time.
    session.execute(update(Message).where(Message.account_id == account_id, Message.user_id == user_id,
                                          Message.state == "queued").values(
        state="skipped", skip_reason="erased", next_attempt_at=None, updated_at=now))
    return (sorted(e for e in emails if e and e != "erased") or [None])[0], scrubbed
