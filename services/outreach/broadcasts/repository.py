"""Every query on broadcasts and their messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.outreach.models import Broadcast, Message

DUE_STATUSES = ("scheduled", "sending")


def get(session: Session, broadcast_id: str) -> Broadcast | None:
    return session.get(Broadcast, broadcast_id)


def list_broadcasts(session: Session, *, status: str | None, limit: int, after: str | None) -> list[Broadcast]:
    """Newest first (by creation, then id); ``after`` is the last id of the previous page."""
    q = select(Broadcast).order_by(Broadcast.created_at.desc(), Broadcast.id.desc()).limit(limit)
    if status:
        q = q.where(Broadcast.status == status)
    if after:
        anchor = session.get(Broadcast, after)
        if anchor is not None:
            q = q.where(
                (Broadcast.created_at < anchor.created_at) | ((Broadcast.created_at == anchor.created_at) & (Broadcast.id < anchor.id))
            )
    return list(session.scalars(q))


def due_ids(session: Session, now: datetime) -> list[str]:
    """Broadcasts to send now: scheduled ones whose time has come, and ones being sent
    (a chunk at a time), oldest send time first."""
    q = select(Broadcast.id).where(Broadcast.status.in_(DUE_STATUSES), Broadcast.send_at <= now).order_by(Broadcast.send_at, Broadcast.id)
    return list(session.scalars(q))


def claim(session: Session, broadcast_id: str, now: datetime) -> Broadcast | None:
    """The broadcast, locked for this transaction, if it is still due; None if it is not
    (sent, cancelled) or, on PostgreSQL, another worker is sending its next chunk right
    now (SKIP LOCKED). SQLite's writer lock serialises the workers anyway."""
    q = select(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.status.in_(DUE_STATUSES), Broadcast.send_at <= now)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return session.scalars(q.execution_options(populate_existing=True)).first()


def lock(session: Session, broadcast_id: str) -> Broadcast | None:
    """The broadcast, locked for this transaction (on PostgreSQL it waits for a chunk
    being sent to commit, so a cancel lands between two chunks, never inside one)."""
    q = select(Broadcast).where(Broadcast.id == broadcast_id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.scalars(q.execution_options(populate_existing=True)).first()


def withdraw_queued(session: Session, broadcast_id: str, now: datetime) -> int:
    """Its messages still waiting to leave become ``skipped`` with reason ``cancelled``
    (a sender's claim takes only ``queued`` rows, so a row is either withdrawn here or
    already being sent); returns how many."""
    q = (
        update(Message)
        .where(Message.broadcast_id == broadcast_id, Message.state == "queued")
        .values(state="skipped", skip_reason="cancelled", next_attempt_at=None, updated_at=now)
    )
    return int(session.execute(q).rowcount or 0)  # type: ignore[attr-defined]  # a CursorResult


def counts(session: Session, broadcast_id: str) -> list[tuple[str, str | None, int, int]]:
    """(state, skip reason, messages, distinct accounts) of a broadcast's messages."""
    q = (
        select(Message.state, Message.skip_reason, func.count(), func.count(func.distinct(Message.account_id)))
        .where(Message.broadcast_id == broadcast_id)
        .group_by(Message.state, Message.skip_reason)
    )
    return [(s, r, int(n), int(a)) for s, r, n, a in session.execute(q)]


def accounts_reached(session: Session, broadcast_id: str) -> int:
    q = select(func.count(func.distinct(Message.account_id))).where(Message.broadcast_id == broadcast_id)
    return int(session.scalar(q) or 0)


def first_message_at(session: Session, broadcast_id: str) -> datetime | None:
    return session.scalar(select(func.min(Message.created_at)).where(Message.broadcast_id == broadcast_id))


def as_dict(b: Broadcast) -> dict[str, Any]:
    return {
        "id": b.id,
        "name": b.name,
        "template": b.template_id,
        "segment_id": b.segment_id,
        "channel": b.channel,
        "to": list(b.to or []),
        "holdout_percent": b.holdout_percent,
        "send_at": b.send_at,
        "status": b.status,
        "progress": {"accounts_done": b.accounts_done, "chunks_done": b.chunks_done, "cursor": b.cursor},
        "created_by": b.created_by,
        "created_at": b.created_at,
        "started_at": b.started_at,
        "finished_at": b.finished_at,
        "cancelled_at": b.cancelled_at,
        "cancelled_by": b.cancelled_by,
    }
