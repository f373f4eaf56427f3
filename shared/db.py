"""Database engine, sessions, the declarative base and dialect-neutral upserts.

One owner per transaction: services ``flush()``; the request (:func:`session_dependency`),
the consumer batch or the timer tick (:func:`transaction`) commits or rolls back.
SQLite (development) and PostgreSQL (production) run the same code; the
dialect-specific pieces are :func:`insert_on_conflict`, :func:`is_in` and the DBAPI call
that loads a bulk write's rows (:func:`_load_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, cast

from sqlalchemy import JSON, Column, Date, DateTime, MetaData, Table, TypeDecorator, any_, bindparam, create_engine, event, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool

from shared.settings import Settings, get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL, JSON text on SQLite.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database. SQLite keeps no zone, so values
    are converted to UTC on the way in and marked UTC on the way out; a naive value
    is a bug and is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: Touchline stores aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    if TYPE_CHECKING:  # every model here is mapped to a Table (the stubs say FromClause)
        __table__: ClassVar[Table]


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        if ":memory:" not in url:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        busy_ms = int(settings.sqlite_busy_timeout_seconds * 1000)
        pool = {} if ":memory:" in url else _pool_args(settings)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": settings.sqlite_busy_timeout_seconds}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            # WAL lets readers and the one writer work side by side; busy_timeout makes
            # writers queue (a worker that still meets "database is locked" backs off and retries).
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            # Temporary tables (a bulk write's staging table, _stage) and sorts that outgrow the
            # page cache stay in memory instead of a temporary file: the tick's first run stages
            # 75,000 signals (~20 MB) and wrote them out and read them back.
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Connection) -> None:  # pragma: no cover - trivial
            # Take the write lock up front so two writers queue instead of deadlocking
            # on a read->write upgrade (SQLITE_BUSY that busy_timeout cannot resolve).
            # A read_transaction() begins deferred instead: in WAL mode it reads a
            # snapshot and never takes the write lock, so a long read stalls no writer.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY_OPTION) else "BEGIN IMMEDIATE")

        # Let SQLAlchemy's "begin" event own BEGIN (pysqlite's implicit BEGIN is off).
        @event.listens_for(engine, "connect", insert=True)
        def _sqlite_autocommit_off(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None

        return engine
    engine = create_engine(url, pool_pre_ping=True, **_pool_args(settings))

    @event.listens_for(engine, "connect")
    def _postgresql_custom_plans(dbapi_conn: Any, _record: Any) -> None:
        # psycopg prepares a statement on the server once it has run it five times, and
        # PostgreSQL then plans it once for any parameters (a generic plan) when that looks
        # no dearer than planning each time. For a lookup that binds one array (is_in) a
        # generic plan cannot know the array's length nor hash it: planned while the table
        # was nearly empty (a fresh database), it scanned the whole table and compared each
        # row with each id, until autovacuum's first ANALYZE made it plan again. The rules
        # worker's check of ingest's store (ingest.interface.ingested_event_ids) then took seconds a
        # batch at 1,000 events/s and fell a minute behind (docs/performance.md, "End-to-end
        # latency"). Every statement is planned for its own values: what an unprepared
        # statement costs, and the statements stay prepared (parsed once).
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a SET inside a transaction would roll back with it
        dbapi_conn.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_conn.autocommit = autocommit

    return engine


def _pool_args(settings: Settings) -> dict[str, Any]:
    return {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow, "pool_timeout": settings.db_pool_timeout_seconds}


def make_probe_engine(engine: Engine, timeout_seconds: float) -> Engine:
    """An engine for health probes only, on ``engine``'s database: no pool (a probe never
    waits behind the requests that hold the pooled connections) and a connect timeout."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": timeout_seconds})
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout_seconds))})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


# SQLSTATEs of errors that go away by themselves: serialization failure, deadlock,
# connection exceptions (class 08), the server shutting down or refusing connections.
_TRANSIENT_SQLSTATES = {
    "40001": "serialization",
    "40P01": "serialization",
    "57P01": "connection",
    "57P02": "connection",
    "57P03": "connection",
    "53300": "connection",
}


