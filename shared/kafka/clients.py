"""Kafka clients: the producer and consumer factories every process uses, the consumer
group of a worker, and the topics Touchline uses, created explicitly with their
partition counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared.settings import Settings

log = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    opts = dict(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        retries=5,
        max_in_flight_requests_per_connection=1,  # keep per-key order across retries
        client_id="touchline",
        bootstrap_timeout_ms=settings.kafka_bootstrap_timeout_ms,
        max_block_ms=settings.kafka_bootstrap_timeout_ms,
        # Topics are created by ensure_topics with their partition counts, never implicitly.
        allow_auto_create_topics=False,
    )
    opts.update(overrides)
    return KafkaProducer(**opts)


def make_consumer(settings: Settings, group_id: str, topics: Iterable[str], **overrides: Any) -> KafkaConsumer:
    opts = dict(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        # The embedded broker answers ListOffsets(latest) wrongly; earliest is right everywhere
        # for a group that has never committed.
        auto_offset_reset="earliest",
        # A product app's transactional producer may abort: its records stay in the log,
        # and only a read_committed consumer skips them (kafka-python defaults to uncommitted).
        isolation_level="read_committed",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        max_poll_records=settings.kafka_max_poll_records,
        client_id=f"touchline-{group_id}",
        allow_auto_create_topics=False,
    )
    opts.update(overrides)
    consumer = KafkaConsumer(**opts)
    consumer.subscribe(list(topics))
    return consumer


def group_id_of(settings: Settings, worker_name: str) -> str:
    """The consumer group of a worker (``touchline-ingest`` …, with the topic prefix)."""
    return settings.topic(f"touchline-{worker_name}")


def topic_specs(settings: Settings) -> dict[str, int]:
    """Every topic Touchline uses, with its partition count (DLQs included)."""
    n = settings.topic_partitions
    return {
        settings.topic_events: n,
        settings.topic_events_dlq: 1,
        settings.topic_signals: n,
        settings.topic_signals_dlq: 1,
    }


def ensure_topics(settings: Settings, specs: dict[str, int] | None = None, timeout: float = 15.0) -> None:
    """Create missing topics with their partition counts (never rely on auto-creation:
    the embedded broker would pick the wrong count after a restart)."""
    specs = specs or topic_specs(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="touchline-admin")
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach Kafka at {settings.bootstrap_servers} ({exc}); check TOUCHLINE_KAFKA_BOOTSTRAP") from exc
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, p, 1) for t, p in specs.items() if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process won the race
            log.info("created topics %s", ", ".join(f"{t.name}({t.num_partitions})" for t in missing))
    finally:
        admin.close()
