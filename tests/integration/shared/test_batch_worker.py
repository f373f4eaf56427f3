"""The batch loop itself (shared/kafka/batch_worker.py), driven through a minimal worker on
the real broker and database: every record handled once, in partition order, its effects
committed, then its offsets; with and without ``overlap``; and records that are not ready
held back and handled once they are.

The services' worker tests cover the same loop through ingest and rules, but each takes
seconds to tens of seconds (worker processes, group rebalances, waits on another worker).
These take about a second, so a broken loop fails here first: under `make mutation`
(docs/testing.md) the loop's mutants die in these sessions rather than after the slow ones.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services.ingest.models import RawEvent
from shared.kafka.batch_worker import BatchResult, BatchWorker
from tests.support.helpers import T0, committed_offsets, drain, publish

ACCOUNTS = ["a1", "a2", "a3", "a4", "a5", "a6"]  # keys spread over the topic's partitions


class _Recorder(BatchWorker):
    """Stores each record as a raw event and remembers what it handled, in order. A record
    whose ``hold`` is set is not ready until :attr:`released`: ready() returns each
    partition's prefix before the first such record, as a worker that waits on another's
    progress does."""

    name = "recorder"

    def __init__(self, settings, *args, overlap: bool = False, **kwargs):
        # Batches of 5: an overlapping worker then finds the next records already fetched
        # while it stores a batch, and handles that batch polled ahead next.
        super().__init__(settings.model_copy(update={"kafka_max_poll_records": 5}), *args, **kwargs)
        self.overlap = overlap
        self.released = False
        self.handled: list[tuple[int, int, str]] = []
        self.not_ready_wait_seconds = 0.0

    def topics(self):
        return [self.settings.topic_events]

    def ready(self, records):
        if self.released:
            return records
        blocked: set[int] = set()
        out = []
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            if r.partition in blocked or json.loads(r.value).get("hold"):
                blocked.add(r.partition)
                continue
            out.append(r)
        return out

    def handle_batch(self, session, records):
        for r in records:
            event_id = json.loads(r.value)["event_id"]
            self.handled.append((r.partition, r.offset, event_id))
            session.add(RawEvent(event_id=event_id, account_id="a", type="track", name="n", timestamp=T0, properties={}, received_at=T0))
        return BatchResult()


def _stored(session_factory) -> set[str]:
    with session_factory() as s:
        return set(s.scalars(select(RawEvent.event_id)))


def _count(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(RawEvent))


def _ends(worker) -> dict[int, int]:
    """Each partition's next offset after what the worker handled."""
    ends: dict[int, int] = {}
    for partition, offset, _ in worker.handled:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def _in_partition_order(worker) -> bool:
    last: dict[int, int] = {}
    for partition, offset, _ in worker.handled:
        if offset <= last.get(partition, -1):
            return False
        last[partition] = offset
    return True


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_every_record_is_handled_once_in_order_and_its_offset_committed_after_its_effects(topics, session_factory, clock, overlap):
    w = _Recorder(topics, session_factory, clock, overlap=overlap)
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(40)]
    try:
        publish(topics, records[:20])
        first = drain(w, lambda: _count(session_factory) == 20)
        # A second wave, so an overlapping worker also handles a batch it polled ahead.
        publish(topics, records[20:])
        second = drain(w, lambda: _count(session_factory) == 40 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
    finally:
        w.close()
    assert first + second == 40  # poll_once counts what it handled
    assert sorted(e for _, _, e in w.handled) == sorted(r["event_id"] for r in records)  # each once
    assert _stored(session_factory) == {r["event_id"] for r in records}
    assert _in_partition_order(w)
    assert len(_ends(w)) > 1  # the records spread over several partitions
    assert committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w)


@pytest.mark.parametrize("overlap", [False, True], ids=["plain", "overlap"])
def test_records_not_ready_are_held_back_uncommitted_then_handled_once_when_ready(topics, session_factory, clock, overlap):
    w = _Recorder(topics, session_factory, clock, overlap=overlap)
    ready = [{"event_id": f"r{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(12)]
    held = [{"event_id": f"h{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)], "hold": True} for i in range(12)]
    try:
        publish(topics, ready + held)
        drain(w, lambda: _count(session_factory) == 12 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
        # Polled and not ready: neither handled nor committed past.
        assert _stored(session_factory) == {r["event_id"] for r in ready}
        w.released = True
        drain(w, lambda: _count(session_factory) == 24 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
    finally:
        w.close()
    assert sorted(e for _, _, e in w.handled) == sorted(r["event_id"] for r in ready + held)  # each once
    assert _in_partition_order(w)
    assert _stored(session_factory) == {r["event_id"] for r in ready + held}
