"""Every query on the message outbox."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from services.outreach.models import Broadcast, Message
from shared.db import insert_absent, insert_new, rowcount
from shared.pagination import sorted_after

SENDABLE_CHANNELS = ("email", "webhook")


def insert_messages(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert outbox rows; the ids already present are left alone (idempotent redo).
    Returns the ids that were new."""
    return insert_new(session, Message.__table__, rows, ["id"], binary=True)


def insert_messages_of_new(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """:func:`insert_messages` for the rows of enrolments this transaction has just
    inserted: none of their ids can exist (an id derives from its enrolment's, and
    enrolments are never deleted: erasure scrubs them in place), so a large batch is
    loaded straight into the table (:func:`shared.db.insert_absent`). Returns the ids
    that were new."""
    return insert_absent(session, Message.__table__, rows, "id", binary=True)


def claim_due(session: Session, *, now: datetime, limit: int, owner: str, lease_until: datetime, token: str) -> list[Message]:
    """Mark up to ``limit`` due queued messages ``sending`` under a lease and the claim's
    fencing ``token``. On PostgreSQL the rows are locked with SKIP LOCKED so several
    senders share the work; SQLite's writer lock (BEGIN IMMEDIATE) serialises claimers anyway."""
    q = (
        select(Message)
        .where(Message.state == "queued", Message.channel.in_(SENDABLE_CHANNELS), Message.next_attempt_at <= now)
        .order_by(Message.next_attempt_at, Message.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":  # pragma: no mutate (as below: on SQLite only equivalent mutants)
        q = q.with_for_update(skip_locked=True)  # pragma: no mutate (PostgreSQL only: make mutation runs on SQLite)
    rows = list(session.scalars(q))
    if rows:
        # One statement for the batch (not one UPDATE per row): this is the sender's hot path.
        session.execute(
            update(Message)
            .where(Message.id.in_([m.id for m in rows]))
            .values(
                state="sending",
                lease_owner=owner,
                lease_until=lease_until,
                lease_token=token,
                attempts=Message.attempts + 1,
                updated_at=now,
            ),
            execution_options={"synchronize_session": False},
        )
        for m in rows:
            m.state, m.lease_owner, m.lease_until, m.lease_token, m.updated_at = "sending", owner, lease_until, token, now
            m.attempts += 1
        for m in rows:
            session.expunge(m)  # the in-memory copies match the row; keep the ORM from re-flushing them
    return rows


def _held(token: str) -> ColumnElement[bool]:
    return (Message.lease_token == token) & (Message.state == "sending")


def _write_held(session: Session, ids: list[str], token: str, **values: Any) -> int:
    """Write ``values`` to the rows among ``ids`` that the claim ``token`` still holds;
    returns how many it wrote."""
    if not ids:
        return 0
    return rowcount(
        session.execute(
            update(Message).where(Message.id.in_(ids), _held(token)).values(**values), execution_options={"synchronize_session": False}
        )
    )


def renew_lease(session: Session, *, token: str, lease_until: datetime) -> int:
    """Extend the lease of every row the claim ``token`` still holds; returns how many.
    Fewer than were claimed means another sender took some over: the claim is lost."""
    return rowcount(
        session.execute(
            update(Message).where(_held(token)).values(lease_until=lease_until), execution_options={"synchronize_session": False}
        )
    )


def mark_sent(session: Session, ids: list[str], now: datetime, token: str) -> int:
    """Record ``ids`` as sent if the claim ``token`` still holds them; returns how many it did."""
    return _write_held(
        session,
        ids,
        token,
        state="sent",
        sent_at=now,
        last_error=None,
        lease_owner=None,
        lease_until=None,
        lease_token=None,
        next_attempt_at=None,
        updated_at=now,
    )


def cancelled_broadcasts(session: Session, broadcast_ids: set[str]) -> set[str]:
    """Which of ``broadcast_ids`` are cancelled (checked at claim time: a message its sender
    put back, or queued for a retry, after the cancel withdrew the queued ones)."""
    if not broadcast_ids:
        return set()
    return set(session.scalars(select(Broadcast.id).where(Broadcast.id.in_(broadcast_ids), Broadcast.status == "cancelled")))


def held_by(session: Session, ids: Iterable[str], token: str) -> list[Message]:
    """The rows among ``ids`` the claim ``token`` still holds (the others were taken over)."""
    ids = list(ids)
    return list(session.scalars(select(Message).where(Message.id.in_(ids), _held(token)))) if ids else []


def release(session: Session, ids: list[str], now: datetime, token: str) -> int:
    """Put back claimed rows that were never attempted (the sender stopped early)."""
    return _write_held(
        session,
        ids,
        token,
        state="queued",
        next_attempt_at=now,
        attempts=Message.attempts - 1,
        lease_owner=None,
        lease_until=None,
        lease_token=None,
        updated_at=now,
    )


def due_backlog(session: Session, now: datetime) -> tuple[int, datetime | None]:
    """How many sendable messages are queued and due, and the earliest due time among
    them (one query on ``ix_messages_state_due``). Messages deferred to later (backoff,
    quiet hours) are not backlog."""
    count, earliest = session.execute(
        select(func.count(), func.min(Message.next_attempt_at)).where(
            Message.state == "queued", Message.channel.in_(SENDABLE_CHANNELS), Message.next_attempt_at <= now
        )
    ).one()
    return count or 0, earliest


def stale_sending(session: Session, *, now: datetime, owner: str) -> list[Message]:
    """Messages left ``sending`` by a process that died: our own previous incarnation
    (same owner id, which only one live process can hold) at once, anyone else's once
    their lease has run out. Locked on PostgreSQL, so a renewal racing this recovery
    waits and then finds its token gone."""
    q = select(Message).where(Message.state == "sending", or_(Message.lease_owner == owner, Message.lease_until < now))
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def get_many(session: Session, ids: Iterable[str]) -> list[Message]:
    ids = list(ids)
    return list(session.scalars(select(Message).where(Message.id.in_(ids)))) if ids else []


def get(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


def _where(
    q: Any,
    *,
    state: str | None = None,
    account_id: str | None = None,
    playbook_id: str | None = None,
    channel: str | None = None,
    enrollment_id: str | None = None,
    skip_reason: str | None = None,
    since: datetime | None = None,
    resource_id: str | None = None,
    survey_id: str | None = None,
    broadcast_id: str | None = None,
) -> Any:
    """The message list's filters, one definition for the list and its count."""
    for col, value in (
        (Message.resource_id, resource_id),
        (Message.broadcast_id, broadcast_id),
        (Message.state, state),
        (Message.account_id, account_id),
        (Message.playbook_id, playbook_id),
        (Message.channel, channel),
        (Message.enrollment_id, enrollment_id),
        (Message.skip_reason, skip_reason),
    ):
        if value is not None:
            q = q.where(col == value)
    if since is not None:
        q = q.where(Message.created_at >= since)
    if survey_id is not None:
        q = q.where(asks_survey(survey_id))
    return q


def asks_survey(survey_id: str) -> Any:
    """A message of a survey step for ``survey_id`` (its payload's ``survey.id``: sent,
    or skipped, e.g. held out)."""
    return Message.payload[("survey", "id")].as_string() == survey_id


def count_messages(session: Session, **filters: Any) -> int:
    """How many messages :func:`list_messages` pages through with the same filters."""
    return int(session.scalar(_where(select(func.count()).select_from(Message), **filters)) or 0)


# The messages list's sortable columns (the console's table headings).
MESSAGE_SORTS: dict[str, Any] = {
    "created": Message.created_at,
    "channel": Message.channel,
    "state": Message.state,
    "account": Message.account_id,
    "recipient": Message.recipient,
    "subject": Message.subject,
    "playbook": Message.playbook_id,
}


def list_messages(
    session: Session,
    *,
    state: str | None,
    account_id: str | None,
    playbook_id: str | None,
    channel: str | None,
    enrollment_id: str | None,
    limit: int,
    before: str | None,
    skip_reason: str | None = None,
    since: datetime | None = None,
    resource_id: str | None = None,
    survey_id: str | None = None,
    broadcast_id: str | None = None,
    sort: str = "created",
    descending: bool = True,
) -> list[Message]:
    """Newest first, or by ``sort`` (a key of :data:`MESSAGE_SORTS`, the console's
    sortable headings) either way, ties by id (shared/pagination.py ``sorted_after``);
    ``before`` is the id of the previous page's last message (an unknown one: page one)."""
    column = MESSAGE_SORTS.get(sort, Message.created_at)
    q = select(Message).limit(limit)
    q = _where(
        q,
        resource_id=resource_id,
        survey_id=survey_id,
        broadcast_id=broadcast_id,
        state=state,
        account_id=account_id,
        playbook_id=playbook_id,
        channel=channel,
        enrollment_id=enrollment_id,
        skip_reason=skip_reason,
        since=since,
    )
    row = session.get(Message, before) if before else None
    anchor = (getattr(row, column.key), row.id) if row is not None else None
    return list(session.scalars(sorted_after(q, column, Message.id, descending=descending, anchor=anchor)))


def inapp_for(
    session: Session, account_id: str, user_id: str | None, unread_only: bool, limit: int, before: str | None = None
) -> list[Message]:
    q = (
        select(Message)
        .where(Message.channel == "inapp", Message.account_id == account_id, Message.state == "sent")
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    if before:
        anchor = session.get(Message, before)
        if anchor is not None:
            q = q.where(or_(Message.created_at < anchor.created_at, (Message.created_at == anchor.created_at) & (Message.id < anchor.id)))
    if user_id is not None:
        q = q.where(Message.user_id == user_id)
    if unread_only:
        q = q.where(Message.read_at.is_(None))
    return list(session.scalars(q))


def mark_read(session: Session, account_id: str, message_id: str, now: datetime) -> Message | None:
    m = session.get(Message, message_id)
    if m is None or m.account_id != account_id or m.channel != "inapp":
        return None
    if m.read_at is None:
        m.read_at = now
    return m


def counts_by(session: Session, playbook_id: str) -> list[tuple[str, str | None, int]]:
    return list(
        session.execute(
            select(Message.state, Message.skip_reason, func.count())
            .where(Message.playbook_id == playbook_id)
            .group_by(Message.state, Message.skip_reason)
        )
    )


def requeue(session: Session, message_id: str, now: datetime) -> Message | None:
    m = session.get(Message, message_id)
    if m is None:
        return None
    session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(state="queued", next_attempt_at=now, lease_owner=None, lease_until=None, lease_token=None, updated_at=now)
    )
    session.refresh(m)
    return m


def counts_by_state_reason(session: Session, since: datetime) -> list[tuple[str, str, str | None, int]]:
    """Messages created since ``since``, per channel, state and skip reason (aggregated in SQL)."""
    return list(
        session.execute(
            select(Message.channel, Message.state, Message.skip_reason, func.count())
            .where(Message.created_at >= since)
            .group_by(Message.channel, Message.state, Message.skip_reason)
        )
    )


def counts_by_step(session: Session, playbook_id: str) -> list[tuple[str, str, str | None, int]]:
    """A playbook's messages per step, state and skip reason."""
    return list(
        session.execute(
            select(Message.step_id, Message.state, Message.skip_reason, func.count())
            .where(Message.playbook_id == playbook_id)
            .group_by(Message.step_id, Message.state, Message.skip_reason)
        )
    )
