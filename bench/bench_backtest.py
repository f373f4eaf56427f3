"""Backtest benchmark: every starter rule over 90 days of history for 10,000 accounts (BENCH_ACCOUNTS).

    .venv/bin/python -m bench.bench_backtest            # PostgreSQL (local test server)
    BENCH_ACCOUNTS=100000 .venv/bin/python -m bench.bench_backtest
    BENCH_ANALYZE=0 .venv/bin/python -m bench.bench_backtest  # without ANALYZE after seeding
    BENCH_KEEP_DB=touchline_bench_backtest .venv/bin/python -m bench.bench_backtest  # seed once, reuse
    BENCH_RULES=wau-down-40,mau-up-50 .venv/bin/python -m bench.bench_backtest       # only these rules
    BENCH_PROFILE=var/backtest.prof .venv/bin/python -m bench.bench_backtest         # cProfile per rule
    BENCH_CHUNK_ACCOUNTS=25000 .venv/bin/python -m bench.bench_backtest   # replay 25,000 accounts at a time (default 10,000)

BENCH_KEEP_DB names a database that is kept after the run: the first run creates and seeds
it, later runs with the same name (and BENCH_ACCOUNTS) reuse it without seeding (drop it
by hand: ``DROP DATABASE touchline_bench_backtest``). BENCH_PROFILE writes one cProfile
file per rule (PATH.<rule id>) and prints its top functions by cumulative time.

Seeds daily rollups (118 days: the 90 replayed plus the 28-day baselines) for N
accounts straight into a fresh PostgreSQL database (TOUCHLINE_BENCH_POSTGRES_URL,
default the local test server; the user-days with COPY: 100,000 accounts are 88M rows),
then times run_backtest for every starter rule, in a read transaction as the backtest
job runs it, each rule in a fresh process of its own, with that process's CPU time and
peak RSS (``ru_maxrss``: whether memory stays flat as accounts grow), the CPU time of
its PostgreSQL backend (from /proc, a local server only; not its parallel workers') and
the load average (the machine is shared: wall time alone says little), and the number of
statements it sent the database (an engine event listener: the per-day and per-chunk reads).
"""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import pstats
import random
import resource
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import create_engine, event, make_url, text

from bench.bench_ingest import DEFAULT_PG, PgDatabase
from services.ingest.models import Account, AccountEventSeen
from services.rules.backtest.service import run_backtest
from services.rules.language import parse_rule
from services.rules.rules.schemas import BacktestIn
from shared.db import make_engine, make_session_factory, read_transaction, transaction, upsert
from shared.migrate import upgrade
from shared.settings import Settings

STARTER = Path(__file__).resolve().parent.parent / "services" / "rules" / "starter"
END = date(2026, 11, 22)
DAYS = 90
HISTORY = DAYS + 28


