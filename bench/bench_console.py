"""Console page timings: server time per page (in-process ASGI, no network), median
of a few requests, with the demo's 100 accounts (60 days of synthetic usage, the
starter rules and playbooks, one tick, enrolments, engagements), on SQLite and on
PostgreSQL; then, on PostgreSQL, the accounts list and an account page again after
adding 100,000 more accounts.

    .venv/bin/python -m bench.bench_console
    BENCH_EXTRA_ACCOUNTS=0 .venv/bin/python -m bench.bench_console   # skip the 100,000
    BENCH_SQLITE=0 .venv/bin/python -m bench.bench_console           # PostgreSQL only

The seeding goes through our own services (tests/support/console_seed.py); an embedded broker
serves the dead-letters page (an empty DLQ: the page waits its bounded second for
records, which is most of its time).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from bench.bench_ingest import PgDatabase, pg_url
from services.ingest.repository import store as ingest_store  # seeding: ingest's write path, as its worker writes
from services.wiring.app import create_app
from shared.auth import create_key
from shared.broker import EmbeddedBroker, free_port
from shared.clock import SimulatedClock
from shared.db import make_engine, make_session_factory, transaction
from shared.kafka.clients import ensure_topics
from shared.migrate import upgrade
from shared.settings import Settings
from tests.support.console_seed import seed

REPEAT = 5
SEGMENTS = ("smb", "mid_market", "enterprise")
PLANS = ("starter", "pro", "enterprise")
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def pages(seeded: dict) -> list[tuple[str, str]]:
    a = seeded["churning"][0]
    return [
        ("overview", "/console/"),
        ("accounts", "/console/accounts"),
        ("accounts search", "/console/accounts?q=labs"),
        ("accounts signalled", "/console/accounts?signalled=1"),
        ("account", f"/console/accounts/{a}"),
        ("rules", "/console/rules"),
        ("rule", "/console/rules/no-login-14d"),
        ("rule editor", "/console/rules/no-login-14d/edit"),
        ("dry-run", f"/console/rules/no-login-14d/dry-run?account_id={a}"),
        ("playbooks", "/console/playbooks"),
        ("playbook", "/console/playbooks/win-back"),
        ("templates", "/console/templates"),
        ("template", "/console/templates/win-back"),
        ("pool", "/console/pool"),
        ("engagement", f"/console/engagements/{seeded['engagements'][a]}"),
        ("dead letters", "/console/dead-letters"),
    ]


def timed(client: TestClient, path: str) -> float:
    samples = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        r = client.get(path)
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code)
    return statistics.median(samples) * 1000


def signed_in(app, key: str) -> TestClient:
    client = TestClient(app)
    page = client.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post("/console/sign-in", data={"csrf": token, "api_key": key}).status_code == 200
    return client


def run(url: str, label: str, extra: int, bootstrap: str) -> None:
    var = Path(tempfile.mkdtemp())
    settings = Settings(env="test", var_dir=var, database_url=url, kafka_bootstrap=bootstrap)
    ensure_topics(settings)
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    clock = SimulatedClock(NOW)
    t = time.perf_counter()
    seeded = seed(factory, settings, clock, accounts=100, days=60)
    print(f"\n{label}: seeded 100 accounts in {time.perf_counter() - t:.0f} s ({seeded['signals']} signals)")
    with transaction(factory) as s:
        _row, key = create_key(s, role="admin", name="bench", now=clock.now())
    app = create_app(settings, clock, factory)
    client = signed_in(app, key)
    print(f"{'page':<22} {'median ms':>10}")
    for name, path in pages(seeded):
        print(f"{name:<22} {timed(client, path):>10.1f}")
    if extra:
        t = time.perf_counter()
        for i in range(0, extra, 10_000):
            with transaction(factory) as s:
                ingest_store.touch_accounts(
                    s,
                    [
                        {
                            "id": f"bulk-{j:07d}",
                            "name": f"Bulk Works {j}",
                            "traits": {},
                            "segment": SEGMENTS[j % 3],
                            "plan": PLANS[j % 3],
                            "first_seen_at": NOW,
                            "last_seen_at": NOW,
                            "created_at": NOW,
                            "updated_at": NOW,
                        }
                        for j in range(i, min(extra, i + 10_000))
                    ],
                )
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        print(f"\n{label} with {extra:,} more accounts (added in {time.perf_counter() - t:.0f} s)")
        print(f"{'page':<22} {'median ms':>10}")
        for name, path in [
            ("accounts", "/console/accounts"),
            ("accounts page 1000", "/console/accounts?page=1000"),
            ("accounts search", "/console/accounts?q=labs"),
            ("accounts signalled", "/console/accounts?signalled=1"),
            ("accounts segment", "/console/accounts?segment=smb"),
            ("account", f"/console/accounts/{seeded['churning'][0]}"),
            ("overview", "/console/"),
        ]:
            print(f"{name:<22} {timed(client, path):>10.1f}")
    client.close()
    engine.dispose()


def main() -> None:
    extra = int(os.environ.get("BENCH_EXTRA_ACCOUNTS", "100000"))
    broker = EmbeddedBroker("127.0.0.1", free_port(), Path(tempfile.mkdtemp()) / "broker.log")
    broker.start()
    try:
        if os.environ.get("BENCH_SQLITE", "1") != "0":
            with tempfile.TemporaryDirectory() as d:
                run(f"sqlite:///{d}/bench.db", "SQLite", 0, broker.bootstrap)
        url = pg_url()
        if url:
            with PgDatabase(url) as db_url:
                run(db_url, "PostgreSQL", extra, broker.bootstrap)
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
