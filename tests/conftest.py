"""Shared fixtures for every tier: the real embedded broker (one per session, on a free
port), real databases built by the migrations (SQLite and PostgreSQL: the one at
TOUCHLINE_TEST_POSTGRES_URL, by default the local one that `make test` starts), a simulated clock, per-test topics and keys. And the
tiers themselves: a test's directory (tests/unit, tests/integration, tests/e2e) gives it
its markers. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from services.outreach.delivery.worker import SenderWorker
from services.outreach.devmail.sink import MailSink
from services.outreach.playbooks.worker import SignalWorker
from services.outreach.timers import TimerWorker
from services.wiring.models import metadata
from shared.broker import EmbeddedBroker, free_port
from shared.clock import SimulatedClock
from shared.db import make_engine, make_session_factory, transaction
from shared.kafka import compat as kafka_compat
from shared.kafka.clients import ensure_topics
from shared.migrate import upgrade
from shared.settings import Settings
from tests.support.helpers import T0, warm_up_broker

DB_KINDS = ["sqlite", "postgresql"]
# Every test that takes a database runs on both. PostgreSQL is TOUCHLINE_TEST_POSTGRES_URL's,
# else the local one at DEFAULT_PG_URL, which `make test` installs and starts when nothing
# answers there (tools/install-system-deps.sh postgresql). None answering fails the session
# with what to do; it never skips. TOUCHLINE_TEST_DATABASES=sqlite leaves PostgreSQL out on
# purpose (make mutation: one short session per mutant, on SQLite only).
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TEST_DATABASES = [kind.strip() for kind in os.environ.get("TOUCHLINE_TEST_DATABASES", ",".join(DB_KINDS)).split(",") if kind.strip()]
if "sqlite" not in TEST_DATABASES or set(TEST_DATABASES) - set(DB_KINDS):
    raise pytest.UsageError(
        f"TOUCHLINE_TEST_DATABASES={os.environ.get('TOUCHLINE_TEST_DATABASES')!r}: 'sqlite' (SQLite only) or 'sqlite,postgresql' (both, the default)"
    )
PG_URL = (os.environ.get("TOUCHLINE_TEST_POSTGRES_URL") or DEFAULT_PG_URL) if "postgresql" in TEST_DATABASES else ""
LEFT_OUT = "PostgreSQL left out by TOUCHLINE_TEST_DATABASES={} (unset, every test runs on both databases)"
# make mutation runs one short test session per mutant: tools/mutation.py starts one broker
# and migrates one SQLite database for all of them, and passes them in here. Unset (every
# other run), each session starts its own broker and runs the migrations itself.
SHARED_BROKER = os.environ.get("TOUCHLINE_TEST_SHARED_BROKER", "")
SQLITE_TEMPLATE = os.environ.get("TOUCHLINE_TEST_SQLITE_TEMPLATE", "")
# The test session's workers and consumers run in this process: the group-join fix goes in
# before any of them joins a group, as touchline's main() does for every command.
kafka_compat.apply()

# The directory is the tier. `-m integration` (broker and/or a database server) selects
# tests/integration and tests/e2e, `-m e2e` tests/e2e, `-m "not integration"` tests/unit.
TIER_MARKS = {"unit": (), "integration": ("integration",), "e2e": ("integration", "e2e")}
# A unit test runs pure code: asking for one of these puts it in the wrong tier.
REAL_PARTS = {"broker", "_databases", "db_kind", "console_world"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(config, items) -> None:
    here = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(here).parts[0]
        if tier not in TIER_MARKS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/unit, tests/integration or tests/e2e")
        for mark in TIER_MARKS[tier]:
            item.add_marker(mark)
        if tier == "unit" and REAL_PARTS & set(item.fixturenames):
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but uses {sorted(REAL_PARTS & set(item.fixturenames))}: it belongs in tests/integration"
            )


@pytest.fixture
def collector_as_found() -> Iterator[None]:
    """Python's cyclic garbage collector left on or off as the test found it, and nothing
    left frozen (the tests of shared/collector.py and of the code that pauses it)."""
    import gc

    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()
    gc.unfreeze()


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[EmbeddedBroker]:
    if SHARED_BROKER:  # started and warmed up once by its owner (tools/mutation.py), shared by many sessions
        host, port = SHARED_BROKER.rsplit(":", 1)
        yield EmbeddedBroker(host, int(port))
        return
    b = EmbeddedBroker("127.0.0.1", free_port(), tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    warm_up_broker(b.bootstrap)
    yield b
    b.stop()


def _pg_base() -> URL:
    return make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1) if PG_URL.startswith("postgresql://") else PG_URL)


def _create_database(base: URL, name: str) -> None:
    """Each session makes (and drops) databases of its own on the server, so runs never
    collide. No server answering stops the whole session here, saying what to do."""
    admin = create_engine(base, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        where = base.render_as_string(hide_password=True)
        pytest.exit(
            f"The PostgreSQL variants need a PostgreSQL server and none answered at {where}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}. `make test` installs and starts a local one "
            "(tools/install-system-deps.sh postgresql); or set TOUCHLINE_TEST_POSTGRES_URL to a server where this user may "
            "create databases; or set TOUCHLINE_TEST_DATABASES=sqlite to leave PostgreSQL out of this run.",
            returncode=3,
        )
    finally:
        admin.dispose()


class _Database:
    def __init__(self, kind: str, url: str, admin_url: str | None = None, name: str | None = None):
        self.kind, self.url, self.admin_url, self.name = kind, url, admin_url, name


@pytest.fixture(scope="session")
def _databases(tmp_path_factory) -> Iterator[dict[str, _Database]]:
    dbs: dict[str, _Database] = {}
    path = tmp_path_factory.mktemp("sqlite") / "touchline.db"
    dbs["sqlite"] = _Database("sqlite", f"sqlite:///{path}")
    if PG_URL:
        base = _pg_base()
        name = f"touchline_test_{uuid.uuid4().hex[:10]}"
        _create_database(base, name)
        dbs["postgresql"] = _Database(
            "postgresql", base.set(database=name).render_as_string(hide_password=False), base.render_as_string(hide_password=False), name
        )
    for db in dbs.values():  # the migrations build every test database: never create_all
        if db.kind == "sqlite" and SQLITE_TEMPLATE:
            shutil.copyfile(SQLITE_TEMPLATE, path)  # built by the same migrations, once per mutation run
            continue
        engine = make_engine(Settings(env="test", database_url=db.url))
        upgrade(engine)
        engine.dispose()
    yield dbs
    if "postgresql" in dbs:
        db = dbs["postgresql"]
        admin = create_engine(db.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=DB_KINDS)
def db_kind(request, _databases) -> str:
    if request.param not in _databases:
        pytest.skip(LEFT_OUT.format(os.environ.get("TOUCHLINE_TEST_DATABASES")))
    return request.param


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(T0)


@pytest.fixture
def settings(db_kind, _databases, broker, tmp_path) -> Settings:
    return Settings(
        env="test",
        var_dir=tmp_path,
        database_url=_databases[db_kind].url,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
        kafka_poll_timeout_ms=200,
        # Outreach: a mail sink of the test's own and fast retries.
        mail_sink_port=free_port(),
        public_base_url="http://touchline.test",
        outreach_retry_base_seconds=60,
        outreach_retry_max_seconds=3600,
        outreach_max_attempts=4,
    )


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    yield engine
    # Each test starts from empty tables (worker tests commit for real, so no rollback trick).
    with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    engine.dispose()


@pytest.fixture
def session_factory(engine):
    return make_session_factory(engine)


@pytest.fixture
def topics(settings) -> Settings:
    ensure_topics(settings)
    return settings


@pytest.fixture
def sink(settings):
    """The real SMTP sink, on the test's own port."""
    s = MailSink(settings.mail_dir, settings.mail_sink_host, settings.mail_sink_port).start()
    yield s
    s.stop()


