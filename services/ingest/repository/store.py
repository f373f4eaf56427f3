"""Ingest's write path. Writes are set-based: one statement per table per batch (on
PostgreSQL, one statement for the whole batch: :func:`store_events_pg`). Trait changes
are read and written back as plain rows; old raw events are pruned in id batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from types import SimpleNamespace
from typing import Any, Protocol

import msgspec
import psycopg
from sqlalchemy import ARRAY, ColumnElement, String, Table, and_, bindparam, case, cast, delete, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from services.ingest.models import (
    Account,
    AccountEventSeen,
    RawEvent,
    UsageDaily,
    User,
    UserActivityDaily,
    UserEventSeen,
)
from shared.db import insert_new, upsert

_events = RawEvent.__table__
# The event types whose raw row keeps their traits; the others (track, contract) keep their properties.
TRAIT_TYPES = ("identify", "group")
_accounts = Account.__table__
_users = User.__table__


def _later(current: ColumnElement[datetime], incoming: ColumnElement[datetime]) -> ColumnElement[datetime]:
    """SQL for max(current, incoming) that treats NULL as 'unknown' on either side."""
    return case(
        (and_(incoming.is_not(None), (current.is_(None)) | (incoming > current)), incoming),
        else_=current,
    )


def _earlier(current: ColumnElement[datetime], incoming: ColumnElement[datetime]) -> ColumnElement[datetime]:
    return case(
        (and_(incoming.is_not(None), (current.is_(None)) | (incoming < current)), incoming),
        else_=current,
    )


def insert_new_events(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert raw events; return the ids that were new (the rest are duplicates)."""
    return insert_new(session, _events, rows, ["event_id"])


