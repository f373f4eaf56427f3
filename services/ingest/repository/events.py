"""The stored raw events: which ids ingest has committed, an account's latest and recent
events, events by name over a time range, and the events that carry a contact's data."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, or_, select
from sqlalchemy.orm import Session

from services.ingest.models import RawEvent, UsageDaily
from services.ingest.repository.chunks import CHUNK, AccountRange, chunks, in_
from services.ingest.snapshots import StoredEvent
from shared.db import is_in

_STORED_EVENT = tuple(getattr(RawEvent, f) for f in StoredEvent.__dataclass_fields__)


def _event(row: Row[Any]) -> StoredEvent:
    return StoredEvent(**{**row._asdict(), "properties": dict(row.properties or {})})


def ingested_event_ids(session: Session, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` ingest has committed (the rules worker waits for them)."""
    out: set[str] = set()
    for i in range(0, len(event_ids), CHUNK):
        out.update(session.scalars(select(RawEvent.event_id).where(is_in(session, RawEvent.event_id, event_ids[i : i + CHUNK]))))
    return out


def latest_events(session: Session, account_id: str, names: list[str], limit: int = 1) -> list[StoredEvent]:
    q = (
        select(*_STORED_EVENT)
        .where(RawEvent.account_id == account_id, RawEvent.name.in_(names), RawEvent.type == "track")
        .order_by(RawEvent.timestamp.desc())
        .limit(limit)
    )
    return [_event(r) for r in session.execute(q)]


def events_between(
    session: Session, names: list[str], start: datetime, end: datetime, accounts: list[str] | None = None
) -> list[StoredEvent]:
    """The stored track events named ``names`` in [start, end), in time order, of
    ``accounts`` (None: every account; a backtest's chunk reads its own accounts' only)."""
    out: list[StoredEvent] = []
    for part in chunks(accounts):
        q = select(*_STORED_EVENT).where(
            RawEvent.name.in_(names),
            RawEvent.type == "track",
            RawEvent.timestamp >= start,
            RawEvent.timestamp < end,
            in_(RawEvent.account_id, part),
        )
        out += [_event(r) for r in session.execute(q.order_by(RawEvent.timestamp))]
    if accounts is not None and len(accounts) > CHUNK and not isinstance(accounts, AccountRange):
        out.sort(key=lambda e: e.timestamp)  # the parts' events, merged in time order
    return out


def accounts_with_events(session: Session, names: list[str], day: date, accounts: list[str] | None = None) -> set[str]:
    """The accounts (of ``accounts``, or all) with a daily rollup of one of ``names`` on ``day``."""
    t = UsageDaily
    out: set[str] = set()
    for part in chunks(accounts):
        out.update(session.scalars(select(t.account_id).where(t.event_name.in_(names), t.day == day, in_(t.account_id, part)).distinct()))
    return out


def recent_events(session: Session, account_id: str, limit: int) -> list[RawEvent]:
    q = select(RawEvent).where(RawEvent.account_id == account_id).order_by(RawEvent.timestamp.desc(), RawEvent.event_id.desc()).limit(limit)
    return list(session.scalars(q))


def events_of_contact(session: Session, account_id: str, user_id: str) -> list[RawEvent]:
    """The rows erasure scrubs: the contact's own events and the account's events of
    other types than track (identify and group calls carry traits)."""
    own = select(RawEvent).where(RawEvent.account_id == account_id, or_(RawEvent.user_id == user_id, RawEvent.type != "track"))
    return list(session.scalars(own))
