"""A generic transactional outbox: anything that must leave the process after a DB
change (a signal to Kafka, a message to a channel) is a row written in the same
transaction; :func:`relay` publishes unsent rows and marks them sent.

Delivery is at least once: a crash between the broker's ack and the ``sent_at``
update republishes the row. Keys and payloads are deterministic (the signal_id is in
the payload), so consumers deduplicate. Rows are relayed in id order, so per-key
order is kept. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several relays run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, LargeBinary, String, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from shared.db import Base, JSONType, UTCDateTime, insert_many, transaction
from shared.privacy import ERASED, needles_of
from shared.privacy import scrub as privacy_scrub

log = logging.getLogger(__name__)


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(JSONType, default=list)  # [[name, text], ...]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


def enqueue_many(session: Session, messages: list[dict[str, Any]], now: datetime) -> None:
    """Add messages to the caller's transaction in one statement (never commits): dicts
    with topic, key, value and optional headers."""
    if not messages:
        return
    insert_many(
        session,
        OutboxMessage.__table__,
        [
            {
                "topic": m["topic"],
                "key": m.get("key"),
                "value": m["value"],
                "headers": sorted((m.get("headers") or {}).items()),
                "created_at": now,
                "sent_at": None,
                "attempts": 0,
            }
            for m in messages
        ],
        binary=True,  # every value is of its column's type
    )


def pending_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))) or 0


def pending_stats(session: Session) -> tuple[int, datetime | None]:
    """How many rows are unsent, and when the oldest of them was written (one query on
    the ``ix_outbox_pending`` index)."""
    count, oldest = session.execute(select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))).one()
    return count or 0, oldest


def relay(session_factory: sessionmaker[Session], producer: Any, now: datetime, limit: int = 500, timeout: float = 30.0) -> int:
    """Publish up to ``limit`` unsent messages, wait for the acks, mark them sent.
    Returns how many were sent. Raises (leaving the rows unsent) if the broker fails."""
    with transaction(session_factory) as session:
        q = select(OutboxMessage).where(OutboxMessage.sent_at.is_(None)).order_by(OutboxMessage.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = list(session.scalars(q))
        if not rows:
            return 0
        futures = [producer.send(r.topic, key=r.key, value=r.value, headers=[(k, v.encode()) for k, v in (r.headers or [])]) for r in rows]
        producer.flush(timeout=timeout)
        for f in futures:
            f.get(timeout=timeout)  # raises if the broker refused: nothing is marked sent
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])).values(sent_at=now, attempts=OutboxMessage.attempts + 1)
        )
        return len(rows)


def prune_sent(session: Session, before: datetime, limit: int = 10_000) -> int:
    ids = list(session.scalars(select(OutboxMessage.id).where(OutboxMessage.sent_at < before).limit(limit)))
    if ids:
        session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(ids)))
    return len(ids)


def scrub(session: Session, needles: list[str]) -> int:
    """Erasure: replace every JSON string containing one of ``needles`` in the stored
    payloads (sent or not: sent rows are kept a week). Returns how many rows changed."""
    found = needles_of(needles)
    if not found:
        return 0
    changed = 0
    for row in session.scalars(select(OutboxMessage).execution_options(yield_per=1000)):
        low = row.value.lower()
        if not any(n.encode() in low for n in found):
            continue
        try:
            payload, _ = privacy_scrub(json.loads(row.value), found)
            row.value = json.dumps(payload).encode()
        except ValueError:  # not JSON: nothing to keep
            row.value = json.dumps({ERASED: True}).encode()
        changed += 1
    return changed


# Sent rows are kept a week for inspection, then pruned hourly by the rules worker.
SENT_RETENTION = timedelta(days=7)
