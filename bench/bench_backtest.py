"""Backtest benchmark: one rule over 90 days of history for 10,000 accounts.

    .venv/bin/python -m bench.bench_backtest            # PostgreSQL (local test server)
    BENCH_ACCOUNTS=2000 .venv/bin/python -m bench.bench_backtest
    BENCH_ANALYZE=0 .venv/bin/python -m bench.bench_backtest  # without ANALYZE after seeding
    BENCH_KEEP_DB=touchline_bench_backtest .venv/bin/python -m bench.bench_backtest  # seed once, reuse
    BENCH_RULES=wau-down-40,mau-up-50 .venv/bin/python -m bench.bench_backtest       # only these rules
    BENCH_PROFILE=var/backtest.prof .venv/bin/python -m bench.bench_backtest         # cProfile per rule

BENCH_KEEP_DB names a database that is kept after the run: the first run creates and seeds
it, later runs with the same name (and BENCH_ACCOUNTS) reuse it without seeding (drop it
by hand: ``DROP DATABASE touchline_bench_backtest``). BENCH_PROFILE writes one cProfile
file per rule (PATH.<rule id>) and prints its top functions by cumulative time.

Seeds daily rollups (118 days: the 90 replayed plus the 28-day baselines) for N
accounts straight into a fresh PostgreSQL database (TOUCHLINE_BENCH_POSTGRES_URL,
default the local test server), then times run_backtest for every starter rule, in a
read transaction as the backtest job runs it, with this process's CPU time and the
load average (the machine is shared: wall time alone says little).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import random
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import create_engine, make_url, text

from bench.bench_ingest import DEFAULT_PG, PgDatabase
from services.ingest.models import Account, AccountEventSeen, UsageDaily, UserActivityDaily
from services.rules.backtest.service import run_backtest
from services.rules.language import parse_rule
from shared.db import make_engine, make_session_factory, read_transaction, transaction, upsert
from shared.migrate import upgrade
from shared.settings import Settings

STARTER = Path(__file__).resolve().parent.parent / "services" / "rules" / "starter"
END = date(2026, 11, 22)
DAYS = 90
HISTORY = DAYS + 28


def seed(factory, n_accounts: int) -> int:
    rng = random.Random(3)
    now = datetime(2026, 11, 23, tzinfo=UTC)
    start = END - timedelta(days=HISTORY - 1)
    rows = 0
    for chunk in range(0, n_accounts, 500):
        accounts, usage, activity, seen = [], [], [], []
        for i in range(chunk, min(n_accounts, chunk + 500)):
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
            for d in range(HISTORY):
                if churn_day is not None and d >= churn_day:
                    break
                day = start + timedelta(days=d)
                active = [u for u in range(seats) if rng.random() < 0.3]
                if not active:
                    continue
                last = day
                usage.append({"account_id": a, "day": day, "event_name": "login", "count": len(active)})
                activity.extend({"account_id": a, "day": day, "user_id": f"u{u}", "count": 1} for u in active)
            if last:
                ts = datetime(last.year, last.month, last.day, 12, tzinfo=UTC)
                seen.append({"account_id": a, "event_name": "login", "first_seen_at": ts - timedelta(days=HISTORY), "last_seen_at": ts})
        with transaction(factory) as s:
            upsert(s, Account.__table__, accounts, ["id"])
            upsert(s, UsageDaily.__table__, usage, ["account_id", "day", "event_name"])
            upsert(s, UserActivityDaily.__table__, activity, ["account_id", "day", "user_id"])
            upsert(s, AccountEventSeen.__table__, seen, ["account_id", "event_name"])
        rows += len(accounts) + len(usage) + len(activity) + len(seen)
        print(f"  seeded {min(n_accounts, chunk + 500):,} accounts ({rows:,} rows)", end="\r", flush=True)
    print()
    return rows


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
        print(
            "\n| rule | accounts | days replayed | firings | distinct accounts | seconds | CPU s (this process) | load average |"
            "\n|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for path in sorted(STARTER.glob("*.yaml")):  # every starter rule
            definition = parse_rule(yaml.safe_load(path.read_text()))
            if only and definition.id not in only:
                continue
            prof = cProfile.Profile() if profile else None
            with read_transaction(factory) as session:  # as the backtest job reads
                t, cpu = time.perf_counter(), time.process_time()
                if prof:
                    prof.enable()
                result = run_backtest(session, definition, END - timedelta(days=DAYS - 1), END)
                if prof:
                    prof.disable()
                elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
            print(
                f"| {definition.id} | {n:,} | {result.evaluated_days} | {len(result.firings):,} | {len(result.accounts()):,} "
                f"| {elapsed:.1f} | {cpu:.1f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
            if prof:
                prof.dump_stats(f"{profile}.{definition.id}")
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        engine.dispose()


if __name__ == "__main__":
    main()
