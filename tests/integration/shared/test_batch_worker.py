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
from collections import Counter

import pytest
from kafka.errors import KafkaError
from sqlalchemy import func, select

from services.ingest.models import RawEvent
from shared.kafka.batch_worker import BatchResult, BatchWorker, Reject
from tests.support.helpers import T0, committed_offsets, drain, publish, read_dlq

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


def _handle_all(worker, topics, session_factory, records) -> None:
    """Publish ``records``, poll ``worker`` until every one is stored and its offset
    committed, then close it."""
    try:
        publish(topics, records)
        drain(
            worker,
            lambda: (
                _count(session_factory) == len(records) and committed_offsets(topics, worker.group_id, topics.topic_events) == _ends(worker)
            ),
        )
    finally:
        worker.close()


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


def test_overlap_starts_the_batch_polled_ahead_before_committing_the_offsets_of_the_one_before(topics, session_factory, clock, db_kind):
    """With overlap, the batch polled ahead starts its transaction as soon as the batch
    before it is stored, before that one's offsets are committed (the helper thread no
    longer waits on the loop's per-batch round trips); the offsets committed are still
    only those of records already stored, each partition's in order."""
    w = _Recorder(topics, session_factory, clock, overlap=True)
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(60)]
    commits: list[tuple[set[str], set[str], list[str]]] = []  # (committed records, stored then, started early)
    real_commit = w._commit

    def commit(batch):
        early = [json.loads(r.value)["event_id"] for r in w._in_flight[0]] if w._in_flight else []
        commits.append(({json.loads(r.value)["event_id"] for r in batch}, _stored(session_factory), early))
        real_commit(batch)

    w._commit = commit
    _handle_all(w, topics, session_factory, records)
    assert all(committed <= stored for committed, stored, _ in commits), "an offset was committed before its record was stored"
    early = [(committed, started) for committed, _, started in commits if started]
    assert bool(early) == (db_kind != "sqlite"), "a batch started early on SQLite, or none on PostgreSQL"
    assert all(not (committed & set(started)) for committed, started in early)  # the batch after, not this one again
    assert sorted(e for _, _, e in w.handled) == sorted(r["event_id"] for r in records)  # each once
    assert _in_partition_order(w)