@pytest.fixture
def workers(topics, session_factory, clock):
    """``workers()`` makes the outreach workers (signals, timers, sender); all are closed after the test."""
    made = []

    def make(kind: str = "all"):
        ws = {
            "signals": SignalWorker(topics, session_factory, clock),
            "timers": TimerWorker(topics, session_factory, clock),
            "sender": SenderWorker(topics, session_factory, clock, worker_id=f"test-{uuid.uuid4().hex[:6]}"),
        }
        made.extend(ws.values())
        return ws

    yield make
    for w in made:
        w.close()


@pytest.fixture
def keys(session_factory, clock) -> dict[str, str]:
    from shared.auth import create_key

    out = {}
    with transaction(session_factory) as session:
        for role in ("ingest", "ops", "csm", "admin"):
            _row, key = create_key(session, role=role, name=f"test {role}", now=clock.now(), csm_id="csm-1" if role == "csm" else None)
            out[role] = key
    return out


@pytest.fixture
async def api(settings, clock, session_factory) -> httpx.AsyncClient:
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchline.test") as client:
        client.app = app
        yield client
    app.state.ctx.close()


class ConsoleWorld:
    """One database seeded with demo-like data for the console tests (see tests/support/console_seed.py)."""

    def __init__(self, kind, settings, engine, session_factory, now, seeded, keys):
        self.kind, self.settings, self.engine, self.session_factory = kind, settings, engine, session_factory
        self.now, self.seeded, self.keys = now, seeded, keys


@pytest.fixture(scope="session", params=DB_KINDS)
def console_world(request, broker, tmp_path_factory) -> Iterator[ConsoleWorld]:
    """Seeded once per database kind for every console test (HTTP and browser): a
    database of its own, so the per-test table wipe of the other tests never touches it."""
    from shared.auth import create_key
    from tests.support.console_seed import seed

    kind = request.param
    admin_url = None
    if kind == "postgresql":
        if not PG_URL:
            pytest.skip(LEFT_OUT.format(os.environ.get("TOUCHLINE_TEST_DATABASES")))
        base = _pg_base()
        name = f"touchline_console_{uuid.uuid4().hex[:10]}"
        admin_url = base.render_as_string(hide_password=False)
        _create_database(base, name)
        url = base.set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'touchline.db'}"
    var_dir = tmp_path_factory.mktemp("console-var")
    settings = Settings(
        env="test",
        var_dir=var_dir,
        database_url=url,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"c{uuid.uuid4().hex[:8]}.",
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
        kafka_poll_timeout_ms=200,
    )
    engine = make_engine(settings)
    upgrade(engine)
    ensure_topics(settings)
    factory = make_session_factory(engine)
    clock = SimulatedClock(T0)
    seeded = seed(factory, settings, clock)
    keys = {}
    with transaction(factory) as session:
        for role in ("ops", "csm", "admin", "ingest"):
            _row, keys[role] = create_key(
                session, role=role, name=f"console {role}", now=clock.now(), csm_id="csm-1" if role == "csm" else None
            )
    yield ConsoleWorld(kind, settings, engine, factory, clock.now(), seeded, keys)
    engine.dispose()
    if admin_url:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
