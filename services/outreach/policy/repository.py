"""Every query of the contact policy: suppressions, frequency-cap counts, erasure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from services.outreach.models import Engagement, EngagementEvent, Enrollment, Message, Suppression
from shared.db import is_in, rowcount, upsert
from shared.privacy import ERASED, contains_any, scrub

# "csm" rows are touches a CSM logged on an engagement: one budget for machines and people.
CUSTOMER_CHANNELS = ("email", "inapp", "csm")
COUNTED_STATES = ("queued", "sending", "sent")
_CHUNK = 900


def suppressed(session: Session, hashes: Iterable[str]) -> set[str]:
    hashes = sorted(set(hashes))
    out: set[str] = set()
    for i in range(0, len(hashes), _CHUNK):
        out.update(session.scalars(select(Suppression.email_hash).where(is_in(session, Suppression.email_hash, hashes[i : i + _CHUNK]))))
    return out


def add_suppression(session: Session, *, email_hash: str, email: str | None, reason: str, detail: str, now: datetime) -> None:
    # The first reason is kept: an address that bounced and was later unsubscribed is still a bounce.
    upsert(
        session,
        Suppression.__table__,
        [{"email_hash": email_hash, "email": email, "reason": reason, "detail": detail, "created_at": now}],
        ["email_hash"],
    )


def remove_suppression(session: Session, email_hash: str) -> bool:
    return rowcount(session.execute(delete(Suppression).where(Suppression.email_hash == email_hash))) > 0


def get_suppression(session: Session, email_hash: str) -> Suppression | None:
    return session.get(Suppression, email_hash)


def list_suppressions(session: Session, *, reason: str | None, limit: int, after: str | None) -> list[Suppression]:
    q = select(Suppression).order_by(Suppression.email_hash).limit(limit)
    if reason:
        q = q.where(Suppression.reason == reason)
    if after:
        q = q.where(Suppression.email_hash > after)
    return list(session.scalars(q))


def _counted(session: Session, account_ids: list[str], since: datetime, playbook_id: str | None) -> list[Any]:
    conds = [
        is_in(session, Message.account_id, account_ids),
        Message.created_at >= since,
        Message.channel.in_(CUSTOMER_CHANNELS),
        Message.state.in_(COUNTED_STATES),
        Message.audience == "customer",
    ]
    if playbook_id is not None:
        conds.append(Message.playbook_id == playbook_id)
    return conds


def contact_messages(
    session: Session, account_ids: Iterable[str], since: datetime, playbook_id: str | None = None
) -> dict[tuple[str, str], int]:
    """(account, user) -> messages counted against the contact cap since ``since``, for
    every contact of ``account_ids`` that has one (one statement per chunk)."""
    ids, out = sorted(set(account_ids)), dict[tuple[str, str], int]()
    for i in range(0, len(ids), _CHUNK):
        q = (
            select(Message.account_id, Message.user_id, func.count())
            .where(*_counted(session, ids[i : i + _CHUNK], since, playbook_id), Message.user_id.is_not(None))
            .group_by(Message.account_id, Message.user_id)
        )
        out.update({(a, u): n for a, u, n in session.execute(q) if u is not None})
    return out


def account_touches(session: Session, account_ids: Iterable[str], since: datetime, playbook_id: str | None = None) -> dict[str, int]:
    """account -> touches (distinct ``touch_key``) counted against the account cap since
    ``since``, for every account of ``account_ids`` that has one."""
    ids, out = sorted(set(account_ids)), {}
    for i in range(0, len(ids), _CHUNK):
        q = (
            select(Message.account_id, func.count(func.distinct(Message.touch_key)))
            .where(*_counted(session, ids[i : i + _CHUNK], since, playbook_id))
            .group_by(Message.account_id)
        )
        out.update({a: n for a, n in session.execute(q)})
    return out


def message_addresses(session: Session, account_id: str, user_id: str) -> set[str]:
    """The addresses the contact's email messages went to."""
    return {
        r
        for r in session.scalars(
            select(Message.recipient).where(Message.account_id == account_id, Message.user_id == user_id, Message.channel == "email")
        )
        if r and r != ERASED
    }


_MESSAGE_TEXT = ("recipient", "subject", "html_body", "text_body", "last_error")


def scrub_messages(session: Session, account_id: str, user_id: str, identifiers: list[str], now: datetime) -> int:
    """Erasure: blank the contact's messages (recipient, content, payload), and any other
    message of the account that carries one of ``identifiers`` (the owner address may be
    the contact's). Returns how many messages were scrubbed."""
    blank: dict[str, Any] = {
        "recipient": ERASED,
        "subject": "",
        "html_body": "",
        "text_body": "",
        "payload": {},
        "last_error": None,
        "updated_at": now,
    }
    scrubbed = rowcount(
        session.execute(update(Message).where(Message.account_id == account_id, Message.user_id == user_id).values(**blank))
    )
    others = select(Message).where(Message.account_id == account_id, or_(Message.user_id.is_(None), Message.user_id != user_id))
    for m in session.scalars(others):
        if any(contains_any(getattr(m, c) or "", identifiers) for c in _MESSAGE_TEXT) or scrub(m.payload or {}, identifiers)[1]:
            for k, v in blank.items():
                setattr(m, k, v)
            if m.state == "queued":
                m.state, m.skip_reason, m.next_attempt_at = "skipped", "erased", None
            scrubbed += 1
    # What was still waiting to go out can no longer go: say so, rather than fail it at send time.
    session.execute(
        update(Message)
        .where(Message.account_id == account_id, Message.user_id == user_id, Message.state == "queued")
        .values(state="skipped", skip_reason="erased", next_attempt_at=None, updated_at=now)
    )
    return scrubbed


def forget_suppressed_addresses(session: Session, hashes: Iterable[str]) -> None:
    """Keep suppressions of these hashes but drop the plain address they may carry."""
    hashes = list(set(hashes))
    if hashes:
        session.execute(update(Suppression).where(Suppression.email_hash.in_(hashes)).values(email=None))


def scrub_enrollments(session: Session, account_id: str, identifiers: list[str]) -> int:
    """Erasure: the account's enrolments keep a copy of their signal and a step history."""
    changed = 0
    for e in session.scalars(select(Enrollment).where(Enrollment.account_id == account_id)):
        signal, hit_signal = scrub(e.signal or {}, identifiers)
        history, hit_history = scrub(e.history or [], identifiers)
        detail, hit_detail = scrub(e.outcome_detail or {}, identifiers)
        if hit_signal or hit_history or hit_detail:
            e.signal, e.history, e.outcome_detail = signal, history, detail
            changed += 1
    return changed


def scrub_engagements(session: Session, account_id: str, identifiers: list[str]) -> int:
    """Erasure: the account's engagements keep the signal, its evidence and what
    automation tried (``reason``), and a timeline of notes and touches. Scrub every value
    containing one of ``identifiers``. Returns the rows changed."""
    changed = 0
    engagements = list(session.scalars(select(Engagement).where(Engagement.account_id == account_id)))
    for e in engagements:
        hit = False
        for attr in ("title", "reason", "priority_detail", "measured"):
            value, c = scrub(getattr(e, attr), identifiers)
            if c:
                setattr(e, attr, value)
                hit = True
        changed += hit
    ids = [e.id for e in engagements]
    if ids:
        for ev in session.scalars(select(EngagementEvent).where(EngagementEvent.engagement_id.in_(ids))):
            details, c = scrub(ev.details or {}, identifiers)
            if c:
                ev.details = details
                changed += 1
    return changed
