""":class:`BatchWorker`, the consume loop every consumer-group worker shares.

The loop's contract (effectively once):
1. poll a batch;
2. run ``handle_batch`` inside one DB transaction and commit it;
3. publish the batch's rejected records to the DLQ and flush;
4. only then commit the offsets.
(A worker with ``overlap`` fetches the next batch while 2 runs in a helper thread, and
starts that batch's transaction as soon as this one's has committed, while it does 3 and
4 for this one.)
A crash anywhere before 4 redelivers the batch; every effect in 2 is keyed so the
redelivery changes nothing. A failing batch never blocks a partition: a database
error that time cures (locked, connection lost, serialization failure) rewinds the
batch and retries it with exponential backoff, a log line and a metric (nothing is
committed meanwhile; the worker never exits for it); any other failure is bisected
down to the record that causes it, and that record goes to the DLQ.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared import consumer_progress as progress
from shared import deadletters, faults
from shared.clock import Clock, SystemClock
from shared.db import transaction, transient_db_error
from shared.kafka.clients import group_id_of, make_consumer, make_producer
from shared.kafka.dlq import dlq_headers, fit_dlq_record
from shared.metrics import BATCH_SECONDS, CONSUMER_LAG, EVENTS_CONSUMED, EVENTS_REJECTED
from shared.settings import Settings
from shared.worker import Backoff, retry_db_error

log = logging.getLogger(__name__)


@dataclass
class Reject:
    record: ConsumerRecord
    reason: str
    detail: str


@dataclass
class BatchResult:
    rejects: list[Reject] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: BatchResult) -> BatchResult:
        """The result of a batch processed in two halves (a bisected batch)."""
        summary = dict(self.summary)
        for k, v in other.summary.items():
            summary[k] = summary.get(k, 0) + v
        return BatchResult(rejects=self.rejects + other.rejects, summary=summary)


class BatchWorker:
    """Base class of every consumer-group worker. Subclasses set ``name`` and ``topics``
    and implement :meth:`handle_batch`; the loop owns transactions and offsets."""

    name = "worker"
    dlq_topic: str | None = None
    # With overlap, a batch's transaction runs in a helper thread while the loop takes the
    # next batch from Kafka (fetching and decoding records overlap the database's work).
    # That batch waits for the next poll_once; the current one is settled (DLQ, offsets)
    # before poll_once returns, as without overlap. A prefetched batch is never committed
    # before it is processed, so a crash or a rebalance redelivers it. kafka-python's
    # consumer stays on the loop's thread. For workers whose ready() takes every record
    # (none is held back): the ingest worker. Such a worker may also do, in prepare(), the
    # records' own work that needs no database (the ingest worker validates them), on the
    # loop's thread while the helper thread waits on the database for the batch before.
    overlap = False
    # With overlap, the process's GIL switch interval is lowered to this (seconds; Python's
    # default is 0.005): each time the database answers the helper thread, it waits for the
    # GIL while the loop decodes and validates records, up to one interval per round trip,
    # several round trips a batch. At 0.5 ms the ingest bench stored 21-29k records/s
    # against 15-24k at the default, three runs each, alternating (docs/performance.md).
    overlap_switch_interval = 0.0005
    # With overlap, how long each poll for more records waits while the batch's
    # transaction runs (it waits on the socket, not on the CPU; the transaction's end is
    # checked between polls).
    poll_ahead_wait_ms = 5
    # With overlap, on PostgreSQL (not SQLite: one writer at a time), the batch polled
    # ahead starts its transaction as soon as the batch before it has committed its own,
    # while the loop publishes that one's rejects and commits its offsets: the
    # database's helper thread then waits on none of the loop's
    # per-batch round trips (offset commit, progress report), about 10% of its time at
    # 5,000 records a batch (docs/performance.md, "Ingest"). Offsets still follow their
    # own batch's effects; a batch started early and then rewound (its predecessor's
    # rejects could not be published) changes nothing when it comes again.

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        group_id: str | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock or SystemClock()
        self.group_id = group_id or group_id_of(settings, self.name)
        self._producer = producer
        self._owns_producer = producer is None
        self.consumer: KafkaConsumer | None = None
        self.stop_event = threading.Event()
        self.db_retry_seconds = 1.0
        self.db_backoff = Backoff(self.db_retry_seconds, settings.retry_max_seconds)
        self.not_ready_wait_seconds = 0.05
        # What ready() held back, per partition, in offset order: kept here rather than
        # rewound, so the next poll brings only new records (see _with_held).
        self._held: dict[TopicPartition, list[ConsumerRecord]] = {}
        self._reported: dict[tuple[str, int], tuple[int, int]] = {}
        self._reported_at: datetime | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._prefetched: list[ConsumerRecord] = []
        self._prepared_ahead: object | None = None  # what prepare() made of _prefetched
        # The batch polled ahead whose transaction has started (overlap): its records, the
        # transaction's future and when it started. The next poll_once settles it.
        self._in_flight: tuple[list[ConsumerRecord], Future[BatchResult], float] | None = None
        # The database's dialect, read once (None where no database is given: the deploy checks).
        bind = getattr(session_factory, "kw", {}).get("bind")
        self.dialect: str | None = bind.dialect.name if bind is not None else None
        # What prepare() made of the batch being handled (None when it was not polled ahead):
        # set by the loop before the batch's transaction starts, read by handle_batch.
        self.prepared: object | None = None
        # A fetch failed its CRC check: the next poll starts a fresh consumer (see _fetch),
        # at once the first time, after a growing wait when it fails again before any
        # record arrives (a batch corrupt on the broker fails every time).
        self._refetch = False
        self._refetch_delay = 0.0
        self._corrupt_in_a_row = 0
        self.corrupt_backoff = Backoff(self.db_retry_seconds, settings.retry_max_seconds)

    # ---- to implement -------------------------------------------------
    def topics(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def consumes(cls, settings: Settings) -> tuple[str, list[str]]:
        """The default group id and the topics it consumes, without connecting
        (``touchline run`` drains these on Ctrl-C)."""
        probe = cls.__new__(cls)
        probe.settings = settings
        return settings.topic(f"touchline-{cls.name}"), probe.topics()

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        raise NotImplementedError

    def prepare(self, records: list[ConsumerRecord]) -> object | None:
        """With :attr:`overlap`: work on records polled ahead, on the loop's thread while
        the database stores the batch before them; what it returns is :attr:`prepared`
        while those records are handled. Whatever it computes must be what handle_batch
        would compute itself (handle_batch also runs without it: the first batch, a
        rebalance, a bisected batch). The default prepares nothing."""
        return None

    def ready(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        """The records of the batch that can be processed now, for a worker that depends
        on another one's progress: for each partition, a prefix of its records in offset
        order. The loop processes and commits those and holds the rest back: they are
        offered again, ahead of whatever the next poll brings (a moment later if nothing
        was ready). Processing the ready prefix, rather than waiting for the whole batch,
        keeps such a worker right behind the one it follows under a steady stream, where
        every fresh poll also brings records the other worker has not reached yet."""
        return records

    # ---- lifecycle ----------------------------------------------------
    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer

    def _reset_producer(self) -> None:
        if self._owns_producer and self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # it is already broken; we only want it gone
                pass
            self._producer = None

    def start(self) -> BatchWorker:
        if self.consumer is None:
            self.consumer = make_consumer(self.settings, self.group_id, self.topics())
        return self

    def _live(self) -> KafkaConsumer:
        """The consumer of a started worker."""
        if self.consumer is None:
            raise RuntimeError(f"{self.name}: the worker is not started")
        return self.consumer

    def close(self) -> None:
        self._held = {}  # never committed: whoever owns the partitions next reads them again
        self._prefetched = []  # polled, not processed: uncommitted, so redelivered to the next owner
        self._prepared_ahead = None
        self._in_flight = None  # its transaction ends below; its offsets are never committed: it comes again
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None
        if self._producer is not None and self._owns_producer:
            self._producer.close(timeout=5)
            self._producer = None

    def run(self) -> None:
        """Consume until :attr:`stop_event` is set (SIGTERM/SIGINT in the CLI)."""
        self.start()
        log.info("%s worker consuming %s as group %s", self.name, ", ".join(self.topics()), self.group_id)
        try:
            while not self.stop_event.is_set():
                self.poll_once()
            if self._in_flight is not None:
                # A batch started early before the stop: settle it (its rejects, its offsets)
                # rather than leave it stored and uncommitted, to be read and stored again by
                # the next owner. _start_early starts nothing more once stopped.
                self.poll_once()
        finally:
            self.close()
            log.info("%s worker stopped", self.name)

    # ---- one batch ----------------------------------------------------
    def poll_once(self, timeout_ms: int | None = None) -> int:
        """Poll, process and commit one batch. Returns the number of records handled."""
        if self._refetch:
            self._fresh_consumer()
        consumer = self.start()._live()
        if self._in_flight is not None:  # started at the end of the last poll_once
            batch, future, started = self._in_flight
            self._in_flight = None
            return self._overlapped(consumer, batch, future, started)
        prepared, self._prepared_ahead = self._prepared_ahead, None
        if self._prefetched:
            # A rebalance since the prefetch may have given some partitions to another member.
            owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}  # plain tuples: 5,000 records a batch
            records = [r for r in self._prefetched if (r.topic, r.partition) in owned]
            self._prefetched = []  # pragma: no mutate (None is as empty: it is reassigned before it is read)
            if self._held:  # records held back come first in their partitions, as after a fresh poll
                polled: dict[TopicPartition, list[ConsumerRecord]] = {}
                for r in records:
                    polled.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
                records = self._with_held(consumer, polled)
        else:
            timeout_ms = self.settings.kafka_poll_timeout_ms if timeout_ms is None else timeout_ms
            if self._held:  # what is held may be ready now: take what has arrived, do not wait for more
                timeout_ms = 0  # pragma: no mutate (1 ms is as good)
            records = self._with_held(consumer, self._fetch(consumer, timeout_ms))  # max_poll_records: make_consumer
        if not records:
            self._update_lag()
            return 0
        started = time.perf_counter()
        try:
            now_ready = self.ready(records)
        except Exception as exc:
            self._rewind(records)
            self.db_backoff.initial = self.db_retry_seconds
            if retry_db_error(self.name, exc, self.db_backoff, self.stop_event):
                return 0
            raise
        if len(now_ready) < len(records):
            taken = {(r.topic, r.partition, r.offset) for r in now_ready}
            for r in sorted(records, key=lambda r: r.offset):  # pragma: no mutate (already in order; kept as a guard)
                if (r.topic, r.partition, r.offset) not in taken:
                    self._held.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
            if not now_ready:
                self.stop_event.wait(self.not_ready_wait_seconds)
                return 0
            records = now_ready
        if not self.overlap:
            return self._settle(records, started, lambda: self._process(records)) or 0
        if self._executor is None:
            if sys.getswitchinterval() > self.overlap_switch_interval:
                sys.setswitchinterval(self.overlap_switch_interval)
            # One batch at a time; the name is for thread dumps. Not mutated (no test can tell).
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-db")  # pragma: no mutate
        self.prepared = prepared  # changed again only after this batch's result is in
        return self._overlapped(consumer, records, self._executor.submit(self._process, records), started)

    def _overlapped(self, consumer: KafkaConsumer, batch: list[ConsumerRecord], future: Future[BatchResult], started: float) -> int:
        """Settle ``batch``, whose transaction runs in the helper thread (``future``).
        Meanwhile fetch and decode the records that follow (:meth:`_poll_ahead`) and prepare
        them; once the batch's transaction is in, start those records' own
        (:meth:`_start_early`) before publishing the batch's rejects and committing its
        offsets."""
        prefetched = self._poll_ahead(consumer, future)
        try:
            ahead = self.prepare(prefetched) if prefetched else None
        except Exception:  # only the head start is lost: handle_batch does the work itself
            log.exception("%s: preparing %d records polled ahead failed", self.name, len(prefetched))
            ahead = None

        def stored() -> BatchResult:
            result = future.result()  # raises if the batch failed: then nothing starts early
            self._start_early(consumer, prefetched, ahead)
            return result

        handled = self._settle(batch, started, stored, also_rewind=prefetched)
        if handled is None:  # rewound with the batch: they come again
            self._drop_in_flight()
        elif self._in_flight is None:
            # Kept even if a rebalance refused the commit: processing them is always safe (keyed
            # effects), dropping them could skip records if the position survives the rebalance.
            self._prefetched = prefetched
            self._prepared_ahead = ahead
        return handled or 0

    def _start_early(self, consumer: KafkaConsumer, records: list[ConsumerRecord], ahead: object | None) -> None:
        """Start the transaction of ``records`` (polled ahead) now, if they are all still
        this worker's and all ready; else they wait for the next poll_once, which filters
        them and holds back what is not ready."""
        if not records or self._executor is None or self._held:  # what is held goes first: the next poll_once orders it
            return
        if self.stop_event.is_set() or self._refetch:  # stopping, or a fresh consumer reads them again: not now
            return
        if self.dialect == "sqlite":
            # One writer at a time: this batch's transaction would hold the write lock while
            # the loop stores the batch before's rejects and reports its progress, and the
            # loop would wait for it there instead of polling ahead.
            return
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}  # plain tuples: 5,000 records a batch
        if any((r.topic, r.partition) not in owned for r in records):
            return
        try:
            if len(self.ready(records)) < len(records):
                return
        except Exception:  # the next poll_once asks again, and retries or raises as it does
            return
        self.prepared = ahead  # the batch before is in: nothing reads it until this one runs
        self._in_flight = (records, self._executor.submit(self._process, records), time.perf_counter())

    def _drop_in_flight(self) -> None:
        """Forget a batch started early whose records were rewound: wait for its
        transaction to end (whatever it stored is keyed: the redelivery changes nothing)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            try:
                in_flight[1].result()
            except Exception as exc:  # its records come again and fail, or not, then
                log.warning("%s: a batch started early and rewound failed (%s); it comes again", self.name, exc)

    def _poll_ahead(self, consumer: KafkaConsumer, future: Future[BatchResult]) -> list[ConsumerRecord]:
        """While the batch's transaction runs (``future``): what Kafka already has, then
        what arrives, up to a batch, until the transaction is done. One poll took only what
        the last fetch had brought; when that was drained, the next batch waited for a
        fetch after the transaction (the helper thread idle 4-15% of a run). Not past half
        the consumer's max poll interval: a transaction that hangs then leaves the loop
        waiting on it without polling, so the group evicts this worker and its partitions
        go to another member, as they did before the loop polled ahead."""
        limit = self.settings.kafka_max_poll_records
        until = time.monotonic() + self.settings.kafka_max_poll_interval_ms / 2000
        records = self._poll(consumer, 0)  # pragma: no mutate (1 ms is as good)
        while len(records) < limit and not future.done() and not self._refetch and time.monotonic() < until:
            records += self._poll(consumer, self.poll_ahead_wait_ms, limit - len(records))
        return records

    def _poll(self, consumer: KafkaConsumer, timeout_ms: int, max_records: int | None = None) -> list[ConsumerRecord]:
        return [r for tp_records in self._fetch(consumer, timeout_ms, max_records).values() for r in tp_records]

    def _fetch(
        self, consumer: KafkaConsumer, timeout_ms: int, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """``consumer.poll``, except when a fetched record batch fails its CRC check
        (``CorruptRecordError``, seen from the embedded broker under load): kafka-python
        keeps the broken batch and its next poll spins on it for ever, so this consumer
        is done. Nothing of that batch was returned: the next poll starts a fresh
        consumer, which rejoins the group and reads from the committed offsets (what was
        read and not committed comes again; every effect is keyed)."""
        try:
            polled: dict[TopicPartition, list[ConsumerRecord]] = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except CorruptRecordError as exc:
            self._corrupt_in_a_row += 1
            self.corrupt_backoff.initial = self.db_retry_seconds
            self._refetch_delay = self.corrupt_backoff.next_delay() if self._corrupt_in_a_row > 1 else 0.0
            self._refetch = True
            log.warning(
                "%s: %s (%d in a row); fetching it again with a fresh consumer, from the committed offsets, in %gs",
                self.name,
                exc,
                self._corrupt_in_a_row,
                self._refetch_delay,
            )
            return {}
        if polled:
            self._corrupt_in_a_row = 0
            self.corrupt_backoff.reset()
        return polled

    def _fresh_consumer(self) -> None:
        """Close the consumer without committing (the next one reads from the committed
        offsets) and forget what it had fetched and not processed."""
        if self._refetch_delay:
            self.stop_event.wait(self._refetch_delay)
        self._refetch, self._refetch_delay = False, 0.0
        self._drop_in_flight()
        self._held, self._prefetched, self._prepared_ahead = {}, [], None
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
            self.consumer = None

    def _settle(
        self, records: list[ConsumerRecord], started: float, run: Callable[[], BatchResult], also_rewind: list[ConsumerRecord] | None = None
    ) -> int | None:
        """Finish a batch: its transaction's outcome (``run``), then the DLQ, then the
        offsets. Returns how many records it handled, or None if the batch was rewound
        (with ``also_rewind``, records polled after it) to come again."""
        again = records + (also_rewind or [])
        try:
            result = run()
        except Exception as exc:
            cause = (exc.__cause__ or exc) if isinstance(exc, _DatabaseUnavailable) else exc
            self._rewind(again)  # nothing of the batch is committed: it comes again
            self.db_backoff.initial = self.db_retry_seconds
            if retry_db_error(self.name, cause, self.db_backoff, self.stop_event):
                return None
            raise
        self.db_backoff.reset()
        try:
            self._publish_rejects(result.rejects)
        except Exception as exc:
            if not isinstance(exc, KafkaError) and not transient_db_error(exc):
                raise
            # The DB effects are committed; without the dead letters stored and published
            # we must not commit the offsets. Rewind: the redelivered batch changes nothing
            # in the DB and the rejects are stored (once) and published again. A fresh
            # producer recovers from a broker that lost its state (the embedded one after
            # a restart); a database outage is waited out like any other.
            log.error("%s: could not store or publish %d rejects (%s); retrying the batch", self.name, len(result.rejects), exc)
            self._reset_producer()
            self._rewind(again)
            self.stop_event.wait(self.db_retry_seconds)
            return None
        faults.point(f"{self.name}.before_offset_commit")
        self._commit(records)
        elapsed = time.perf_counter() - started
        BATCH_SECONDS.labels(self.name).observe(elapsed)
        for topic, n in Counter(r.topic for r in records).items():
            EVENTS_CONSUMED.labels(self.name, topic).inc(n)
        summary = " ".join(f"{k}={v}" for k, v in result.summary.items())
        log.info(
            "%s batch: records=%d rejected=%d %s in %.0fms",
            self.name,
            len(records),
            len(result.rejects),
            summary,
            elapsed * 1000,
        )
        self._update_lag(also_rewind or [])
        return len(records)

    def _with_held(self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[ConsumerRecord]]) -> list[ConsumerRecord]:
        """The records held back last time, each partition's ahead of what this poll
        brought for it. They are dropped, never offered twice or out of order, when
        their partition is no longer this worker's or the poll's records for it do not
        follow them (a rebalance moved its position), and a rewind drops them too: the
        position then reads them again from the broker. (No ``consumer.position()``
        here: calling it on every poll stalled another consumer's group join in the
        same process.)"""
        held, self._held = self._held, {}
        out: list[ConsumerRecord] = []
        assigned = consumer.assignment()
        for tp, recs in held.items():
            new = polled.pop(tp, [])
            after = recs[-1].offset + 1
            if tp in assigned and (not new or new[0].offset == after):
                out.extend(recs)
            out.extend(new)
        for recs in polled.values():
            out.extend(recs)
        return out

    def _process(self, records: list[ConsumerRecord]) -> BatchResult:
        try:
            return self._run_in_transaction(records)
        except _DatabaseUnavailable:
            raise
        except Exception as exc:  # a poison record or a bug: find it, never block the partition
            if len(records) == 1:
                log.exception("%s: record %s/%d@%d failed processing", self.name, records[0].topic, records[0].partition, records[0].offset)
                return BatchResult(rejects=[Reject(records[0], "processing_error", f"{type(exc).__name__}: {exc}")])
            log.warning("%s: batch of %d failed (%s: %s); bisecting", self.name, len(records), type(exc).__name__, exc)
            mid = len(records) // 2
            return self._process(records[:mid]) + self._process(records[mid:])

    def _run_in_transaction(self, records: list[ConsumerRecord]) -> BatchResult:
        try:
            with transaction(self.session_factory) as session:
                result = self.handle_batch(session, records)
            faults.point(f"{self.name}.after_db_commit")
            return result
        except Exception as exc:
            if transient_db_error(exc):  # not the records' fault: never bisect or dead-letter for it
                raise _DatabaseUnavailable(str(getattr(exc, "orig", exc))) from exc
            raise

    def _publish_rejects(self, rejects: list[Reject]) -> None:
        """Store the rejects durably (shared/deadletters.py: the embedded broker keeps
        topics in memory only), then publish them to the DLQ topic. Both are idempotent:
        a redelivered batch stores nothing twice; the DLQ topic may hold a copy twice. A
        record too large for the producer goes to the topic cut to fit (dlq.fit_dlq_record),
        never failing the publish on every retry."""
        if not rejects:
            return
        topic = self.dlq_topic or self.settings.topic_events_dlq
        now = self.clock.now()
        max_bytes = self.producer.config["max_request_size"]
        with transaction(self.session_factory) as session:
            deadletters.store(
                session,
                (
                    deadletters.Rejected(
                        r.record.topic, r.record.partition, r.record.offset, r.record.key, r.record.value, r.reason, r.detail
                    )
                    for r in rejects
                ),
                dlq_topic=topic,
                worker=self.name,
                now=now,
            )
        for rej in rejects:
            EVENTS_REJECTED.labels(self.name, rej.reason).inc()
            log.warning(
                "%s: rejected %s/%d@%d to %s: %s (%s)",
                self.name,
                rej.record.topic,
                rej.record.partition,
                rej.record.offset,
                topic,
                rej.reason,
                rej.detail[:200],
            )
            key, value, headers = fit_dlq_record(
                rej.record.key, rej.record.value, dlq_headers(rej.record, rej.reason, rej.detail, now), max_bytes
            )
            self.producer.send(topic, key=key, value=value, headers=headers)
        self.producer.flush(timeout=30)

    def _commit(self, records: list[ConsumerRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:  # in offset order within each partition: the last one is the highest
            last[r.topic, r.partition] = r.offset
        # No metadata, and kafka-python's "unknown" leader epoch: nothing reads either. Two
        # tuples a partition, not a record (5,000 records a batch, on the loop's thread).
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o + 1, "", -1) for (t, p), o in last.items()}  # pragma: no mutate
        try:
            self._live().commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group rebalanced (or is rebalancing: a member joined) while we worked: the
            # partitions' owner after it redelivers the batch and our keyed effects make that
            # harmless. Seen with four ingest workers joining one group (bench-ingest).
            log.warning("%s: offset commit refused by a rebalance (%s); the batch will be redelivered", self.name, exc)

    def _rewind(self, records: list[ConsumerRecord]) -> None:
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            self._held.pop(tp, None)  # read again from the broker, in order
            if tp in self._live().assignment():
                self._live().seek(tp, offset)
        # The lag gauge counts the rewound records again: a batch that keeps coming back (its
        # rejects cannot be published, the database is away) must not read 0 on /metrics
        # while its partition stands still. The progress table is left as it is: nothing
        # more is stored than it says, and the database may be what is away.
        self._measure_lag()

    def _update_lag(self, unprocessed: list[ConsumerRecord] | None = None) -> None:
        """Measure the lag of every owned partition (metric) and publish it to the
        ``consumer_progress`` table (see :mod:`shared.consumer_progress`): the rules tick and the
        demo read ingest's rows to know what ingest has completely stored. Records fetched
        but not processed (held back, or ``unprocessed``: prefetched while the batch
        committed) are still lag: the consumer's position has moved past them, but the
        database does not hold them yet."""
        self._report_progress(self._measure_lag(unprocessed))

    def _measure_lag(self, unprocessed: list[ConsumerRecord] | None = None) -> dict[tuple[str, int], tuple[int, int]]:
        """Set the lag gauge of every owned partition; returns each one's (position,
        high-watermark), the position being its first record not yet stored."""
        consumer = self._live()
        first: dict[tuple[str, int], int] = {}
        for r in [*(unprocessed or []), *(r for recs in self._held.values() for r in recs)]:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        measured: dict[tuple[str, int], tuple[int, int]] = {}
        for tp in consumer.assignment():
            # The embedded broker's ListOffsets(latest) is wrong: use the fetch high-watermark.
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            try:
                position = consumer.position(tp)
            except KafkaError:
                continue
            if (tp.topic, tp.partition) in first:
                position = first[(tp.topic, tp.partition)]
            if position is not None:
                CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(max(0, hw - position))
                measured[(tp.topic, tp.partition)] = (position, hw)
        return measured

    def _report_progress(self, measured: dict[tuple[str, int], tuple[int, int]]) -> None:
        now = self.clock.now()
        changed = {k: v for k, v in measured.items() if self._reported.get(k) != v}
        heartbeat_due = self._reported_at is None or now - self._reported_at >= progress.HEARTBEAT
        if not changed and not (heartbeat_due and measured):
            return
        try:
            with transaction(self.session_factory) as session:
                progress.report(session, self.group_id, measured if heartbeat_due else changed, now)
        except DBAPIError as exc:  # a heartbeat never takes the worker down
            log.warning("%s: could not record consumer progress (%s); will retry", self.name, exc.orig)
            return
        self._reported.update(measured)
        if heartbeat_due:
            self._reported_at = now


class _DatabaseUnavailable(Exception):
    pass