@contextmanager
def database(settings: Settings | None = None) -> Iterator[sessionmaker[Session]]:
    """The composition root of the processes that are not a server or a worker (every
    ``touchline`` command, the demo): an engine for ``settings`` (default: the
    environment's), its session factory, and the engine disposed on the way out. Each
    unit of work inside opens its own :func:`transaction`."""
    engine = make_engine(settings or get_settings())
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def transient_db_error(exc: BaseException) -> str | None:
    """If ``exc`` is a database error that retrying later can cure, its kind
    (``locked``, ``connection`` or ``serialization``); else ``None`` (a bug or bad data)."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "connection"
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if sqlstate:
        if sqlstate in _TRANSIENT_SQLSTATES:
            return _TRANSIENT_SQLSTATES[sqlstate]
        if sqlstate.startswith("08"):
            return "connection"
    text = str(exc.orig).lower()
    if "database is locked" in text or "database table is locked" in text or "database is busy" in text:
        return "locked"
    if any(
        s in text for s in ("connection", "could not connect", "server closed", "terminating", "unable to open database", "disk i/o error")
    ):
        return "connection"
    return None


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception, always close."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


READ_ONLY_OPTION = "touchline_read_only"


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work that only reads, however long: on SQLite a deferred ``BEGIN`` (a
    WAL snapshot that never holds the write lock, unlike :func:`transaction`), on
    PostgreSQL a ``READ ONLY`` transaction. Always rolled back; a write inside it fails
    (PostgreSQL) or is discarded (SQLite), so write through a separate :func:`transaction`."""
    session = factory()
    try:
        session.connection(execution_options={READ_ONLY_OPTION: True, "postgresql_readonly": True})
        yield session
    finally:
        session.rollback()
        session.close()


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched (``execute`` is typed as returning a plain Result)."""
    return cast("CursorResult[Any]", result).rowcount


def insert_on_conflict(session: Session, table: Table) -> Any:
    """A dialect-specific ``INSERT`` that supports ``on_conflict_do_*`` for ``table``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}: use PostgreSQL or SQLite")


# Above this many rows the bulk writes below leave SQLAlchemy's statement execution, which
# builds and converts every row's parameters in Python (a multi-VALUES statement of
# thousands of parameters on PostgreSQL, a type processor call per value on both), and
# load the rows in one DBAPI call (:func:`_load_rows`): PostgreSQL's COPY, SQLite's
# ``executemany``. A keyed insert or upsert loads them into a temporary staging table and
# runs one ``INSERT ... SELECT`` from it.
COPY_THRESHOLD = 200


def upsert(
    session: Session,
    table: Table,
    rows: list[dict[str, Any]],
    key: list[str],
    update: Any = None,
    returning: Any = None,
    any_unique: bool = False,
    where: Any = None,
    binary: bool = False,
) -> Any:
    """Insert ``rows`` (each with the same keys; no two with the same ``key``); on a
    key conflict apply ``update`` (a callable taking ``stmt.excluded`` and returning a
    dict of column -> SQL expression) or do nothing (on a conflict with any unique
    constraint, not only ``key``, with ``any_unique``). ``where`` (a callable taking
    ``stmt.excluded``, returning a SQL condition) limits the update to the conflicting
    rows it admits. With ``returning`` (columns), returns the result rows of the rows
    actually inserted or updated. ``binary``: see :func:`_load_rows`. From
    :data:`COPY_THRESHOLD` rows, columns not in the rows take their server default, not
    a Python-side one."""
    if not rows:
        return [] if returning is not None else None
    stmt = insert_on_conflict(session, table)
    staged = len(rows) >= COPY_THRESHOLD
    if staged:
        columns = list(rows[0])
        stage = _stage(session, table, columns, rows, binary)
        # WHERE true: SQLite would read the ON of ON CONFLICT as a join's after a bare FROM.
        stmt = stmt.from_select(columns, select(*[stage.c[c] for c in columns]).where(true()))
    if update is None:
        stmt = stmt.on_conflict_do_nothing(index_elements=None if any_unique else key)
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=key, set_=update(stmt.excluded), where=where(stmt.excluded) if where is not None else None
        )
    if returning is not None:
        stmt = stmt.returning(*returning)
    result = session.execute(stmt) if staged else session.execute(stmt, rows)
    if staged:
        _unstage(session, stage)
    return result.all() if returning is not None else None  # one fetchall, not a fetch per row


