"""What the signals table's indexes cost a first tick, and which of them the readers use
(``.venv/bin/python -m bench.bench_signal_indexes``, PostgreSQL only). Figures go to
docs/performance.md ("Rules", scheduled tick).

A fresh database on TOUCHLINE_BENCH_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test) holds seven days of earlier signals (75,000 a
day, a third of them of a second kind); then 75,000 new signals (the first tick's) are
written with ``insert_signals``, as ``fire`` writes them, three times each with all
indexes, without each secondary index, and with the primary key only (each in a
transaction rolled back). Then ``EXPLAIN`` says which index each reader query of
services/rules/signals/repository.py uses on that data.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql

from bench.bench_ingest import PgDatabase
from services.rules.models import SignalRecord as S
from services.rules.signals import repository as repo
from shared.db import make_engine, make_session_factory, transaction
from shared.migrate import upgrade
from shared.settings import Settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
N = 75_000
SECONDARY = ["ix_signals_account_fired", "ix_signals_rule_fired", "ix_signals_kind_fired", "ix_signals_fired_at", "ix_signals_decision_due"]


def signals(seed: int, at: datetime) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "signal_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "rule_id": f"sched-{i % 50:02d}",
            "rule_version": 1,
            "rule_name": f"s{i % 50}",
            "account_id": f"acct-{rng.randrange(100_000):06d}",
            "user_id": None,
            "kind": "expansion" if i % 3 == 0 else "churn_risk",
            "severity": "medium",
            "fired_at": at,
            "evidence": {"days_since(event_00)": {"value": round(rng.uniform(14, 40), 4), "op": ">=", "threshold": 14}},
            "trigger": "schedule",
            "event_id": None,
            "decision_due_at": at + timedelta(minutes=10),
            "republished": 0,
        }
        for i in range(N)
    ]


def main() -> None:
    server = os.environ.get("TOUCHLINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    with PgDatabase(server) as url:
        engine = make_engine(Settings(env="test", database_url=url))
        upgrade(engine)
        factory = make_session_factory(engine)
        with transaction(factory) as s:
            for d in range(7):
                rows = signals(d, NOW - timedelta(days=d + 1))
                for r in rows:
                    r["decision_due_at"] = None  # decided long ago
                repo.insert_signals(s, rows)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE signals")

        print(f"\n{N:,} new signals into a table of {7 * N:,}, insert_signals, three runs (seconds / CPU s of this process):\n")
        print("| indexes | run 1 | run 2 | run 3 | load |\n|---|---|---|---|---:|")
        for label, drop in (
            [("all six", [])] + [(f"without {ix}", [ix]) for ix in SECONDARY] + [("primary key only", SECONDARY), ("all six, again", [])]
        ):
            runs = []
            for rep in range(3):
                with factory() as s:
                    for ix in drop:
                        s.execute(text(f"DROP INDEX {ix}"))
                    rows = signals(100 + rep, NOW)
                    t, c = time.perf_counter(), time.process_time()
                    repo.insert_signals(s, rows)
                    s.flush()
                    runs.append(f"{time.perf_counter() - t:.2f} / {time.process_time() - c:.2f}")
                    s.rollback()
            print(f"| {label} | {' | '.join(runs)} | {os.getloadavg()[0]:.1f} |")

        def page(*where: Any) -> Any:
            return select(S).where(*where).order_by(S.fired_at.desc(), S.signal_id.desc()).limit(50)

        with factory() as s:
            day = repo._utc_day(s, S.fired_at)
            since = NOW - timedelta(days=7)
            readers = {
                "list_signals()": page(),
                "list_signals(kind=expansion)": page(S.kind == "expansion"),
                "list_signals(rule_id=...)": page(S.rule_id == "sched-07"),
                "list_signals(account_id=...)": page(S.account_id == "acct-000123"),
                "list_signals(since=2 days ago)": page(S.fired_at >= NOW - timedelta(days=2)),
                "due_for_decision_check": select(S)
                .where(S.decision_due_at <= NOW + timedelta(hours=1))
                .order_by(S.decision_due_at, S.signal_id)
                .limit(1000),
                "counts_by_day_and_kind(7 days)": select(day, S.kind, func.count())
                .where(S.fired_at >= since, S.fired_at < NOW + timedelta(days=1))
                .group_by(day, S.kind),
                "counts_by_rule(7 days)": select(S.rule_id, func.count()).where(S.fired_at >= since).group_by(S.rule_id),
                "counts_by_rule(12 hours)": select(S.rule_id, func.count())
                .where(S.fired_at >= NOW - timedelta(hours=12))
                .group_by(S.rule_id),
                "scrub_evidence(account)": select(S).where(S.account_id == "acct-000123"),
                "accounts_signalled_since(12 hours)": select(S.account_id).where(S.fired_at >= NOW - timedelta(hours=12)).distinct(),
            }
            print("\n| reader | index used |\n|---|---|")
            for name, q in readers.items():
                sql = str(q.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
                plan = [r[0] for r in s.execute(text("EXPLAIN " + sql))]
                used = sorted({ix for ix in SECONDARY + ["signals_pkey"] for line in plan if ix in line})
                print(f"| {name} | {', '.join(used) or 'none (' + plan[0].split('(')[0].strip() + ')'} |")
        engine.dispose()


if __name__ == "__main__":
    main()
