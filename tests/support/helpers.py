"""Test helpers: build events, publish raw records, drive workers until a condition holds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Engine

from shared.db import make_engine
from shared.kafka.clients import ensure_topics, make_consumer, make_producer
from shared.kafka.dlq import parse_dlq_record
from shared.settings import Settings

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday: the simulated clock's start
ROOT = Path(__file__).resolve().parents[2]  # the repository


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def expected_held_out(bucket_key: str, account_id: str, percent: float) -> bool:
    """The documented holdout assignment (docs/playbooks.md), computed here without the
    code under test: the first 8 bytes of SHA-256("<key>\\x1f<account>") as a fraction
    of 2**64, held out when below the percentage."""
    digest = hashlib.sha256(f"{bucket_key}\x1f{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100 < percent * 2**64


async def walk(api, path: str, headers: dict, limit: int = 1000) -> list[dict]:
    """Every item of an API list, page by page, following next_cursor."""
    items: list[dict] = []
    cursor = None
    while True:
        sep = "&" if "?" in path else "?"
        r = await api.get(f"{path}{sep}limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else ""), headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def track(account_id: str, name: str, ts: datetime, user_id: str | None = None, event_id: str | None = None, **props) -> dict:
    ev = {
        "event_id": event_id or str(uuid.uuid4()),
        "account_id": account_id,
        "name": name,
        "timestamp": ts.isoformat(),
        "properties": props,
    }
    if user_id:
        ev["user_id"] = user_id
    return ev


def publish(settings: Settings, records: list, topic: str | None = None) -> None:
    """Publish records: dicts are JSON-encoded and keyed by account_id; (key, bytes) tuples go as they are."""
    producer = make_producer(settings)
    for r in records:
        if isinstance(r, dict):
            producer.send(topic or settings.topic_events, key=str(r.get("account_id", "")).encode(), value=json.dumps(r).encode())
        else:
            key, value = r
            producer.send(topic or settings.topic_events, key=key, value=value)
    producer.flush()
    producer.close()


# make mutation scales drain's deadline down (tools/mutation.py; docs/testing.md): a mutant
# that stops the batch loop is then killed when a shorter wait gives up. Everywhere else
# it is 1, and a deadline only ever bounds a failing test.
DRAIN_DEADLINE_SCALE = float(os.environ.get("TOUCHLINE_TEST_DRAIN_DEADLINE_SCALE", "1"))


def drain(workers, until: Callable[[], bool], timeout: float = 30.0) -> int:
    """Poll the workers until ``until()`` holds; returns how many records they handled
    meanwhile. The deadline only bounds a failing test."""
    workers = workers if isinstance(workers, list | tuple) else [workers]
    timeout *= DRAIN_DEADLINE_SCALE
    deadline = time.monotonic() + timeout
    handled = 0
    while time.monotonic() < deadline:
        for w in workers:
            handled += w.poll_once(100) or 0
        if until():
            return handled
    raise AssertionError(f"condition not met within {timeout:g}s")


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()
) -> Any:
    """Wait for a condition outside our workers (a process, a file, a port) and return its
    first truthy value; exceptions of the ``ignore`` types count as "not yet". The deadline
    only bounds a failing test; the interval is a polling period, not a stand-in for time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def committed_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The offsets ``group_id`` has committed on ``topic``, read from the broker without
    joining the group (partitions with no commit are left out)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group_id, enable_auto_commit=False)
    try:
        out = {}
        for p in consumer.partitions_for_topic(topic) or set():
            offset = consumer.committed(TopicPartition(topic, p))
            if offset is not None:
                out[p] = offset
        return out
    finally:
        consumer.close(autocommit=False)


def read_topic(settings: Settings, topic: str, expect: int, timeout: float = 15.0) -> list:
    """Read a topic from the beginning until ``expect`` records have arrived."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        for recs in consumer.poll(200).values():
            out.extend(recs)
    consumer.close()
    return out


def read_dlq(settings: Settings, expect: int, timeout: float = 15.0) -> list[dict]:
    return [parse_dlq_record(r) for r in read_topic(settings, settings.topic_events_dlq, expect, timeout)]


def run_jobs(settings: Settings, session_factory, clock=None) -> int:
    """Run every queued background job to its end, here (the jobs worker, in-process)."""
    from services.jobs import JobWorker

    worker = JobWorker(settings, session_factory, clock)
    ran = 0
    while worker.poll_once():
        ran += 1
    return ran


UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def unreachable_database(settings: Settings, db_kind: str, tmp_path: Path) -> Engine:
    """An engine on a database that cannot be reached, of the test's kind: a SQLite file in
    a directory that does not exist, or PostgreSQL on a port nothing listens on."""
    url = f"sqlite:///{tmp_path}/missing-dir/nope.db" if db_kind == "sqlite" else UNREACHABLE_POSTGRES
    return make_engine(settings.model_copy(update={"database_url": url}))


# For a worker process that crashes on purpose: its consumer group forgets it within
# about 2 s (its session times out), so the next worker in the group is not kept waiting.
QUICK_SESSION_TIMEOUT = {"TOUCHLINE_KAFKA_SESSION_TIMEOUT_MS": "2000", "TOUCHLINE_KAFKA_HEARTBEAT_INTERVAL_MS": "300"}


def cli_env(settings: Settings, **variables: str) -> dict[str, str]:
    """The environment of a ``touchline`` child process on this test's database, broker,
    topics and var dir (TOUCHLINE_ENV=test). ``variables`` add settings by their names,
    e.g. ``TOUCHLINE_FAULT="ingest.after_db_commit"``."""
    return {
        **os.environ,
        "TOUCHLINE_ENV": "test",
        "TOUCHLINE_DATABASE_URL": settings.database_url,
        "TOUCHLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "TOUCHLINE_TOPIC_PREFIX": settings.topic_prefix,
        "TOUCHLINE_VAR_DIR": str(settings.var_dir),
        **variables,
    }


def run_cli(settings: Settings, *args: str, timeout: float = 120, **variables: str) -> subprocess.CompletedProcess:
    """``touchline <args>`` run to its end in that environment (:func:`cli_env`), its
    output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "services.wiring.cli", *args],
        env=cli_env(settings, **variables),
        timeout=timeout,
        capture_output=True,
        text=True,
    )


def warm_up_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """One full round trip before any test: create a topic, produce, join a consumer
    group, consume, commit. A listening port is not a broker ready to coordinate groups;
    the first test of a session must not be the one that pays (or times out on) the
    broker's first group join."""
    s = Settings(
        env="test", kafka_bootstrap=bootstrap, topic_prefix="warmup.", kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300
    )
    ensure_topics(s, {s.topic_events: 1})
    producer = make_producer(s)
    producer.send(s.topic_events, key=b"warm", value=b"{}").get(timeout=timeout)
    producer.close()
    consumer = make_consumer(s, s.topic("warmup"), [s.topic_events])
    try:
        deadline = time.monotonic() + timeout
        while not consumer.poll(200):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded broker did not serve a consumer group within {timeout}s")
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