def insert_many(session: Session, table: Table, rows: list[dict[str, Any]], *, binary: bool = False) -> None:
    """Insert ``rows`` (each with the same keys), no conflict handling. From
    :data:`COPY_THRESHOLD` rows, loaded straight into the table (:func:`_load_rows`;
    rows are written in list order, so a serial key follows it). ``binary``: see
    :func:`_load_rows`."""
    if not rows:
        return
    if len(rows) >= COPY_THRESHOLD:
        _load_rows(session, table.name, table, list(rows[0]), rows, binary)
    else:
        session.execute(table.insert(), rows)


def is_in(session: Session, column: Any, values: Iterable[Any]) -> Any:
    """``column IN values``. On PostgreSQL one array parameter (``= ANY``): the statement's
    text does not grow with the values, so psycopg converts it once and caches it, where
    an IN list of hundreds of parameters is rendered and parsed again every time. On
    SQLite a plain IN list (keep it under SQLite's 32,766 parameters)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type), expanding=False))
    return column.in_(values)


def insert_new(
    session: Session, table: Table, rows: list[dict[str, Any]], key: list[str], *, any_unique: bool = False, binary: bool = False
) -> set[Any]:
    """Insert ``rows``, skipping those whose ``key`` exists; return the keys that were new.
    The idempotency primitive: a redelivered event or signal inserts nothing and is
    recognised as seen. ``key`` columns come back as a scalar (one column) or a tuple.
    With ``any_unique``, a row that collides on any unique constraint is skipped too."""
    cols = [table.c[k] for k in key]
    inserted = upsert(session, table, rows, key, returning=cols, any_unique=any_unique, binary=binary)
    return {r[0] for r in inserted} if len(cols) == 1 else {tuple(r) for r in inserted}


def insert_absent(session: Session, table: Table, rows: list[dict[str, Any]], key: str, *, binary: bool = False) -> set[Any]:
    """:func:`insert_new` for rows the caller knows are not in the table yet (each row
    belongs to a parent row this transaction inserted, and the table's rows are never
    kept without their parent): from :data:`COPY_THRESHOLD` rows, loaded straight into
    the table (:func:`_load_rows`), without the staging table and the keyed ``INSERT ...
    SELECT``. Of rows sharing a ``key`` the first is inserted, as the keyed insert
    keeps it. A row whose key exists after all (the caller's promise broken) fails the
    statement with a unique violation: loud, never a silent overwrite. Returns the keys
    inserted (one column)."""
    if len(rows) < COPY_THRESHOLD:
        return insert_new(session, table, rows, [key], binary=binary)
    first: dict[Any, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row[key], row)
    _load_rows(session, table.name, table, list(rows[0]), list(first.values()) if len(first) < len(rows) else rows, binary)
    return set(first)


@lru_cache(maxsize=64)
def _stage_table(table: Table, columns: tuple[str, ...]) -> Table:
    """The staging table's description, built once (and so one cache key for the statements that read it)."""
    return Table(f"_stage_{table.name}", MetaData(), *[Column(c, table.c[c].type) for c in columns], prefixes=["TEMPORARY"])


def _stage(session: Session, table: Table, columns: list[str], rows: list[dict[str, Any]], binary: bool = False) -> Table:
    """Load ``rows`` into a per-connection temporary table shaped like ``table``."""
    stage = _stage_table(table, tuple(columns))
    name = stage.name
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f'CREATE TEMPORARY TABLE IF NOT EXISTS "{name}" (LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS'
        )
    else:
        # Every column of the table (another call may stage others), no declared types: each
        # value keeps the storage class it was bound with, and the target column's affinity
        # applies when INSERT ... SELECT copies it, as on a direct insert.
        cols_sql = ", ".join(f'"{c.name}"' for c in table.c)
        conn.exec_driver_sql(f'CREATE TEMPORARY TABLE IF NOT EXISTS "{name}" ({cols_sql})')
    conn.exec_driver_sql(f'DELETE FROM "{name}"')  # empty but for an earlier use in this transaction; TRUNCATE costs a new file
    _load_rows(session, name, table, columns, rows, binary)
    return stage


