"""Account text search on PostgreSQL with 100,000 accounts, with and without the trigram
indexes of migration 0008 (``pg_trgm`` GIN on ``accounts.id`` and ``accounts.name``):
the query the console's and the API's account search run (``search_accounts``: a page
of 50 and the total count), median of five, for a few search texts.

    .venv/bin/python -m bench.bench_account_search
    BENCH_ACCOUNTS=20000 .venv/bin/python -m bench.bench_account_search

PostgreSQL at TOUCHLINE_BENCH_POSTGRES_URL (default the local test server); the
benchmark creates and drops its own database. Numbers are printed, never asserted.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, datetime

from bench.bench_ingest import PgDatabase, pg_url
from services.ingest import interface as ingest
from services.ingest.repository import store as ingest_store  # seeding: ingest's write path, as its worker writes
from shared.db import make_engine, make_session_factory, transaction
from shared.migrate import upgrade
from shared.settings import Settings

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
NAMES = ("Labs", "Systems", "Group", "Analytics", "Works")
SEARCHES = ("labs", "acct-0004", "systems 123", "zzz-none")


def timed(factory, text: str) -> tuple[float, int]:
    samples, total = [], 0
    for _ in range(5):
        with factory() as s:
            t = time.perf_counter()
            _items, total = ingest.search_accounts(
                s, text=text, segment=None, lifecycle_stage=None, plan=None, only_ids=None, offset=0, limit=50
            )
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000, total


def main() -> None:
    n = int(os.environ.get("BENCH_ACCOUNTS", "100000"))
    url = pg_url()
    if not url:
        raise SystemExit("needs PostgreSQL (TOUCHLINE_BENCH_POSTGRES_URL)")
    with PgDatabase(url) as db_url:
        engine = make_engine(Settings(env="test", database_url=db_url))
        upgrade(engine)
        factory = make_session_factory(engine)
        for lo in range(0, n, 10_000):
            with transaction(factory) as s:
                ingest_store.touch_accounts(
                    s,
                    [
                        {
                            "id": f"acct-{j:07d}",
                            "name": f"Account {NAMES[j % 5]} {j}",
                            "traits": {},
                            "first_seen_at": NOW,
                            "last_seen_at": NOW,
                            "created_at": NOW,
                            "updated_at": NOW,
                        }
                        for j in range(lo, min(n, lo + 10_000))
                    ],
                )
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE accounts")
        print(f"{n:,} accounts; search page of 50 and total count, median of 5 (ms)")
        print(f"{'search':<14} {'trigram GIN':>12} {'no index':>10} {'matches':>8}")
        with_index = {q: timed(factory, q) for q in SEARCHES}
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_accounts_id_trgm")
            conn.exec_driver_sql("DROP INDEX ix_accounts_name_trgm")
            conn.exec_driver_sql("ANALYZE accounts")
        for q in SEARCHES:
            ms_without, total = timed(factory, q)
            print(f"{q:<14} {with_index[q][0]:>12.1f} {ms_without:>10.1f} {total:>8}")
        engine.dispose()


if __name__ == "__main__":
    main()
