"""Ingest benchmark: raw kafka-python consume rate vs ingest rate (records consumed
and committed to the database) on SQLite and PostgreSQL, in one run on one machine;
then peak memory of the ingest worker as the number of accounts grows.

    make bench-ingest                      # defaults below
    .venv/bin/python -m bench.bench_ingest --events 200000 --accounts 1000,100000

PostgreSQL is used when TOUCHLINE_BENCH_POSTGRES_URL is set (default: the local
postgresql://postgres@127.0.0.1:5432/test if it answers); the benchmark creates and
drops its own database there.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

from kafka import KafkaConsumer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.broker import EmbeddedBroker, free_port
from shared.settings import Settings

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def demo_events(n: int) -> list[bytes]:
    """The first n events of the demo stream (realistic mix of accounts, users, names)."""
    from services.demo import generate

    out = []
    days = 60
    while True:
        out = []
        for ev in generate(accounts=100, days=days, seed=11, end=NOW):
            out.append(ev)
            if len(out) >= n:
                return [json.dumps(e, separators=(",", ":")).encode() for e in out]
        days *= 2


def uniform_events(n: int, accounts: int) -> list[bytes]:
    """n track events spread evenly over `accounts` accounts (for the memory curve)."""
    rng = random.Random(5)
    names = ["login", "dashboard_viewed", "report_created", "query_run", "export_run"]
    out = []
    for i in range(n):
        a = f"acct-{i % accounts:06d}"
        ts = NOW - timedelta(seconds=rng.randint(0, 60 * 86400))
        out.append(json.dumps({"event_id": str(uuid.UUID(int=rng.getrandbits(128))), "account_id": a,
                               "user_id": f"u{rng.randint(0, 20)}", "name": rng.choice(names),
                               "timestamp": ts.isoformat()}, separators=(",", ":")).encode())
    return out


def publish(settings: Settings, topic: str, values: list[bytes]) -> float:
    from shared.kafka import ensure_topics, make_producer

    ensure_topics(settings, {topic: settings.topic_partitions})
    producer = make_producer(settings, linger_ms=20, batch_size=512 * 1024, acks=1, max_in_flight_requests_per_connection=5)
    started = time.perf_counter()
    for v in values:
        key = v[v.index(b'"account_id":"') + 14:].split(b'"', 1)[0]
        producer.send(topic, key=key, value=v)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def raw_consume(settings: Settings, topic: str, n: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=settings.bootstrap_servers, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=settings.session_timeout_ms, heartbeat_interval_ms=settings.heartbeat_interval_ms,
                             max_poll_records=settings.kafka_max_poll_records)
    got = 0
    started = None
    while got < n:
        batch = consumer.poll(500)
        if batch and started is None:
            started = time.perf_counter()  # exclude the group join from the rate
        for recs in batch.values():
            got += len(recs)
        if batch:
            consumer.commit()
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def ingest_phase(args) -> None:
    """Child process: ingest `n` records from `topic` into `db_url`; print JSON figures."""
    from services.ingest.events.consumer import IngestWorker
    from shared.db import make_engine, make_session_factory
    from shared.migrate import upgrade

    settings = Settings(env="test", database_url=args.db_url, kafka_bootstrap=args.bootstrap, var_dir=args.var_dir,
                        kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300)
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    worker = IngestWorker(settings, factory, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    worker.topics = lambda: [args.topic]
    worker.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    done = 0
    started = None
    while done < args.n:
        n = worker.poll_once(500)
        if n and started is None:
            started = time.perf_counter()
            first = n
        done += n
    elapsed = time.perf_counter() - started
    worker.close()
    # The first batch's time is not in `elapsed` (the clock starts after it): count it out.
    print(json.dumps({"records": done - first, "seconds": elapsed, "rss_mb_before": rss_before / 1024,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_ingest(bootstrap: str, topic: str, n: int, db_url: str, var_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.bench_ingest", "--phase", "ingest", "--topic", topic, "--n", str(n),
                          "--db-url", db_url, "--bootstrap", bootstrap, "--var-dir", var_dir],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class PgDatabase:
    def __init__(self, url: str):
        self.base = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.name = f"touchline_bench_{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> str:
        eng = create_engine(self.base, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.name}"'))
        eng.dispose()
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc):
        eng = create_engine(self.base, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        eng.dispose()


def pg_url() -> str | None:
    url = os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG)
    try:
        eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with eng.connect():
            pass
        eng.dispose()
        return url
    except Exception as exc:
        print(f"(PostgreSQL at {url} not reachable: {exc}; PostgreSQL figures skipped)")
        return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--phase", default="all")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--memory-events", type=int, default=200_000)
    p.add_argument("--accounts", default="1000,100000")
    p.add_argument("--topic"), p.add_argument("--n", type=int), p.add_argument("--db-url")
    p.add_argument("--bootstrap"), p.add_argument("--var-dir", default="var/bench")
    args = p.parse_args()
    if args.phase == "ingest":
        ingest_phase(args)
        return

    import tempfile

    tmp = tempfile.mkdtemp(prefix="touchline-bench-")
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    settings = Settings(env="test", kafka_bootstrap=broker.bootstrap, var_dir=tmp,
                        kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300)
    pg = pg_url()
    try:
        print(f"Generating {args.events} demo events...", flush=True)
        values = demo_events(args.events)
        topic = f"bench-{uuid.uuid4().hex[:6]}.product.events"
        secs = publish(settings, topic, values)
        print(f"published {len(values)} events in {secs:.1f}s ({len(values) / secs:,.0f}/s)", flush=True)

        raw_secs = raw_consume(settings, topic, len(values))
        raw_rate = len(values) / raw_secs
        print(f"raw kafka-python consume: {raw_rate:,.0f} records/s", flush=True)

        rows = [("raw consume (kafka-python, no processing)", raw_rate, 1.0)]
        sq = run_ingest(broker.bootstrap, topic, len(values), f"sqlite:///{tmp}/bench.db", tmp)
        rate = sq["records"] / sq["seconds"]
        rows.append(("ingest -> SQLite", rate, rate / raw_rate))
        print(f"ingest on SQLite: {rate:,.0f} records/s ({rate / raw_rate:.2f} of raw)", flush=True)
        if pg:
            with PgDatabase(pg) as url:
                r = run_ingest(broker.bootstrap, topic, len(values), url, tmp)
            rate = r["records"] / r["seconds"]
            rows.append(("ingest -> PostgreSQL", rate, rate / raw_rate))
            print(f"ingest on PostgreSQL: {rate:,.0f} records/s ({rate / raw_rate:.2f} of raw)", flush=True)

        mem = []
        for n_accounts in [int(x) for x in args.accounts.split(",")]:
            t = f"bench-{uuid.uuid4().hex[:6]}.product.events"
            publish(settings, t, uniform_events(args.memory_events, n_accounts))
            target = pg or f"sqlite:///{tmp}/mem-{n_accounts}.db"
            if pg:
                with PgDatabase(pg) as url:
                    r = run_ingest(broker.bootstrap, t, args.memory_events, url, tmp)
            else:
                r = run_ingest(broker.bootstrap, t, args.memory_events, target, tmp)
            mem.append((n_accounts, r["peak_rss_mb"], r["records"] / r["seconds"]))
            print(f"{n_accounts:>7} accounts: peak RSS {r['peak_rss_mb']:.0f} MB, {r['records'] / r['seconds']:,.0f} records/s", flush=True)

        print("\n| measurement | records/s | ratio to raw consume |\n|---|---:|---:|")
        for name, rate, ratio in rows:
            print(f"| {name} | {rate:,.0f} | {ratio:.2f} |")
        print(f"\nMemory ({args.memory_events:,} events, {'PostgreSQL' if pg else 'SQLite'}):\n\n| accounts | peak RSS of the worker | records/s |\n|---:|---:|---:|")
        for n_accounts, rss, rate in mem:
            print(f"| {n_accounts:,} | {rss:.0f} MB | {rate:,.0f} |")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