def _unstage(session: Session, stage: Table) -> None:
    """Empty the staging table after its ``INSERT ... SELECT`` on SQLite, whose temporary
    tables keep their rows past the commit (PostgreSQL's are ``ON COMMIT DELETE ROWS``)."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f'DELETE FROM "{stage.name}"')


# PostgreSQL types COPY can send in binary, by the name SQLAlchemy renders (without a length).
_BINARY_COPY_TYPES = {
    "VARCHAR": "varchar",
    "TEXT": "text",
    "BYTEA": "bytea",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "SMALLINT": "int2",
    "BOOLEAN": "bool",
    "FLOAT": "float8",
    "DOUBLE PRECISION": "float8",
    "JSONB": "jsonb",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DATE": "date",
}


@lru_cache(maxsize=64)
def _binary_types(table: Table, columns: tuple[str, ...], dialect: Dialect) -> list[str] | None:
    """The PostgreSQL type names of ``columns`` for a binary COPY; None if one has no entry."""
    names = [_BINARY_COPY_TYPES.get(table.c[c].type.compile(dialect=dialect).split("(")[0]) for c in columns]
    return None if None in names else cast("list[str]", names)


@lru_cache(maxsize=64)
def _bind_processors(table: Table, columns: tuple[str, ...], dialect: Dialect) -> list[tuple[Callable[[Any], Any] | None, bool]]:
    """Per column, the function SQLAlchemy applies to a value before the DBAPI sees it
    (None: the value as it is), and whether it is worth applying once per distinct value
    (datetimes and dates: a batch of firings shares one ``now``)."""
    out: list[tuple[Callable[[Any], Any] | None, bool]] = []
    for c in columns:
        t = table.c[c].type
        base = t.impl_instance if isinstance(t, TypeDecorator) else t
        out.append((t.dialect_impl(dialect).bind_processor(dialect), isinstance(base, (DateTime, Date))))
    return out


def _dbapi_rows(table: Table, columns: list[str], rows: list[dict[str, Any]], dialect: Dialect) -> Iterator[tuple[Any, ...]]:
    """``rows`` as tuples of ``columns``' values converted as SQLAlchemy would bind them
    (UTC datetimes, a naive one refused; JSON), a column at a time: the conversions run in
    ``map``, and a datetime column's once per distinct value."""
    values: list[Any] = []
    for c, (process, by_value) in zip(columns, _bind_processors(table, tuple(columns), dialect), strict=True):
        column = list(map(itemgetter(c), rows))
        if process is None:
            values.append(column)
        elif by_value:
            converted = {v: process(v) for v in set(column)}
            values.append(map(converted.__getitem__, column))
        else:
            values.append(map(process, column))
    return zip(*values, strict=True)


def _load_rows(session: Session, name: str, table: Table, columns: list[str], rows: list[dict[str, Any]], binary: bool = False) -> None:
    """Write ``rows`` into table ``name`` (shaped like ``table``) on the session's
    connection in one DBAPI operation, each value converted by its column's type as a
    statement would (:func:`_dbapi_rows`): PostgreSQL's COPY, SQLite's ``executemany``
    of one prepared ``INSERT``. ``binary``: PostgreSQL's binary COPY format when every
    column's type allows (half the client's and the server's work of the text format
    for a row of a few dozen values); each value must then be of its column's Python type
    (str for text, int for integers, ...), where the text format lets PostgreSQL parse a
    string."""
    conn = session.connection()
    driver = conn.connection.driver_connection
    assert driver is not None  # a checked-out connection
    values = _dbapi_rows(table, columns, rows, conn.dialect)
    cols_sql = ", ".join(f'"{c}"' for c in columns)
    cursor = driver.cursor()
    try:
        if conn.dialect.name != "postgresql":
            cursor.executemany(f'INSERT INTO "{name}" ({cols_sql}) VALUES ({", ".join("?" for _ in columns)})', values)
            return
        types = _binary_types(table, tuple(columns), conn.dialect) if binary else None
        with cursor.copy(f'COPY "{name}" ({cols_sql}) FROM STDIN' + (" (FORMAT BINARY)" if types else "")) as copy:
            if types:
                copy.set_types(types)
            for row in values:
                copy.write_row(row)
    finally:
        cursor.close()
