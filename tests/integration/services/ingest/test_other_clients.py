"""Product apps produce with the Kafka client of their language, not ours: events from
librdkafka (the C client inside confluent-kafka, and under most non-Java clients), as an
idempotent producer with compression and as a transactional producer, are ingested once
each; an aborted transaction's events never are, and the transaction markers are not
records (nothing reaches the DLQ)."""

from __future__ import annotations

import json
import uuid

from confluent_kafka import Producer
from sqlalchemy import select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from tests.support.helpers import T0, drain, read_topic, track


def _value(event_id: str) -> bytes:
    return json.dumps(track("acme", "login", T0, "ada", event_id)).encode()


def _stored(session_factory) -> set[str]:
    with session_factory() as s:
        return set(s.scalars(select(RawEvent.event_id)))


def test_librdkafka_idempotent_compressed_and_transactional_producers(topics, session_factory, clock):
    conf = {"bootstrap.servers": topics.bootstrap_servers, "linger.ms": 5}
    expected: set[str] = set()

    for codec in ("lz4", "zstd"):
        producer = Producer({**conf, "enable.idempotence": True, "compression.type": codec})
        for i in range(5):
            producer.produce(topics.topic_events, key=b"acme", value=_value(f"{codec}-{i}"))
            expected.add(f"{codec}-{i}")
        assert producer.flush(15) == 0
        producer.close()

    txn = Producer({**conf, "transactional.id": f"product-app-{uuid.uuid4().hex[:8]}"})
    txn.init_transactions(15)
    txn.begin_transaction()
    for i in range(3):
        txn.produce(topics.topic_events, key=b"acme", value=_value(f"committed-{i}"))
        expected.add(f"committed-{i}")
    txn.commit_transaction(15)
    txn.begin_transaction()
    for i in range(3):
        txn.produce(topics.topic_events, key=b"acme", value=_value(f"aborted-{i}"))
    txn.abort_transaction(15)
    # One event on every partition after the abort: once each is stored, everything before
    # it on its partition (the aborted records and the markers included) has been read.
    for p in range(topics.topic_partitions):
        txn.begin_transaction()
        txn.produce(topics.topic_events, key=b"acme", value=_value(f"after-{p}"), partition=p)
        txn.commit_transaction(15)
        expected.add(f"after-{p}")
    txn.close()

    worker = IngestWorker(topics, session_factory, clock)
    try:
        # A real Kafka hands a read_uncommitted consumer an aborted transaction's records;
        # the embedded broker withholds them either way, so the setting is checked here.
        assert worker.start()._live().config["isolation_level"] == "read_committed"
        drain(worker, lambda: expected <= _stored(session_factory))
    finally:
        worker.close()
    assert _stored(session_factory) == expected  # each once, and nothing of the aborted transaction
    assert read_topic(topics, topics.topic_events_dlq, expect=1, timeout=2) == []  # no marker read as a record