def seed(factory, n_accounts: int) -> int:
    """The bench's history for ``n_accounts`` accounts. The draws from ``rng`` are the ones
    earlier figures were measured on (the same rows); the user-days and usage rows are
    written with COPY as text lines (88M rows at 100,000 accounts) into their tables made
    UNLOGGED (no WAL: reads are the same) without their indexes, which are then built
    (the migrations' names and columns); the accounts and their last-seen rows with
    :func:`upsert`."""
    rng = random.Random(3)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    start = END - timedelta(days=HISTORY - 1)
    day_text = [(start + timedelta(days=d)).isoformat() for d in range(HISTORY)]
    user_text = [f"\tu{u}\t1\n" for u in range(41)]  # seats are 5 to 40
    rows = 0
    with transaction(factory) as s:  # the rollups' indexes are built once at the end; no WAL for them
        for table, _key in ROLLUPS:
            s.execute(text(f"ALTER TABLE {table} SET UNLOGGED"))
            s.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}"))
            s.execute(text(f"DROP INDEX ix_{table}_day"))
    for chunk in range(0, n_accounts, 2000):
        accounts, seen, usage, activity = [], [], [], []  # usage and activity: COPY text lines
        for i in range(chunk, min(n_accounts, chunk + 2000)):
            a = f"acct-{i:06d}"
            seats = rng.randint(5, 40)
            churn_day = HISTORY - rng.randint(1, 40) if i % 5 == 0 else None  # a fifth go quiet at some point
            # Renewals spread over the coming year; every seventh account still onboarding (the
            # renewal and onboarding starter rules have an audience). Not drawn from rng, so
            # the usage history is the one earlier figures were measured on.
            accounts.append(
                {
                    "id": a,
                    "seats": seats,
                    "signup_date": start - timedelta(days=400),
                    "traits": {},
                    "renewal_date": END + timedelta(days=i * 37 % 365),
                    "lifecycle_stage": "onboarding" if i % 7 == 0 else "active",
                    "created_at": now,
                    "updated_at": now,
                    "first_seen_at": now - timedelta(days=HISTORY),
                    "last_seen_at": now,
                }
            )
            last = None
            for d in range(HISTORY if churn_day is None else min(HISTORY, churn_day)):
                active = [u for u in range(seats) if rng.random() < 0.3]
                if not active:
                    continue
                last = d
                prefix = f"{a}\t{day_text[d]}"
                usage.append(f"{prefix}\tlogin\t{len(active)}\n")
                activity.append("".join([prefix + user_text[u] for u in active]))
                rows += len(active)
            if last is not None:
                day = start + timedelta(days=last)
                ts = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
                seen.append({"account_id": a, "event_name": "login", "first_seen_at": ts - timedelta(days=HISTORY), "last_seen_at": ts})
        with transaction(factory) as s:
            upsert(s, Account.__table__, accounts, ["id"])
            cursor = s.connection().connection.driver_connection.cursor()
            for table, columns, lines in (
                ("usage_daily", "account_id, day, event_name, count", usage),
                ("user_activity_daily", "account_id, day, user_id, count", activity),
            ):
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for k in range(0, len(lines), 5000):
                        copy.write("".join(lines[k : k + 5000]))
            upsert(s, AccountEventSeen.__table__, seen, ["account_id", "event_name"])
        rows += len(accounts) + len(usage) + len(seen)
        print(f"  seeded {min(n_accounts, chunk + 2000):,} accounts ({rows:,} rows)", end="\r", flush=True)
    print()
    with transaction(factory) as s:  # the same indexes as the migrations', built sorted
        s.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        for table, key in ROLLUPS:
            s.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({key})"))
            s.execute(text(f"CREATE INDEX ix_{table}_day ON {table} (day)"))
    return rows


# The daily rollups the bench seeds with COPY, and their primary keys.
ROLLUPS = (("usage_daily", "account_id, day, event_name"), ("user_activity_daily", "account_id, day, user_id"))


class KeptDatabase:
    """A named database that outlives the run (BENCH_KEEP_DB): created if missing."""

    def __init__(self, url: str, name: str):
        self.base = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.name = name
        self.created = False

    def __enter__(self) -> str:
        eng = create_engine(self.base, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            if not c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": self.name}).first():
                c.execute(text(f'CREATE DATABASE "{self.name}"'))
                self.created = True
        eng.dispose()
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc):
        pass


def seeded(engine, n: int) -> bool:
    """Whether a kept database already holds this bench's seeding for ``n`` accounts."""
    with engine.connect() as conn:
        marker = conn.execute(text("SELECT count(*) FROM accounts")).scalar()
    return marker == n


