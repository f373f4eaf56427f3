"""Rules benchmark (``make bench-rules``). Figures go to docs/performance.md ("Rules").

1. Events per second through ingest plus event-triggered rule evaluation with 1, 100
   and 1,000 enabled rules (spread over 50 event names), against the raw consume rate
   of the same records in the same run. Ingest and rules workers alternate in one
   thread (as on one small machine); the rules worker waits for ingest per batch.
2. The time of one scheduled tick over 100,000 accounts with 50 absence/trend rules.

Database: SQLite in a temporary directory, or PostgreSQL when TOUCHLINE_BENCH_DATABASE_URL
names a server (e.g. postgresql://postgres@127.0.0.1:5432/test): each part then creates a
fresh database there and drops it afterwards. Sizes: BENCH_EVENTS (default 20000),
BENCH_TICK_ACCOUNTS (100000); BENCH_PARTS=events,tick (default both); BENCH_RULE_COUNTS
(default 1,100,1000: the numbers of enabled rules the events part measures).

Every event is inside the rules' freshness window, so each one is evaluated. The time
each worker spends in its polls that processed records (not waiting for the broker or for
ingest) is measured apart, which gives each worker's own rate: the rules worker keeps up
with ingest when its rate is at least ingest's.
Wall-clock figures on a shared machine depend on its load: the load average and this
process's CPU time are printed with them.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer

from bench.bench_ingest import PgDatabase, backend_cpu_seconds
from services.ingest.events.worker import IngestWorker
from services.ingest.models import Account, AccountEventSeen, UsageDaily
from services.rules.evaluation.service import run_tick
from services.rules.evaluation.worker import RulesWorker
from services.rules.rules import service as rules_service
from shared.broker import EmbeddedBroker, free_port
from shared.clock import SimulatedClock
from shared.db import make_engine, make_session_factory, transaction
from shared.kafka import compat
from shared.kafka.clients import ensure_topics, make_producer
from shared.migrate import upgrade
from shared.settings import Settings

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NAMES = [f"event_{i:02d}" for i in range(50)]
N_EVENTS = int(os.environ.get("BENCH_EVENTS", 20_000))
N_TICK_ACCOUNTS = int(os.environ.get("BENCH_TICK_ACCOUNTS", 100_000))
RULE_COUNTS = [int(n) for n in os.environ.get("BENCH_RULE_COUNTS", "1,100,1000").split(",")]


CLEANUP = ExitStack()  # the fresh PostgreSQL databases, dropped when main() ends


def fresh_db(tmp: Path, name: str) -> tuple[Settings, object]:
    server = os.environ.get("TOUCHLINE_BENCH_DATABASE_URL", "")
    url = CLEANUP.enter_context(PgDatabase(server)) if server else f"sqlite:///{tmp / name}.db"
    settings = Settings(env="test", var_dir=tmp / name, database_url=url)
    engine = make_engine(settings)
    CLEANUP.callback(engine.dispose)
    upgrade(engine)
    return settings, engine


def add_rules(factory, n: int) -> None:
    with transaction(factory) as s:
        for i in range(n):
            name = NAMES[i % len(NAMES)]
            d, _ = rules_service.parse(
                {
                    "id": f"rule-{i:04d}",
                    "name": f"rule {i}",
                    "kind": "expansion",
                    "trigger": {"events": [name]},
                    "condition": {
                        "all": [
                            {"metric": "count", "event": name, "window": "7d", "op": ">=", "value": 50 + i % 20},
                            {"field": "account.plan", "op": "!=", "value": "free"},
                        ]
                    },
                    "cooldown": "7d",
                },
                400,
            )
            rules_service.create(s, d, True, "bench", NOW)


def publish_events(settings: Settings, n: int) -> None:
    rng = random.Random(1)
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    for i in range(n):
        account = f"acct-{rng.randrange(2000):05d}"
        ev = {
            "event_id": f"e{i}",
            "account_id": account,
            "user_id": f"u{rng.randrange(20)}",
            "name": rng.choice(NAMES),
            "timestamp": (NOW - timedelta(seconds=rng.randrange(5 * 3600))).isoformat(),
            "properties": {"k": i % 7},
        }
        producer.send(settings.topic_events, key=account.encode(), value=json.dumps(ev).encode())
    producer.flush()
    producer.close()


def raw_consume_rate(settings: Settings, n: int) -> float:
    consumer = KafkaConsumer(
        settings.topic_events,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
        max_poll_records=2000,
    )
    got, started = 0, None
    while got < n:
        polled = consumer.poll(500)
        if polled and started is None:
            started = time.perf_counter()
        got += sum(len(v) for v in polled.values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def through_rules(broker, tmp: Path, n_rules: int) -> dict:
    settings, engine = fresh_db(tmp, f"rules{n_rules}")
    settings = settings.model_copy(
        update={
            "kafka_bootstrap": broker.bootstrap,
            "topic_prefix": f"b{uuid.uuid4().hex[:6]}.",
            "kafka_session_timeout_ms": 2000,
            "kafka_heartbeat_interval_ms": 300,
            "kafka_poll_timeout_ms": 100,
        }
    )
    ensure_topics(settings)
    factory = make_session_factory(engine)
    add_rules(factory, n_rules)
    clock = SimulatedClock(NOW)
    ingest, rules = IngestWorker(settings, factory, clock), RulesWorker(settings, factory, clock, tick=False)
    # Join both groups before any record exists, so no join time is measured.
    ingest.start(), rules.start()
    while not (ingest.consumer.assignment() and rules.consumer.assignment()):
        ingest.poll_once(100), rules.poll_once(100)
    publish_events(settings, N_EVENTS)
    raw = raw_consume_rate(settings, N_EVENTS)
    done_ingest = done_rules = 0
    evaluations = signals = 0
    started = None
    load = os.getloadavg()[0]
    in_ingest = in_rules = 0.0  # seconds inside each worker's polls that processed records (not its waits)
    cpu_ingest = cpu_rules = 0.0  # this process's CPU seconds in the same polls
    while done_rules < N_EVENTS:
        t, c = time.perf_counter(), time.process_time()
        a = ingest.poll_once(100)
        if a and started is None:
            started = t
        if a:
            in_ingest += time.perf_counter() - t
            cpu_ingest += time.process_time() - c
        done_ingest += a
        t, c = time.perf_counter(), time.process_time()
        b = rules.poll_once(100)
        if b:
            in_rules += time.perf_counter() - t
            cpu_rules += time.process_time() - c
        done_rules += b
        if b and rules.last_report:
            evaluations += rules.last_report.evaluations
            signals += len(rules.last_report.signals)
    elapsed = time.perf_counter() - started
    ingest.close(), rules.close()
    return {
        "rules": n_rules,
        "events": N_EVENTS,
        "events_per_s": N_EVENTS / elapsed,
        "raw_per_s": raw,
        "ingest_per_s": N_EVENTS / in_ingest,
        "rules_per_s": N_EVENTS / in_rules,
        "ingest_cpu": cpu_ingest,
        "rules_cpu": cpu_rules,
        "load": load,
        "evaluations": evaluations,
        "signals": signals,
    }


def tick_bench(tmp: Path) -> dict:
    settings, engine = fresh_db(tmp, "tick")
    factory = make_session_factory(engine)
    rng = random.Random(2)
    names = NAMES[:5]
    t0 = time.perf_counter()
    accounts, seen, usage = [], [], []
    for i in range(N_TICK_ACCOUNTS):
        a = f"acct-{i:06d}"
        accounts.append({"id": a, "plan": "pro", "traits": {}, "created_at": NOW, "updated_at": NOW, "seats": 10})
        # Most accounts are active (seen within 13 days); ~3% have gone quiet for up to 40 days.
        quiet = rng.random() < 0.03
        for name in names[:3]:
            hours = rng.randrange(24 * 40) if quiet else rng.randrange(24 * 13)
            seen.append(
                {
                    "account_id": a,
                    "event_name": name,
                    "first_seen_at": NOW - timedelta(days=90),
                    "last_seen_at": NOW - timedelta(hours=hours),
                }
            )
        # One usage row per week for five weeks; ~2% of accounts drop sharply this week.
        declining = rng.random() < 0.02
        for w in range(5):
            count = (rng.randrange(0, 4) if declining else rng.randrange(8, 12)) if w == 0 else 10
            usage.append({"account_id": a, "day": NOW.date() - timedelta(days=7 * w + 1), "event_name": names[3], "count": count})
    with transaction(factory) as s:
        for table, rows in ((Account.__table__, accounts), (AccountEventSeen.__table__, seen), (UsageDaily.__table__, usage)):
            for i in range(0, len(rows), 20_000):
                s.execute(table.insert(), rows[i : i + 20_000])
    setup = time.perf_counter() - t0
    with transaction(factory) as s:
        for i in range(50):
            if i < 25:
                cond = {"metric": "days_since", "event": names[i % 3], "op": ">=", "value": 14 + i}
            else:
                cond = {
                    "metric": "change",
                    "of": "count",
                    "event": names[3],
                    "window": "7d",
                    "baseline": "28d",
                    "op": "<=",
                    "value": -40 - (i - 25),
                }
            d, _ = rules_service.parse(
                {
                    "id": f"sched-{i:02d}",
                    "name": f"s{i}",
                    "kind": "churn_risk",
                    "trigger": {"schedule": {"every": "1h"}},
                    "condition": cond,
                    "cooldown": "7d",
                },
                400,
            )
            rules_service.create(s, d, True, "bench", NOW)
    if settings.sqlalchemy_url.startswith("postgresql"):  # statistics, as autovacuum keeps them in production
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    # The PostgreSQL backends' CPU (a local server): the tick's connections stay in the pool.
    pg = settings.sqlalchemy_url.startswith("postgresql")
    backend = (lambda: backend_cpu_seconds(engine)) if pg else (lambda: 0.0)
    b0 = backend()
    started, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    report = run_tick(factory, settings, NOW)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    b1 = backend()
    # Steady state: an hour later every rule is due again; the same accounts match but are in cooldown.
    started, steady_cpu, steady_load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    again = run_tick(factory, settings, NOW + timedelta(hours=1))
    steady, steady_cpu = time.perf_counter() - started, time.process_time() - steady_cpu
    b2 = backend()
    return {
        "accounts": N_TICK_ACCOUNTS,
        "rules": report.ran,
        "seconds": elapsed,
        "signals": len(report.signals),
        "queries": report.queries,
        "setup_seconds": setup,
        "steady_seconds": steady,
        "steady_signals": len(again.signals),
        "cpu": cpu,
        "load": load,
        "steady_cpu": steady_cpu,
        "steady_load": steady_load,
        "backend_cpu": f"{b1 - b0:.1f}" if pg else "–",
        "steady_backend_cpu": f"{b2 - b1:.1f}" if pg else "–",
    }


def main() -> None:
    db = "PostgreSQL" if os.environ.get("TOUCHLINE_BENCH_DATABASE_URL") else "SQLite"
    parts = os.environ.get("BENCH_PARTS", "events,tick").split(",")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    with tempfile.TemporaryDirectory() as d, CLEANUP:
        tmp = Path(d)
        if "events" in parts:
            broker = EmbeddedBroker("127.0.0.1", free_port(), tmp / "broker.log")
            broker.start()
            try:
                rows = [through_rules(broker, tmp, n) for n in RULE_COUNTS]
            finally:
                broker.stop()
            print(f"\n## Rules benchmark ({db}, {N_EVENTS} events over 2,000 accounts and 50 event names)\n")
            print(
                "| enabled rules | ingest + rules events/s | ingest alone events/s | rules alone events/s "
                "| rules / ingest | ingest CPU s | rules CPU s | load average | raw consume events/s (same run) | rule evaluations | signals |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(
                    f"| {r['rules']} | {r['events_per_s']:,.0f} | {r['ingest_per_s']:,.0f} | {r['rules_per_s']:,.0f} "
                    f"| {r['rules_per_s'] / r['ingest_per_s']:.2f} | {r['ingest_cpu']:.1f} | {r['rules_cpu']:.1f} | {r['load']:.1f} "
                    f"| {r['raw_per_s']:,.0f} | {r['evaluations']:,} | {r['signals']:,} |"
                )
            ratio = rows[-1]["events_per_s"] / rows[0]["events_per_s"]
            keeps = rows[-1]["rules_per_s"] / rows[-1]["ingest_per_s"]
            print(
                f"\nthroughput with {rows[-1]['rules']:,} rules / with {rows[0]['rules']:,}: {ratio:.2f} (aim at 1,000 / 1: >= 0.5); "
                f"with {rows[-1]['rules']:,} rules the rules worker alone runs at {keeps:.2f} x ingest's rate (keeps up: >= 1); "
                f"load average now {os.getloadavg()[0]:.1f}"
            )
        if "tick" in parts:
            t = tick_bench(tmp)
            print(
                f"\nscheduled tick ({db}): {t['accounts']:,} accounts, {t['rules']} rules (25 absence, 25 trend), "
                f"{t['queries']} metric queries per tick (aim: < 10 s)\n"
            )
            print("| tick | seconds | CPU s (this process) | CPU s (PostgreSQL backends) | load average | signals |")
            print("|---|---:|---:|---:|---:|---:|")
            print(
                f"| first after enabling | {t['seconds']:.1f} | {t['cpu']:.1f} | {t['backend_cpu']} | {t['load']:.1f} | {t['signals']:,} |"
            )
            print(
                f"| next (all in cooldown) | {t['steady_seconds']:.1f} | {t['steady_cpu']:.1f} | {t['steady_backend_cpu']} "
                f"| {t['steady_load']:.1f} | {t['steady_signals']:,} |"
            )


if __name__ == "__main__":
    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    main()
