"""Reading what the database would do: the statements a call sends, and the plan of one
of them on either database (tests that an index serves a query, and that without it the
plan sorts or scans)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import event
from sqlalchemy.engine import Engine


def statements_of(engine: Engine, call: Callable[[], object]) -> list[tuple[str, object]]:
    """The statements ``call`` sends through ``engine``, with their parameters."""
    statements: list[tuple[str, object]] = []

    def listen(conn, cursor, statement, params, context, many) -> None:  # noqa: ANN001
        statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    return statements


def plan_of(engine: Engine, sql: str, params: object, *, pg_off: Sequence[str] = ("enable_seqscan",), before: Sequence[str] = ()) -> str:
    """The plan of ``sql`` as text: PostgreSQL's EXPLAIN, SQLite's EXPLAIN QUERY PLAN. On
    PostgreSQL the ``pg_off`` planner methods are switched off first (a test's few rows:
    let the planner show what it can do at scale). ``before`` runs first in the same
    transaction, which is rolled back: on PostgreSQL (transactional DDL) an index dropped
    there is back afterwards; SQLite commits DDL at once, so tests plant only on PostgreSQL."""
    with engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            for method in pg_off:
                conn.exec_driver_sql(f"SET {method} = off")
        for statement in before:
            conn.exec_driver_sql(statement)
        rows = conn.exec_driver_sql(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + sql, params).fetchall()  # type: ignore[arg-type]
        conn.rollback()
    return "\n".join(str(r[-1]) for r in rows)
