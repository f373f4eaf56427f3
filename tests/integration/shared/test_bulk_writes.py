"""shared.db's bulk writes on both databases: below COPY_THRESHOLD rows they go through
SQLAlchemy's statements, from it the rows are loaded in one DBAPI call (COPY on
PostgreSQL, executemany on SQLite) with each value converted by its column's type.
Both paths store the same values: aware datetimes in any zone read back as the same
instant in UTC, JSON round-trips, bytes and awkward text survive; a naive datetime is
refused by both, and nothing of the batch is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from shared import db
from shared.db import insert_many, insert_new, transaction, upsert
from shared.models import AuditRecord
from shared.outbox import OutboxMessage

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
AWKWARD = 'tab\there, new\nline, back\\slash, "quoted", \u00e9t\u00e9 \U0001f600, \\N'


def sizes() -> list[int]:
    return [3, db.COPY_THRESHOLD]


def audit_rows(n: int, at: datetime, start: int = 0) -> list[dict]:
    return [
        {
            "id": start + i + 1,
            "at": at + timedelta(seconds=i % 2),  # two distinct instants, each shared by many rows
            "actor": AWKWARD if i % 3 == 0 else f"actor-{i}",
            "action": "update",
            "object_type": "rule",
            "object_id": f"r{i}",
            "version": None if i % 2 else i,
            "details": {"n": i, "ratio": i / 3, "nested": {"list": [1, None, "x"], "text": AWKWARD}, "none": None},
        }
        for i in range(n)
    ]


def stored_audit(session_factory) -> dict[int, AuditRecord]:
    with session_factory() as s:
        return {r.id: r for r in s.scalars(select(AuditRecord))}


@pytest.mark.parametrize("n", sizes())
def test_insert_new_stores_aware_datetimes_in_utc_and_json_as_given(session_factory, n):
    rows = audit_rows(n, T.astimezone(IST))
    with transaction(session_factory) as s:
        assert insert_new(s, AuditRecord.__table__, rows, ["id"]) == {r["id"] for r in rows}
    stored = stored_audit(session_factory)
    assert sorted(stored) == [r["id"] for r in rows]
    for r in rows:
        got = stored[r["id"]]
        assert got.at == r["at"] and got.at.utcoffset() == timedelta(0)
        assert (got.actor, got.object_id, got.version, got.details) == (r["actor"], r["object_id"], r["version"], r["details"])
    with session_factory() as s:  # stored as the UTC instant, so SQL compares it (SQLite compares text)
        assert s.scalar(select(func.count()).where(AuditRecord.at == T)) == len(rows[::2])
        assert s.scalar(select(func.count()).where(AuditRecord.at > T)) == len(rows[1::2])
    # Again with a few new ones: only those are new, and the stored rows are untouched.
    again = [{**r, "actor": "changed"} for r in rows] + audit_rows(2, T, start=n)
    with transaction(session_factory) as s:
        assert insert_new(s, AuditRecord.__table__, again, ["id"]) == {n + 1, n + 2}
    stored = stored_audit(session_factory)
    assert len(stored) == n + 2 and stored[1].actor == rows[0]["actor"]


@pytest.mark.parametrize("n", sizes())
def test_a_conditional_upsert_returns_and_changes_only_the_rows_it_admits(session_factory, n):
    table = AuditRecord.__table__
    with transaction(session_factory) as s:
        insert_new(s, table, audit_rows(n, T), ["id"])
    # Later for the even ids, earlier for the odd: only the even rows are updated.
    rows = [{**r, "at": T + timedelta(hours=1 if r["id"] % 2 == 0 else -1), "details": {"new": r["id"]}} for r in audit_rows(n, T)]
    with transaction(session_factory) as s:
        won = upsert(
            s,
            table,
            rows,
            ["id"],
            update=lambda new: {"at": new.at, "details": new.details},
            where=lambda new: table.c.at < new.at,
            returning=[table.c.id],
        )
    assert {r[0] for r in won} == {r["id"] for r in rows if r["id"] % 2 == 0}
    stored = stored_audit(session_factory)
    for r in rows:
        if r["id"] % 2 == 0:
            assert stored[r["id"]].at == r["at"] and stored[r["id"]].details == {"new": r["id"]}
        else:
            assert stored[r["id"]].details["n"] == r["id"] - 1


@pytest.mark.parametrize("n", sizes())
def test_insert_many_keeps_bytes_nulls_and_list_order(session_factory, n):
    messages = [
        {
            "topic": "t",
            "key": None if i % 4 == 0 else f"k{i}\x00\\".encode(),
            "value": bytes(range(256)) + AWKWARD.encode(),
            "headers": [["touchline.signal_id", f"s{i}"], ["note", AWKWARD]],
            "created_at": T.astimezone(IST),
            "sent_at": None,
            "attempts": i,
        }
        for i in range(n)
    ]
    with transaction(session_factory) as s:
        insert_many(s, OutboxMessage.__table__, messages)
    with session_factory() as s:
        stored = list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    assert [m.attempts for m in stored] == list(range(n))  # ids follow the list's order
    for m, want in zip(stored, messages, strict=True):
        assert (m.key, m.value, m.headers, m.sent_at) == (want["key"], want["value"], want["headers"], None)
        assert m.created_at == T and m.created_at.tzinfo is not None
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.created_at == T)) == n


@pytest.mark.parametrize("n", sizes())
def test_a_naive_datetime_is_refused_and_nothing_of_the_batch_is_written(session_factory, n):
    rows = audit_rows(n, T)
    rows[-1]["at"] = datetime(2026, 3, 2, 12, 0)  # noqa: DTZ001 - the bug under test
    with pytest.raises(Exception, match="naive datetime"), transaction(session_factory) as s:
        insert_new(s, AuditRecord.__table__, rows, ["id"])
    with pytest.raises(Exception, match="naive datetime"), transaction(session_factory) as s:
        insert_many(s, AuditRecord.__table__, rows)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(AuditRecord)) == 0


def test_staging_serves_two_column_sets_of_one_table_in_one_transaction(session_factory):
    """The staging table is per table, not per column set: a second bulk upsert of the
    same table with other columns (no ``version``) in the same transaction still works."""
    n = db.COPY_THRESHOLD
    table = AuditRecord.__table__
    with transaction(session_factory) as s:
        insert_new(s, table, audit_rows(n, T), ["id"])
        fewer = [{k: v for k, v in r.items() if k != "version"} for r in audit_rows(n, T, start=n)]
        assert insert_new(s, table, fewer, ["id"]) == {r["id"] for r in fewer}
    stored = stored_audit(session_factory)
    assert len(stored) == 2 * n and stored[n + 1].version is None