def main() -> None:
    n = int(os.environ.get("BENCH_ACCOUNTS", "10000"))
    url = os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG)
    keep = os.environ.get("BENCH_KEEP_DB")
    only = {r for r in os.environ.get("BENCH_RULES", "").split(",") if r}
    profile = os.environ.get("BENCH_PROFILE")
    with KeptDatabase(url, keep) if keep else PgDatabase(url) as db_url:
        engine = make_engine(Settings(env="test", database_url=db_url))
        upgrade(engine)
        factory = make_session_factory(engine)
        if keep and seeded(engine, n):
            print(f"reusing the seeded database {keep} ({n:,} accounts)")
        else:
            if keep and not seeded(engine, 0):
                raise SystemExit(f"database {keep} holds another seeding; drop it or pick another BENCH_KEEP_DB")
            t = time.perf_counter()
            rows = seed(factory, n)
            print(f"seeded {n:,} accounts, {HISTORY} days, {rows:,} rows in {time.perf_counter() - t:.0f}s")
            if os.environ.get("BENCH_ANALYZE", "1") == "1":  # table statistics, as autovacuum keeps them in production
                with engine.connect() as conn:
                    conn.execute(text("ANALYZE"))
                    conn.commit()
        engine.dispose()
        print(
            "\n| rule | accounts | days replayed | firings | distinct accounts | seconds | CPU s (this process) "
            "| CPU s (PostgreSQL backend) | statements | peak RSS MB | load average |"
            "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        spawn = multiprocessing.get_context("spawn")
        for path in sorted(STARTER.glob("*.yaml")):  # every starter rule
            rule_id = yaml.safe_load(path.read_text())["id"]
            if only and rule_id not in only:
                continue
            # Each rule in a fresh process of its own: its peak RSS is the rule's alone.
            with spawn.Pool(1) as pool:
                r = pool.apply(replay, (db_url, str(path), profile))
            print(
                f"| {rule_id} | {n:,} | {r['days']} | {r['firings']:,} | {r['accounts']:,} | {r['seconds']:.1f} | {r['cpu']:.1f} "
                f"| {r['backend_cpu']:.1f} | {r['statements']:,} | {r['peak_rss_mb']:.0f} (at start {r['start_rss_mb']:.0f}) | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a local PostgreSQL backend, from /proc (0 when not
    readable: a remote server). Parallel workers' CPU is not in it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replay(db_url: str, rule_path: str, profile: str | None) -> dict[str, float]:
    """One starter rule's backtest over the bench's period, in a read transaction as the
    backtest job runs it; in a process of its own (see main), so ``ru_maxrss`` is its peak."""
    engine = make_engine(Settings(env="test", database_url=db_url))
    factory = make_session_factory(engine)
    definition = parse_rule(yaml.safe_load(Path(rule_path).read_text()))
    prof = cProfile.Profile() if profile else None
    issued = [0]

    def issue(*_args) -> None:
        issued[0] += 1

    chunk = {"chunk_accounts": int(os.environ["BENCH_CHUNK_ACCOUNTS"])} if os.environ.get("BENCH_CHUNK_ACCOUNTS") else {}
    with read_transaction(factory) as session:  # as the backtest job reads
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t, cpu, backend_cpu = time.perf_counter(), time.process_time(), _backend_cpu(backend)
        event.listen(engine, "before_cursor_execute", issue)  # the statements the backtest sends
        if prof:
            prof.enable()
        # As the job runs it: the evidence of the samples only (BacktestIn's default, 5).
        result = run_backtest(
            session, definition, END - timedelta(days=DAYS - 1), END, evidence=BacktestIn.model_fields["samples"].default, **chunk
        )
        if prof:
            prof.disable()
        event.remove(engine, "before_cursor_execute", issue)
        elapsed, cpu, backend_cpu = time.perf_counter() - t, time.process_time() - cpu, _backend_cpu(backend) - backend_cpu
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    engine.dispose()
    if prof:
        prof.dump_stats(f"{profile}.{definition.id}")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return {
        "days": result.evaluated_days,
        "firings": len(result.firings),
        "accounts": len(result.accounts()),
        "seconds": elapsed,
        "cpu": cpu,
        "backend_cpu": backend_cpu,
        "statements": issued[0],
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss,
    }


if __name__ == "__main__":
    main()
