"""Does the ingest worker retain Python objects over a steady stream? tracemalloc says.

An embedded broker, a fresh SQLite file, one ingest worker in a thread and a producer at
RATE events/s over 200 accounts (about the live demo's shape). Every minute: the RSS and the
memory tracemalloc traces (after a full collection); at the end, the largest differences
between the snapshot at minute 4 (after warm-up) and the last one, with their tracebacks.
A leak shows as traced memory that climbs and a difference that grows with the count of
blocks; in-flight batches and fetch buffers come and go. Numbers are printed, never asserted.

    .venv/bin/python -m bench.ingest_heap [minutes=20] [rate=300]

tracemalloc slows the worker and its own tables count in the RSS; compare the RSS with
`make soak`'s, not with production.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.soak import rss_mb
from services.ingest.events.worker import IngestWorker
from shared.broker import EmbeddedBroker, free_port
from shared.db import make_engine, make_session_factory
from shared.kafka import compat
from shared.kafka.clients import ensure_topics, make_producer
from shared.migrate import upgrade
from shared.settings import Settings

NAMES = ["login", "report_viewed", "export", "invite_sent", "dashboard_opened"]


def produce(settings: Settings, rate: int, stop: threading.Event) -> None:
    producer = make_producer(settings)
    while not stop.is_set():
        started = time.monotonic()
        for _ in range(rate):
            account = f"acct-{random.randrange(200)}"
            event = {
                "event_id": str(uuid.uuid4()),
                "account_id": account,
                "user_id": f"u{random.randrange(20)}",
                "name": random.choice(NAMES),
                "timestamp": datetime.now(UTC).isoformat(),
                "properties": {"plan": "pro", "n": random.randrange(100)},
            }
            producer.send(settings.topic_events, key=account.encode(), value=json.dumps(event).encode())
        producer.flush()
        stop.wait(max(0.0, 1 - (time.monotonic() - started)))  # a steady rate, not a clock stand-in
    producer.close()


def main(minutes: float, rate: int) -> None:
    var = Path(tempfile.mkdtemp(prefix="ingest-heap-"))
    broker = EmbeddedBroker("127.0.0.1", free_port()).start()
    settings = Settings(
        env="test",
        kafka_bootstrap=broker.bootstrap,
        topic_prefix="heap.",
        database_url=f"sqlite:///{var}/touchline.db",
        var_dir=var,
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=300,
    )
    ensure_topics(settings)
    engine = make_engine(settings)
    upgrade(engine)
    worker = IngestWorker(settings, make_session_factory(engine))
    stop = threading.Event()
    consuming = threading.Thread(target=worker.run, daemon=True)
    producing = threading.Thread(target=produce, args=(settings, rate, stop), daemon=True)
    consuming.start()
    producing.start()
    tracemalloc.start(15)
    started = time.monotonic()
    base = last = None
    try:
        while time.monotonic() - started < minutes * 60:
            stop.wait(60)
            gc.collect()
            last = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            at = (time.monotonic() - started) / 60
            traced = sum(s.size for s in last.statistics("filename")) / 1e6
            print(f"{at:5.1f} min  rss {rss_mb(os.getpid()) or 0:6.1f} MB  traced {traced:6.2f} MB", flush=True)
            if base is None and at >= 4:
                base = last
        if base is not None and last is not None:
            print("largest differences, minute 4 to the end:")
            for diff in last.compare_to(base, "traceback")[:8]:
                print(f"  {diff.size_diff / 1e3:+.1f} kB ({diff.count_diff:+d} blocks)")
                for line in diff.traceback.format()[-6:]:
                    print("     ", line)
    finally:
        stop.set()
        worker.stop_event.set()
        consuming.join(30)
        producing.join(30)
        engine.dispose()
        broker.stop()


if __name__ == "__main__":
    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20, int(sys.argv[2]) if len(sys.argv) > 2 else 300)