class _Rejecting(_Recorder):
    """Rejects records marked ``bad`` (they go to the DLQ) and stores the others as the
    ingest worker does, keyed: a batch that comes again stores nothing twice."""

    def handle_batch(self, session, records):
        rejects = []
        for r in records:
            value = json.loads(r.value)
            self.handled.append((r.partition, r.offset, value["event_id"]))
            if value.get("bad"):
                rejects.append(Reject(r, "invalid", "marked bad"))
            else:
                session.merge(
                    RawEvent(
                        event_id=value["event_id"], account_id="a", type="track", name="n", timestamp=T0, properties={}, received_at=T0
                    )
                )
        return BatchResult(rejects=rejects)


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)  # nothing starts early on SQLite
def test_a_batch_started_early_is_rewound_with_the_one_before_when_its_rejects_cannot_be_published(topics, session_factory, clock, db_kind):
    """The batch before fails to publish its rejects (the broker is away) after the batch
    polled ahead, from another partition, has started: both are read again from their
    first offsets; every record is stored once, every reject reaches the DLQ, and the
    offsets end where the records do. (PostgreSQL: nothing starts early on SQLite.)"""
    w = _Rejecting(topics, session_factory, clock, overlap=True)
    w.db_retry_seconds = 0
    # 120 records in batches of 5: a dozen or more partition changes for the case to meet.
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)], "bad": i % 2 == 0} for i in range(120)]
    real_publish, real_overlapped = w._publish_rejects, w._overlapped
    settling: list = []  # the batch being settled
    failed_with_one_in_flight: list[str] = []

    def overlapped(consumer, batch, future, started):
        settling[:] = batch
        return real_overlapped(consumer, batch, future, started)

    def publish_rejects(rejects):
        early = w._in_flight[0] if w._in_flight else []
        if {r.partition for r in early} - {r.partition for r in settling} and not failed_with_one_in_flight:
            failed_with_one_in_flight.extend(json.loads(r.value)["event_id"] for r in early)
            raise KafkaError("broker away")
        real_publish(rejects)

    w._overlapped, w._publish_rejects = overlapped, publish_rejects
    good = {r["event_id"] for r in records if not r["bad"]}
    try:
        publish(topics, records)
        drain(w, lambda: _stored(session_factory) == good and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
    finally:
        w.close()
    assert failed_with_one_in_flight, "no publish failed while a batch of another partition had started early: the test missed the case"
    times = Counter(e for _, _, e in w.handled)
    assert all(times[e] >= 2 for e in failed_with_one_in_flight), "the batch started early was not read again"
    assert _count(session_factory) == len(good)
    dlq = read_dlq(topics, 60)
    assert sorted(json.loads(d["original_text"])["event_id"] for d in dlq) == sorted(r["event_id"] for r in records if r["bad"])


def test_overlap_keeps_polling_while_the_batch_is_stored_for_records_that_arrive_meanwhile(topics, session_factory, clock):
    """Records published while a batch is being stored are fetched during that time (the
    loop polls until the transaction is done, not once), so the next batch is ready to
    start as soon as this one is stored."""
    import threading

    w = _Recorder(topics, session_factory, clock, overlap=True)
    arrived = threading.Event()
    polled_while_storing: list[bool] = []
    real_poll, real_handle = w._poll, w.handle_batch

    def poll(consumer, timeout_ms, max_records=None):
        out = real_poll(consumer, timeout_ms, max_records)
        if any(json.loads(r.value)["event_id"].startswith("late") for r in out):
            arrived.set()
        return out

    def handle_batch(session, records):
        if not polled_while_storing:  # the first batch: more records arrive while it is stored
            publish(topics, [{"event_id": f"late{i}", "account_id": "a1"} for i in range(3)])
            polled_while_storing.append(arrived.wait(10))
        return real_handle(session, records)

    w._poll, w.handle_batch = poll, handle_batch
    try:
        publish(topics, [{"event_id": "first", "account_id": "a1"}])
        drain(w, lambda: _count(session_factory) == 4 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
    finally:
        w.close()
    assert polled_while_storing == [True], "the records that arrived while the first batch was stored were not fetched meanwhile"
    assert [e for _, _, e in w.handled] == ["first", "late0", "late1", "late2"]


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)  # nothing starts early on SQLite
def test_a_stop_settles_the_batch_started_early_rather_than_leaving_it_stored_and_uncommitted(topics, session_factory, clock, db_kind):
    """Stopped (SIGTERM) while the batch polled ahead has started early, the worker settles
    that batch before it closes: its offsets are committed, so the next owner of the
    partitions does not read and store it a second time (before: every stop left up to a
    batch stored and uncommitted, replayed as duplicates after the restart). PostgreSQL:
    nothing starts early on SQLite."""
    w = _Recorder(topics, session_factory, clock, overlap=True)
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(30)]
    try:
        publish(topics, records)
        drain(w, lambda: w._in_flight is not None)
        early = list(w._in_flight[0])
        w.stop_event.set()
        w.run()
    finally:
        w.close()
    assert early and w._in_flight is None
    handled = [e for _, _, e in w.handled]
    assert len(handled) == len(set(handled))  # each once
    assert {json.loads(r.value)["event_id"] for r in early} <= set(handled)
    assert committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w), "the batch started early was left uncommitted"


