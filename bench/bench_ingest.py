"""Ingest benchmark: raw kafka-python consume rate vs ingest rate (records consumed
and committed to the database) on SQLite and PostgreSQL, in one run on one machine;
then scale-out (1, 2 and 4 worker processes in one consumer group against PostgreSQL,
with exact totals checked); then peak memory of the ingest worker as the number of
accounts grows. Beside ingest on PostgreSQL, in the same run on the same topic, a peer:
Quix Streams' PostgreSQL sink (bench/peer_quix.py), with Touchline's rate as a ratio of
it. Next to each rate: CPU microseconds per record of the consumer, and on
PostgreSQL of the database backends serving it (this machine is shared, so CPU per
record is steadier than the rate).

    make bench-ingest                      # defaults below
    .venv/bin/python -m bench.bench_ingest --events 200000 --accounts 1000,100000 --scale 1,2,4

PostgreSQL is used when TOUCHLINE_BENCH_POSTGRES_URL is set (default: the local
postgresql://postgres@127.0.0.1:5432/test if it answers); the benchmark creates and
drops its own database there.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import psutil
from kafka import KafkaConsumer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.broker import EmbeddedBroker, free_port
from shared.collector import freeze_startup_heap
from shared.kafka import compat
from shared.settings import Settings

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime.now(UTC).replace(microsecond=0)


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
        out.append(
            json.dumps(
                {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "account_id": a,
                    "user_id": f"u{rng.randint(0, 20)}",
                    "name": rng.choice(names),
                    "timestamp": ts.isoformat(),
                },
                separators=(",", ":"),
            ).encode()
        )
    return out


def publish(settings: Settings, topic: str, values: list[bytes]) -> float:
    from shared.kafka.clients import ensure_topics, make_producer

    ensure_topics(settings, {topic: settings.topic_partitions})
    producer = make_producer(settings, linger_ms=20, batch_size=512 * 1024, acks=1, max_in_flight_requests_per_connection=5)
    started = time.perf_counter()
    for v in values:
        key = v[v.index(b'"account_id":"') + 14 :].split(b'"', 1)[0]
        producer.send(topic, key=key, value=v)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


def raw_consume(settings: Settings, topic: str, n: int) -> tuple[float, float]:
    """Seconds to consume ``n`` records with a bare consumer, and its CPU seconds."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_records=settings.kafka_max_poll_records,
    )
    got = 0
    started = None
    cpu = 0.0
    while got < n:
        batch = consumer.poll(500)
        if batch and started is None:
            started = time.perf_counter()  # exclude the group join from the rate
            cpu = time.process_time()
        for recs in batch.values():
            got += len(recs)
        if batch:
            consumer.commit()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    consumer.close()
    return elapsed, cpu


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries it over an exec from
    the process that spawned us, so a child of a big parent reported the parent's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def backend_cpu_seconds(engine) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to this database
    (the server is local: their processes are readable)."""
    with engine.connect() as c:
        pids = list(c.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars())
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def ingest_phase(args) -> None:
    """Child process: ingest `n` records from `topic` into `db_url`; print JSON figures."""
    from services.ingest.events.worker import IngestWorker
    from shared.db import make_engine, make_session_factory
    from shared.migrate import upgrade

    settings = Settings(
        env="test",
        database_url=args.db_url,
        kafka_bootstrap=args.bootstrap,
        var_dir=args.var_dir,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
    )
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    worker = IngestWorker(settings, factory, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    worker.topics = lambda: [args.topic]
    worker.start()
    freeze_startup_heap()  # as `touchline worker` does before its loop
    rss_before = peak_rss_mb()
    pg = engine.dialect.name == "postgresql"
    profile = cProfile.Profile() if args.profile else None
    done = 0
    started = None
    while done < args.n:
        if profile is not None and done:
            profile.enable()  # from the second batch on, as the rate
        n = worker.poll_once(500)
        if profile is not None:
            profile.disable()
        if n and started is None:
            started = time.perf_counter()
            cpu, db_cpu = time.process_time(), backend_cpu_seconds(engine) if pg else 0.0
            first = n
        done += n
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    db_cpu = backend_cpu_seconds(engine) - db_cpu if pg else None
    worker.close()
    if profile is not None:
        os.makedirs(os.path.dirname(args.profile) or ".", exist_ok=True)
        profile.dump_stats(f"{args.profile}.{engine.dialect.name}")
    # The first batch's time is not in `elapsed` (the clock starts after it): count it out.
    print(
        json.dumps(
            {
                "records": done - first,
                "seconds": elapsed,
                "cpu_seconds": cpu,
                "db_cpu_seconds": db_cpu,
                "rss_mb_before": rss_before,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def worker_phase(args) -> None:
    """Child process of the scale-out run: one ingest worker in group ``args.group`` until
    ``args.stop_file`` exists; prints the records it handled and its CPU seconds."""
    from services.ingest.events.worker import IngestWorker
    from shared.db import make_engine, make_session_factory

    settings = Settings(
        env="test",
        database_url=args.db_url,
        kafka_bootstrap=args.bootstrap,
        var_dir=args.var_dir,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
    )
    worker = IngestWorker(settings, make_session_factory(make_engine(settings)), group_id=args.group)
    worker.topics = lambda: [args.topic]
    worker.start()
    freeze_startup_heap()  # as `touchline worker` does before its loop
    handled = 0
    first_cpu = last_cpu = None
    while not os.path.exists(args.stop_file):
        before = time.process_time()
        n = worker.poll_once(200)
        if n:
            handled += n
            first_cpu = before if first_cpu is None else first_cpu
            last_cpu = time.process_time()
    worker.close()
    # CPU from its first batch to its last (start-up imports and idle polls left out)
    cpu = (last_cpu - first_cpu) if first_cpu is not None and last_cpu is not None else 0.0
    print(json.dumps({"handled": handled, "cpu_seconds": cpu}))


def expected_totals(values: list[bytes]) -> dict[str, int]:
    """What exactly-once storage of ``values`` (all valid, distinct) must show."""
    events = [json.loads(v) for v in values]
    track = [e for e in events if e.get("type", "track") == "track"]
    return {"events": len(events), "usage": len(track), "activity": sum(1 for e in track if e.get("user_id"))}


def stored_totals(engine) -> dict[str, int]:
    with engine.connect() as c:
        return {
            "events": c.execute(text("SELECT count(*) FROM events")).scalar_one(),
            "usage": c.execute(text("SELECT coalesce(sum(count), 0) FROM usage_daily")).scalar_one(),
            "activity": c.execute(text("SELECT coalesce(sum(count), 0) FROM user_activity_daily")).scalar_one(),
        }


def run_scale(broker: EmbeddedBroker, topic: str, values: list[bytes], pg: str, processes: int, var_dir: str) -> dict:
    """``processes`` ingest workers in one new group on ``topic`` into a fresh database:
    the wall time from the first stored event to the last, each process's share and CPU,
    the CPU of the database backends, of the broker and of the whole machine meanwhile,
    and the stored totals against the exact expected ones."""
    from shared.db import make_engine
    from shared.migrate import upgrade

    expected = expected_totals(values)
    group = f"scale-{uuid.uuid4().hex[:6]}"
    stop_file = os.path.join(var_dir, f"{group}.stop")
    with PgDatabase(pg) as url:
        engine = make_engine(Settings(env="test", database_url=url, var_dir=var_dir))
        upgrade(engine)
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_ingest",
                    "--phase",
                    "worker",
                    "--topic",
                    topic,
                    "--db-url",
                    url,
                    "--bootstrap",
                    broker.bootstrap,
                    "--var-dir",
                    var_dir,
                    "--group",
                    group,
                    "--stop-file",
                    stop_file,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        assert broker.proc is not None
        broker_ps = psutil.Process(broker.proc.pid)
        count = 0
        while count == 0:
            time.sleep(0.05)
            count = stored_totals(engine)["events"]
        started = time.perf_counter()
        machine, brk = psutil.cpu_times(), broker_ps.cpu_times()
        while count < expected["events"]:
            time.sleep(0.1)
            count = stored_totals(engine)["events"]
        elapsed = time.perf_counter() - started
        machine_after, brk_after = psutil.cpu_times(), broker_ps.cpu_times()
        db_cpu = backend_cpu_seconds(engine)
        open(stop_file, "w").close()
        figures = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
        totals = stored_totals(engine)
        engine.dispose()
    busy = sum(getattr(machine_after, f) - getattr(machine, f) for f in ("user", "system", "nice", "irq", "softirq"))
    return {
        "processes": processes,
        "seconds": elapsed,
        "rate": expected["events"] / elapsed,
        "handled": [f["handled"] for f in figures],
        "worker_cpu": [f["cpu_seconds"] for f in figures],
        "db_cpu": db_cpu,
        "broker_cpu": (brk_after.user + brk_after.system) - (brk.user + brk.system),
        "machine_busy": busy,
        "cores": psutil.cpu_count(),
        "exact": totals == expected,
        "totals": totals,
        "expected": expected,
    }


def run_ingest(bootstrap: str, topic: str, n: int, db_url: str, var_dir: str, profile: str | None = None) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_ingest",
            "--phase",
            "ingest",
            "--topic",
            topic,
            "--n",
            str(n),
            "--db-url",
            db_url,
            "--bootstrap",
            bootstrap,
            "--var-dir",
            var_dir,
        ]
        + (["--profile", profile] if profile else []),
        capture_output=True,
        text=True,
        check=True,
    )
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


PEER_REQUIREMENTS = os.path.join(os.path.dirname(__file__), "peer-requirements.txt")


def peer_python(var_dir: str) -> str:
    """The peer sink's interpreter: a virtualenv of its own under ``var_dir`` (made once,
    from bench/peer-requirements.txt; Quix Streams' pins clash with Touchline's)."""
    venv = os.path.join(var_dir, "peer-venv")
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".installed")
    if not os.path.exists(stamp) or os.path.getmtime(stamp) < os.path.getmtime(PEER_REQUIREMENTS):
        print(f"installing the peer sink (Quix Streams) into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", PEER_REQUIREMENTS], check=True)
        open(stamp, "w").close()
    return python


def run_peer(var_dir: str, bootstrap: str, topic: str, n: int, pg: str) -> dict:
    """Quix Streams' PostgreSQL sink over ``topic`` into a database of its own: records,
    seconds, its CPU seconds and its PostgreSQL backend's (bench/peer_quix.py); every
    event must be stored once."""
    python = peer_python(var_dir)
    with PgDatabase(pg) as url:
        engine = create_engine(url)
        dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
        script = os.path.join(os.path.dirname(__file__), "peer_quix.py")
        out = subprocess.run(
            [python, script, "--bootstrap", bootstrap, "--topic", topic, "--n", str(n), "--dsn", dsn],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        with engine.connect() as c:
            stored = c.execute(text("SELECT count(DISTINCT event_id) FROM events")).scalar_one()
        engine.dispose()
    if stored != n:
        raise SystemExit(f"the peer sink stored {stored} of {n} events")
    return r


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
    p.add_argument("--scale", default="1,2,4", help="worker process counts for the scale-out run ('' skips it)")
    p.add_argument("--group"), p.add_argument("--stop-file")
    p.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer sink")
    p.add_argument("--profile", help="write cProfile stats of the ingest runs to PROFILE.sqlite and PROFILE.postgresql")
    p.add_argument("--topic"), p.add_argument("--n", type=int), p.add_argument("--db-url")
    p.add_argument("--bootstrap"), p.add_argument("--var-dir", default="var/bench")
    args = p.parse_args()
    if args.phase == "ingest":
        ingest_phase(args)
        return
    if args.phase == "worker":
        worker_phase(args)
        return

    tmp = tempfile.mkdtemp(prefix="touchline-bench-")
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    settings = Settings(
        env="test", kafka_bootstrap=broker.bootstrap, var_dir=tmp, kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300
    )
    pg = pg_url()
    try:
        print(f"Generating {args.events} demo events...", flush=True)
        values = demo_events(args.events)
        topic = f"bench-{uuid.uuid4().hex[:6]}.product.events"
        secs = publish(settings, topic, values)
        print(f"published {len(values)} events in {secs:.1f}s ({len(values) / secs:,.0f}/s)", flush=True)

        print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        raw_secs, raw_cpu = raw_consume(settings, topic, len(values))
        raw_rate = len(values) / raw_secs
        print(f"raw kafka-python consume: {raw_rate:,.0f} records/s, {raw_cpu / len(values) * 1e6:.1f} us CPU/record", flush=True)

        rows = [("raw consume (kafka-python, no processing)", raw_rate, 1.0, raw_cpu / len(values) * 1e6, None)]
        sq = run_ingest(broker.bootstrap, topic, len(values), f"sqlite:///{tmp}/bench.db", tmp, args.profile)
        rate = sq["records"] / sq["seconds"]
        rows.append(("ingest -> SQLite", rate, rate / raw_rate, sq["cpu_seconds"] / sq["records"] * 1e6, None))
        print(f"ingest on SQLite: {rate:,.0f} records/s ({rate / raw_rate:.2f} of raw)", flush=True)
        if pg:
            with PgDatabase(pg) as url:
                r = run_ingest(broker.bootstrap, topic, len(values), url, tmp, args.profile)
            rate = r["records"] / r["seconds"]
            rows.append(
                (
                    "ingest -> PostgreSQL",
                    rate,
                    rate / raw_rate,
                    r["cpu_seconds"] / r["records"] * 1e6,
                    r["db_cpu_seconds"] / r["records"] * 1e6,
                )
            )
            print(f"ingest on PostgreSQL: {rate:,.0f} records/s ({rate / raw_rate:.2f} of raw)", flush=True)
            if not args.no_peer:
                peer = run_peer(args.var_dir, broker.bootstrap, topic, len(values), pg)
                peer_rate = peer["records"] / peer["seconds"]
                rows.append(
                    (
                        "peer: Quix Streams PostgreSQL sink (dedupe on event_id, no validation nor rollups)",
                        peer_rate,
                        peer_rate / raw_rate,
                        peer["cpu_seconds"] / peer["records"] * 1e6,
                        peer["db_cpu_seconds"] / peer["records"] * 1e6,
                    )
                )
                print(
                    f"peer sink (Quix Streams) on PostgreSQL: {peer_rate:,.0f} records/s; "
                    f"Touchline's ingest is {rate / peer_rate:.2f}x the peer",
                    flush=True,
                )
        load_after_ingest = os.getloadavg()

        scale = []
        if pg and args.scale:
            for n in [int(x) for x in args.scale.split(",")]:
                r = run_scale(broker, topic, values, pg, n, tmp)
                scale.append(r)
                print(f"scale-out, {n} process(es): {r['rate']:,.0f} records/s, exact totals: {r['exact']}", flush=True)

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

        print(f"\nLoad average after the ingest runs: {' '.join(f'{x:.1f}' for x in load_after_ingest)} ({psutil.cpu_count()} cores)")
        print(
            "\n| measurement | records/s | ratio to raw consume | consumer CPU µs/record | PostgreSQL CPU µs/record |"
            "\n|---|---:|---:|---:|---:|"
        )
        for name, rate, ratio, cpu, db in rows:
            print(f"| {name} | {rate:,.0f} | {ratio:.2f} | {cpu:.1f} | {'-' if db is None else f'{db:.1f}'} |")
        if scale:
            print(
                f"\nScale-out ({len(values):,} events, 4 partitions, one group, PostgreSQL; CPU in seconds over the run):\n\n"
                "| processes | seconds | records/s total | records/s per process | records handled per process | "
                "workers CPU | PostgreSQL CPU | broker CPU | machine busy / available | exact totals |\n"
                "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"
            )
            for r in scale:
                n = r["processes"]
                print(
                    f"| {n} | {r['seconds']:.1f} | {r['rate']:,.0f} | {r['rate'] / n:,.0f} | "
                    f"{', '.join(f'{h:,}' for h in r['handled'])} | {sum(r['worker_cpu']):.1f} | {r['db_cpu']:.1f} | "
                    f"{r['broker_cpu']:.1f} | {r['machine_busy']:.1f} / {r['cores'] * r['seconds']:.1f} | "
                    f"{'yes' if r['exact'] else 'NO: ' + json.dumps(r['totals']) + ' expected ' + json.dumps(r['expected'])} |"
                )
        print(
            f"\nMemory ({args.memory_events:,} events, {'PostgreSQL' if pg else 'SQLite'}):\n\n| accounts | peak RSS of the worker | records/s |\n|---:|---:|---:|"
        )
        for n_accounts, rss, rate in mem:
            print(f"| {n_accounts:,} | {rss:.0f} MB | {rate:,.0f} |")
    finally:
        broker.stop()


if __name__ == "__main__":
    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    main()