class EventRow(Protocol):
    """What the raw store keeps of a valid event (``shared.events.ValidEvent`` or ``Event``)."""

    @property
    def event_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def traits(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StoredBatch:
    new: int  # events not seen before (the rest were duplicates)
    accounts: int  # distinct accounts among them
    new_trait_event_ids: list[str]  # the new identify, group and contract events, which the caller applies


_STAGE = "_ingest_stage"
_CREATE_STAGE = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (event_id text, account_id text, user_id text, type text, "
    "name text, ts timestamptz, properties jsonb) ON COMMIT DELETE ROWS"
)
# One statement stores the batch: the raw insert says which events are new (RETURNING)
# and only those feed the rollups, each aggregated in SQL and upserted in key order.
# Sub-statements of a WITH all run, to completion, on one snapshot; the users' foreign key
# is checked at the end of the statement, when the accounts exist. least()/greatest()
# ignore NULL, which is "unknown" here (identify/group carry no usage time). The track
# events are picked by a boolean column, not by type = 'track': the planner, which has no
# statistics for a CTE, took that equality to keep 0.5% of the rows and sorted all of them
# to group them; a bare boolean it takes to keep half, and it hashes them, then sorts the
# groups (the four rollups over "track": 2-5x less time grouping, docs/performance.md).
# {dedupe} is empty, or ON CONFLICT DO NOTHING: see store_events_pg.
_STORE_BATCH = f"""
WITH new AS (
    INSERT INTO events (event_id, account_id, user_id, type, name, "timestamp", properties, received_at)
    SELECT event_id, account_id, user_id, type, name, ts, properties, %(now)s FROM {_STAGE}
    {{dedupe}}
    RETURNING event_id, account_id, user_id, type, type = 'track' AS is_track, name, "timestamp" AS ts
), track AS (
    SELECT account_id, user_id, name, ts, (ts AT TIME ZONE 'UTC')::date AS day FROM new WHERE is_track
), acc AS (
    INSERT INTO accounts AS t (id, first_seen_at, last_seen_at, traits, created_at, updated_at)
    SELECT account_id, min(ts) FILTER (WHERE type = 'track'), max(ts) FILTER (WHERE type = 'track'), '{{}}', %(now)s, %(now)s
    FROM new GROUP BY account_id ORDER BY account_id
    ON CONFLICT (id) DO UPDATE SET first_seen_at = least(t.first_seen_at, excluded.first_seen_at),
                                   last_seen_at = greatest(t.last_seen_at, excluded.last_seen_at)
    RETURNING 1
), usr AS (
    INSERT INTO users AS t (account_id, id, first_seen_at, last_seen_at, traits, created_at, updated_at)
    SELECT account_id, user_id, min(ts) FILTER (WHERE type = 'track'), max(ts) FILTER (WHERE type = 'track'), '{{}}', %(now)s, %(now)s
    FROM new WHERE user_id IS NOT NULL GROUP BY account_id, user_id ORDER BY account_id, user_id
    ON CONFLICT (account_id, id) DO UPDATE SET first_seen_at = least(t.first_seen_at, excluded.first_seen_at),
                                               last_seen_at = greatest(t.last_seen_at, excluded.last_seen_at)
), usage AS (
    INSERT INTO usage_daily AS t (account_id, day, event_name, count)
    SELECT account_id, day, name, count(*) FROM track GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (account_id, day, event_name) DO UPDATE SET count = t.count + excluded.count
), activity AS (
    INSERT INTO user_activity_daily AS t (account_id, day, user_id, count)
    SELECT account_id, day, user_id, count(*) FROM track WHERE user_id IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (account_id, day, user_id) DO UPDATE SET count = t.count + excluded.count
), account_seen AS (
    INSERT INTO account_event_seen AS t (account_id, event_name, first_seen_at, last_seen_at)
    SELECT account_id, name, min(ts), max(ts) FROM track GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_id, event_name) DO UPDATE SET first_seen_at = least(t.first_seen_at, excluded.first_seen_at),
                                                       last_seen_at = greatest(t.last_seen_at, excluded.last_seen_at)
), user_seen AS (
    INSERT INTO user_event_seen AS t (account_id, user_id, event_name, first_seen_at, last_seen_at)
    SELECT account_id, user_id, name, min(ts), max(ts) FROM track WHERE user_id IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (account_id, user_id, event_name) DO UPDATE SET first_seen_at = least(t.first_seen_at, excluded.first_seen_at),
                                                                last_seen_at = greatest(t.last_seen_at, excluded.last_seen_at)
)
SELECT (SELECT count(*) FROM new), (SELECT count(*) FROM acc),
       (SELECT coalesce(array_agg(event_id), '{{}}') FROM new WHERE type <> 'track')
"""
_STORE_NEW = _STORE_BATCH.replace("{dedupe}", "")
_STORE_DEDUPED = _STORE_BATCH.replace("{dedupe}", "ON CONFLICT (event_id) DO NOTHING")
_PK_EVENTS = f"pk_{_events.name}"


def copy_row(ev: EventRow) -> str:
    """One event as a line of the COPY text :func:`store_events_pg` writes. The rows are
    written by hand: every id and name is free of control characters (the event
    contract) and msgspec escapes them in JSON, so only backslashes need escaping;
    ``NULL ''`` is safe because no column takes an empty string."""
    payload = msgspec.json.encode(ev.traits if ev.type in TRAIT_TYPES else ev.properties).decode()
    return f"{ev.event_id}\t{ev.account_id}\t{ev.user_id or ''}\t{ev.type}\t{ev.name}\t{ev.timestamp.isoformat()}\t{payload}\n".replace(
        "\\", "\\\\"
    )


def store_events_pg(session: Session, events: Iterable[EventRow], now: datetime, rows: Sequence[str | None] | None = None) -> StoredBatch:
    """PostgreSQL: store a batch of distinct events (raw store, accounts and users touched,
    rollups, last-seen markers) with one COPY into a temporary table and one statement.
    ``rows``, when given, holds each event's :func:`copy_row` made ahead (None where it
    was not): the ingest worker makes them while the database stores the batch before."""
    if rows is None:
        text = "".join(map(copy_row, events))
    else:
        text = "".join(row or copy_row(ev) for ev, row in zip(events, rows, strict=True))
    conn = session.connection()
    conn.exec_driver_sql(_CREATE_STAGE)
    driver = conn.connection.driver_connection
    assert driver is not None  # a checked-out psycopg connection
    with driver.cursor() as cursor:
        with cursor.copy(f"COPY {_STAGE} FROM STDIN WITH (NULL '')") as copy:
            copy.write(text)
        # Nearly every event is new: the batch is first inserted as it is, where the
        # primary key's own check refuses a duplicate, and only a batch that holds one (a
        # redelivery, or an event that another worker is storing at the same time, which
        # waits for it) is inserted again with ON CONFLICT DO NOTHING. That check, made
        # on every row, looked each event up in the primary key before inserting it:
        # 15% of the backend's CPU for the batch (docs/performance.md, "Ingest").
        cursor.execute("SAVEPOINT store_batch")
        try:
            cursor.execute(_STORE_NEW, {"now": now})
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != _PK_EVENTS:
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT store_batch")
            cursor.execute(_STORE_DEDUPED, {"now": now})
        row = cursor.fetchone()  # the savepoint is left to the commit: no round trip to release it
        assert row is not None
        new, accounts, trait_ids = row
    return StoredBatch(new=new, accounts=accounts, new_trait_event_ids=list(trait_ids))


def _upsert_in_key_order(session: Session, table: Table, rows: list[dict[str, Any]], key: list[str], update: Any) -> None:
    """:func:`shared.db.upsert` with the rows in ``key`` order, as the one-statement path
    above writes them (where rows are locked one by one, two batches that share rows
    then take them in the same order)."""
    upsert(session, table, sorted(rows, key=itemgetter(*key)), key, update)


def _widen_seen(t: Table) -> Callable[[Any], dict[str, Any]]:
    """On a conflict, first/last seen widen to take in the incoming row's."""
    return lambda ex: {
        "first_seen_at": _earlier(t.c.first_seen_at, ex.first_seen_at),
        "last_seen_at": _later(t.c.last_seen_at, ex.last_seen_at),
    }


def _add_count(t: Table) -> Callable[[Any], dict[str, Any]]:
    return lambda ex: {"count": t.c.count + ex.count}


def touch_accounts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Create missing accounts and widen first/last seen (rows: id, first_seen_at,
    last_seen_at, created_at, updated_at)."""
    _upsert_in_key_order(session, _accounts, rows, ["id"], _widen_seen(_accounts))


def touch_users(session: Session, rows: list[dict[str, Any]]) -> None:
    _upsert_in_key_order(session, _users, rows, ["account_id", "id"], _widen_seen(_users))


def add_usage(session: Session, rows: list[dict[str, Any]]) -> None:
    t = UsageDaily.__table__
    _upsert_in_key_order(session, t, rows, ["account_id", "day", "event_name"], _add_count(t))


def add_user_activity(session: Session, rows: list[dict[str, Any]]) -> None:
    t = UserActivityDaily.__table__
    _upsert_in_key_order(session, t, rows, ["account_id", "day", "user_id"], _add_count(t))


def mark_account_events_seen(session: Session, rows: list[dict[str, Any]]) -> None:
    t = AccountEventSeen.__table__
    _upsert_in_key_order(session, t, rows, ["account_id", "event_name"], _widen_seen(t))


def mark_user_events_seen(session: Session, rows: list[dict[str, Any]]) -> None:
    t = UserEventSeen.__table__
    _upsert_in_key_order(session, t, rows, ["account_id", "user_id", "event_name"], _widen_seen(t))


def rows_for_traits(session: Session, model: type[Account] | type[User], keys: Iterable[Any]) -> dict[Any, SimpleNamespace]:
    """The accounts (keys: ids) or users (keys: (account_id, id)) as plain rows, by key:
    trait changes are applied to these in Python and written back by
    :func:`save_trait_rows` (ORM objects cost several times more per row here)."""
    t = model.__table__
    pk = list(t.primary_key.columns)
    ordered = sorted(set(keys))
    out: dict[Any, SimpleNamespace] = {}
    if session.get_bind().dialect.name == "postgresql":
        # The keys as one array a key column, unnested and joined: one short statement
        # planned once, where an IN list of 900 (account, user) pairs took PostgreSQL
        # ~8 ms to plan a chunk and SQLAlchemy longer to render (identify events).
        columns = [list(col) for col in zip(*ordered, strict=True)] if len(pk) > 1 else [ordered]
        wanted = func.unnest(*[cast(bindparam(f"k{i}", c, type_=ARRAY(String)), ARRAY(String)) for i, c in enumerate(columns)])
        k = wanted.table_valued(*[c.name for c in pk]).render_derived()
        parts: list[Any] = [select(t).join(k, and_(*[c == k.c[c.name] for c in pk]))] if ordered else []
    else:
        parts = []
        for i in range(0, len(ordered), 900):  # bound the IN list
            part = ordered[i : i + 900]
            parts.append(select(t).where(pk[0].in_(part) if len(pk) == 1 else tuple_(*pk).in_(part)))
    for q in parts:
        for row in session.execute(q):
            values = row._asdict()
            out[values[pk[0].name] if len(pk) == 1 else tuple(values[c.name] for c in pk)] = SimpleNamespace(**values)
    return out


def save_trait_rows(session: Session, model: type[Account] | type[User], rows: list[SimpleNamespace], columns: Iterable[str]) -> None:
    """Write ``columns`` of ``rows`` (from :func:`rows_for_traits`) back: one executemany
    UPDATE by primary key, in key order."""
    if not rows:
        return
    t = model.__table__
    pk = [c.name for c in t.primary_key.columns]
    cols = list(columns)
    if session.get_bind().dialect.name == "postgresql":
        # One statement for the batch: the rows as one JSON array, typed by PostgreSQL as
        # the table's own row type (jsonb_populate_recordset), joined on the primary key.
        # An executemany planned each row again (plan_cache_mode = force_custom_plan,
        # shared/db.py). With the read above: the demo stream's first 5,000 events (3,597
        # identify) cost the backend 440 ms, now 200 (a track-only batch: 70-80). The rows
        # were locked in key order by the batch's upsert, in this transaction.
        payload = msgspec.json.encode([{c: getattr(r, c) for c in (*pk, *cols)} for r in rows]).decode()
        session.execute(
            text(
                f"UPDATE {t.name} AS t SET {', '.join(f'{c} = v.{c}' for c in cols)} "
                f"FROM jsonb_populate_recordset(NULL::{t.name}, CAST(:rows AS jsonb)) AS v "
                f"WHERE {' AND '.join(f't.{k} = v.{k}' for k in pk)}"
            ),
            {"rows": payload},
        )
        return
    stmt = update(t).where(*[t.c[k] == bindparam(f"k_{k}") for k in pk]).values({c: bindparam(f"v_{c}", type_=t.c[c].type) for c in cols})
    params = [
        {**{f"k_{k}": getattr(r, k) for k in pk}, **{f"v_{c}": getattr(r, c) for c in cols}}
        for r in sorted(rows, key=lambda r: tuple(getattr(r, k) for k in pk))
    ]
    session.execute(stmt, params)


def prune_events(session: Session, received_before: datetime, limit: int = 50_000) -> int:
    """Delete up to ``limit`` raw events received before the cut-off (in id batches so a
    large backlog never holds one huge transaction)."""
    ids = list(session.scalars(select(RawEvent.event_id).where(RawEvent.received_at < received_before).limit(limit)))
    if not ids:
        return 0
    session.execute(delete(RawEvent).where(RawEvent.event_id.in_(ids)))
    return len(ids)