def test_a_batch_started_early_never_holds_back_the_progress_report_of_the_one_before(topics, session_factory, clock, db_kind):
    """The loop reports the progress of a batch (what the rules tick reads to know what
    ingest has stored) while the batch after it may already be in its transaction. That
    transaction, open and written to, must not hold the report back: on SQLite (one
    writer at a time) it did, for the whole transaction, and the loop waited there
    instead of polling ahead; there nothing starts early."""
    import threading

    w = _Recorder(topics, session_factory, clock, overlap=True)
    batches: list[tuple[tuple[int, int], ...]] = []  # (partition, offset)s, in the order their transactions ran
    settled: set[tuple[tuple[int, int], ...]] = set()
    changed = threading.Condition()
    waits: list[bool] = []  # for each batch that began before the one before it was settled: was that settled meanwhile?
    real_settle, real_handle = w._settle, w.handle_batch

    def settle(records, *args, **kwargs):
        out = real_settle(records, *args, **kwargs)
        with changed:
            settled.add(tuple((r.partition, r.offset) for r in records))
            changed.notify_all()
        return out

    def handle_batch(session, records):
        result = real_handle(session, records)
        session.flush()  # the transaction has begun and written, as ingest's statements do
        with changed:
            before = batches[-1] if batches else None
            batches.append(tuple((r.partition, r.offset) for r in records))
            if before is not None and before not in settled and all(waits):  # started early
                waits.append(changed.wait_for(lambda: before in settled, timeout=5))
        return result

    w._settle, w.handle_batch = settle, handle_batch
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(30)]
    try:
        publish(topics, records)
        drain(w, lambda: _count(session_factory) == 30 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
    finally:
        w.close()
    assert all(waits), "the batch before was not settled (progress reported) while the next one's transaction was open"
    assert bool(waits) == (db_kind != "sqlite")  # started early on PostgreSQL only


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)  # nothing starts early on SQLite
def test_the_progress_reported_while_a_batch_runs_early_counts_it_as_not_yet_stored(topics, session_factory, clock, db_kind):
    """What the rules tick's freshness gate reads (consumer_progress): while the batch
    polled ahead is being stored, the position reported for each of its partitions is at
    or before its first record, never past records that are not committed yet."""
    w = _Recorder(topics, session_factory, clock, overlap=True)
    records = [{"event_id": f"e{i}", "account_id": ACCOUNTS[i % len(ACCOUNTS)]} for i in range(60)]
    checked: list[tuple[int, int, int]] = []  # (partition, reported position, first offset in flight)
    real_report = w._report_progress

    def report(measured):
        for r in w._in_flight[0] if w._in_flight else []:
            if (r.topic, r.partition) in measured:
                checked.append((r.partition, measured[r.topic, r.partition][0], r.offset))
        real_report(measured)

    w._report_progress = report
    _handle_all(w, topics, session_factory, records)
    assert checked, "no progress was reported while a batch ran early: the test missed the case"
    assert all(position <= offset for _, position, offset in checked), checked


def test_the_lag_gauge_counts_a_batch_that_keeps_being_rewound(topics, session_factory, clock):
    """A batch whose rejects cannot be published is rewound on every poll and its
    partition stands still: the lag on /metrics says so (it read 0, as measured after the
    last batch that was committed, while 11 records sat stuck), and falls to 0 once the
    batch goes through."""
    from prometheus_client import REGISTRY

    w = _Rejecting(topics, session_factory, clock)
    w.db_retry_seconds = 0
    broker_away = [False]
    real_publish = w._publish_rejects

    def publish_rejects(rejects):
        if broker_away[0]:
            raise KafkaError("broker away")
        real_publish(rejects)

    w._publish_rejects = publish_rejects

    def lag() -> dict[int, float]:
        out = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                labels = sample.labels
                if (
                    sample.name == "touchline_consumer_lag"
                    and labels.get("worker") == w.name
                    and labels.get("topic") == topics.topic_events
                ):
                    out[int(labels["partition"])] = sample.value
        return out

    first = [{"event_id": f"e{i}", "account_id": "a1"} for i in range(3)]
    stuck = [{"event_id": f"s{i}", "account_id": "a1", "bad": i == 0} for i in range(4)]
    try:
        publish(topics, first)
        drain(w, lambda: _count(session_factory) == 3 and committed_offsets(topics, w.group_id, topics.topic_events) == _ends(w))
        (partition,) = {p for p, _, _ in w.handled}
        assert lag()[partition] == 0
        broker_away[0] = True
        publish(topics, stuck)
        drain(w, lambda: sum(1 for _, _, e in w.handled if e == "s0") >= 3)  # rewound, and read again, twice
        assert lag()[partition] == len(stuck), "a partition standing still on a rewound batch read as caught up"
        broker_away[0] = False
        drain(w, lambda: committed_offsets(topics, w.group_id, topics.topic_events).get(partition) == 7)
        assert lag()[partition] == 0
    finally:
        w.close()
