"""Does a running backtest stall the other writers on SQLite? (issue 7, finding 2)

    .venv/bin/python -m bench.bench_jobs                  # 2,000 accounts, 90 days
    BENCH_ACCOUNTS=5000 .venv/bin/python -m bench.bench_jobs

Seeds daily rollups into a fresh SQLite file (as bench_backtest does for PostgreSQL),
then runs a 90-day backtest of a starter rule twice while another connection commits a
small write every 20 ms, and reports how long those commits waited:
- "in a write transaction": the backtest as the API used to run it, inside the
  request's transaction (SQLite's BEGIN IMMEDIATE holds the write lock throughout);
- "as a job": the jobs worker, reading in a read transaction with short progress writes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.bench_backtest import END, seed
from services.jobs import JobWorker
from services.rules.backtest.jobs import KIND
from services.rules.backtest.service import backtest_request
from services.rules.rules.schemas import BacktestIn
from shared import jobs
from shared.db import make_engine, make_session_factory, transaction
from shared.migrate import upgrade
from shared.settings import Settings

STARTER = Path(__file__).resolve().parent.parent / "services" / "rules" / "starter"
DAYS = 90


def writer(db_path: str, stop, out) -> None:
    """Another worker, in its own process: a short write transaction every 20 ms (with
    the 30 s busy timeout every Touchline connection has); sends each one's latency, or
    the error that would stop a worker."""
    import sqlite3

    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    waits, errors, n = [], [], 0
    while not stop.is_set():
        t = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE accounts SET updated_at = updated_at WHERE id = ?", (f"acct-{n % 100:06d}",))
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            errors.append(str(exc))
        waits.append(time.perf_counter() - t)
        n += 1
        stop.wait(0.02)
    out.send((waits, errors))


def measure(label: str, db_path: str, run, with_writer: bool = True) -> None:
    import multiprocessing as mp

    stop = mp.Event()
    receive, send = mp.Pipe(duplex=False)
    w = mp.Process(target=writer, args=(db_path, stop, send)) if with_writer else None
    if w:
        w.start()
        time.sleep(0.5)  # the writer is committing before the backtest starts
    t = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t
    if not w:
        print(f"| {label} | {elapsed:.1f} | - | - | - | - | - |")
        return
    stop.set()
    waits, errors = receive.recv()
    w.join()
    waits.sort()
    p99 = waits[max(0, int(len(waits) * 0.99) - 1)]
    print(
        f"| {label} | {elapsed:.1f} | {len(waits)} | {statistics.median(waits) * 1000:.1f} | {p99 * 1000:.0f} | "
        f"{waits[-1] * 1000:,.0f} | {len(errors)}{' (' + errors[0] + ')' if errors else ''} |"
    )


def main() -> None:
    n = int(os.environ.get("BENCH_ACCOUNTS", "2000"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(env="test", var_dir=Path(tmp), database_url=f"sqlite:///{tmp}/bench.db")
        engine = make_engine(settings)
        upgrade(engine)
        factory = make_session_factory(engine)
        seed(factory, n)
        from services.rules.rules.importer import import_rules
        from shared.clock import SystemClock

        with transaction(factory) as s:
            import_rules(s, STARTER / "wau-down-40.yaml", actor="bench", now=SystemClock().now(), retention_days=400)
        body = BacktestIn(rule_id="wau-down-40", start=END - timedelta(days=DAYS - 1), end=END)
        print(f"\nSQLite, {n:,} accounts, wau-down-40 over {DAYS} days; another connection commits every 20 ms\n")
        print(
            "| backtest run | seconds | writer commits | median commit ms | p99 ms | max ms | writer errors |\n"
            "|---|---:|---:|---:|---:|---:|---:|"
        )

        def in_write_transaction():
            with transaction(factory) as s:
                backtest_request(s, body, settings)

        def as_job():
            with transaction(factory) as s:
                jobs.submit(s, KIND, body.model_dump(mode="json"), created_by="bench", now=SystemClock().now(), settings=settings)
            assert JobWorker(settings, factory).poll_once() == 1

        db_path = f"{tmp}/bench.db"
        measure("as a job, no other writer", db_path, as_job, with_writer=False)
        measure("in the request's write transaction (before)", db_path, in_write_transaction)
        measure("as a job (now)", db_path, as_job)
        engine.dispose()


if __name__ == "__main__":
    main()
