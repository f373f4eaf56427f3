"""The rules worker: consumer group ``touchline-rules`` on ``product.events`` (same
account partitioning as ingest), plus the scheduled tick and the outbox relay.

Ordering with ingest. Both groups read the topic independently, so this worker can
see an event before ingest has committed it. It therefore evaluates an event only once
it and every valid event before it in its partition are in ingest's raw event store
(one indexed query per batch): ingest commits whole batches in partition order, so the
rollups then hold these events and everything before them. Per partition, the batch's
ingested prefix is evaluated now and the rest is held back (in memory: see
:meth:`shared.kafka.batch_worker.BatchWorker.ready`) and offered again with the next poll. (Waiting for the whole batch instead starved the worker under a steady stream:
every poll also brought events newer than ingest's last commit, so no batch was ever
complete until the stream paused; docs/performance.md, "End-to-end latency".) When the
same event has held its partition back for ``rules_ingest_wait_seconds`` of clock time,
the partition's records are evaluated anyway (ingest may have dead-lettered an event it
could not process), with a warning.

Freshness. Event-triggered rules ignore events older than
``rules_event_freshness_seconds`` (see :func:`evaluate_events`). The scheduled tick
(absence and trend rules) runs only while ingest has stored what the topic holds:
the ingest workers publish their measured lag per partition (``consumer_progress``,
see :mod:`shared.consumer_progress`), and while the total is above ``rules_max_ingest_lag``,
or a partition has not reported for ``rules_ingest_stale_seconds``, the due tick
waits (logged, ``touchline_rules_ticks_deferred_total``) and runs as soon as ingest
has caught up. Otherwise "no login in 14 days" would fire on every account whose
recent logins are still in the topic.

Health. From its first poll of each UTC day, behind the same watermark, the worker scores
every account's health, one chunk of accounts per poll (``TOUCHLINE_HEALTH_CHUNK_ACCOUNTS``;
:mod:`services.rules.evaluation.health`; docs/health.md): an event-triggered rule's event
waits for one chunk at most, not for the day's scoring.

Orphans. Every ``ORPHAN_SWEEP_EVERY`` the worker republishes the signals that have no
outreach decision after ``signal_decision_grace_seconds`` (see
:func:`services.rules.signals.service.republish_orphans`).
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import date, datetime, timedelta

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.ingest import interface as ingest
from services.rules.evaluation.engine import EventSubject
from services.rules.evaluation.health import HealthDayReport, score_health_chunk
from services.rules.evaluation.segments import SegmentIndex, SegmentReport, refresh_accounts, run_segments
from services.rules.evaluation.service import EvaluationReport, RuleIndex, TickReport, evaluate_events, run_tick
from services.rules.signals.service import republish_orphans
from shared import consumer_progress as progress
from shared.clock import Clock
from shared.db import transaction
from shared.events import ValidEvent, validate_record
from shared.kafka.batch_worker import BatchResult, BatchWorker
from shared.kafka.clients import group_id_of
from shared.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_SAMPLE_SECONDS,
    RULES_TICK_INTERVAL,
    RULES_TICK_SECONDS,
    TICK_INGEST_LAG,
    TICK_WAITING,
    TICKS_DEFERRED,
)
from shared.outbox import SENT_RETENTION, pending_stats, prune_sent, relay
from shared.settings import Settings

log = logging.getLogger(__name__)
ORPHAN_SWEEP_EVERY = timedelta(seconds=30)


class RulesWorker(BatchWorker):
    name = "rules"
    orphan_batch = 1000

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        group_id: str | None = None,
        producer: KafkaProducer | None = None,
        *,
        tick: bool = True,
    ) -> None:
        super().__init__(settings, session_factory, clock, group_id, producer)
        self.index = RuleIndex(self.settings.raw_event_retention_days)
        self.segment_index = SegmentIndex()
        self.last_segments: SegmentReport | None = None
        self.tick_enabled = tick
        self._next_tick: datetime | None = None
        self._next_prune: datetime | None = None
        self._next_outbox_sample: datetime | None = None
        self._next_orphan_sweep: datetime | None = None
        # Per partition held back by an event ingest has not stored: that event's offset
        # and since when it has held the partition (clock time).
        self._waiting: dict[tuple[str, int], tuple[int, datetime]] = {}
        self._deferred_since: datetime | None = None
        self._deferral_logged_at: datetime | None = None
        self.last_tick: TickReport | None = None
        self.last_health: HealthDayReport | None = None
        self._health_day: date | None = None
        self._health_next_check: datetime | None = None
        self.last_report: EvaluationReport | None = None
        self._parsed: dict[tuple[str, int, int], object] = {}

    def topics(self) -> list[str]:
        return [self.settings.topic_events]

    def _valid(self, records: list[ConsumerRecord]) -> list[ValidEvent]:
        """The valid events of ``records``, parsed once per batch: ``ready()`` parses, and
        ``handle_batch`` (and any bisection of the batch) reuses the result."""
        now = self.clock.now()
        max_future = timedelta(seconds=self.settings.max_future_skew_seconds)
        out = []
        for r in records:
            key = (r.topic, r.partition, r.offset)
            ev = self._parsed.get(key)
            if ev is None:
                ev = self._parsed[key] = validate_record(r.key, r.value, now, self.settings.max_event_bytes, max_future)
            if isinstance(ev, ValidEvent):
                out.append(ev)
        return out  # invalid records are ingest's to dead-letter, not ours

    @property
    def waiting_since(self) -> datetime | None:
        """Since when the longest-held partition has waited for ingest (None: none waits)."""
        return min((since for _, since in self._waiting.values()), default=None)

    def ready(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        # Records held back last time keep their parse; the rest is new.
        keys = {(r.topic, r.partition, r.offset) for r in records}
        self._parsed = {k: v for k, v in self._parsed.items() if k in keys}
        self._valid(records)
        by_partition: dict[tuple[str, int], list[tuple[ConsumerRecord, str | None]]] = {}
        for r in sorted(records, key=lambda r: r.offset):
            ev = self._parsed[(r.topic, r.partition, r.offset)]
            by_partition.setdefault((r.topic, r.partition), []).append((r, ev.event_id if isinstance(ev, ValidEvent) else None))
        # Ingest commits each partition in order: while a partition's first event is not
        # stored, none after it is. Ask for the first events, then for the rest of the
        # partitions whose first event is stored (a partition waiting costs one id).
        heads = {tp: next((i for _, i in recs if i is not None), None) for tp, recs in by_partition.items()}
        with transaction(self.session_factory) as session:
            present = ingest.ingested_event_ids(session, sorted({i for i in heads.values() if i is not None}))
            rest = sorted({i for tp, recs in by_partition.items() if heads[tp] in present for _, i in recs if i is not None} - present)
            if rest:
                present |= ingest.ingested_event_ids(session, rest)
        now = self.clock.now()
        wait = timedelta(seconds=self.settings.rules_ingest_wait_seconds)
        out: list[ConsumerRecord] = []
        for tp, recs in by_partition.items():
            cut = next((n for n, (_, i) in enumerate(recs) if i is not None and i not in present), len(recs))
            if cut == len(recs):
                self._waiting.pop(tp, None)
                out.extend(r for r, _ in recs)
                continue
            offset = recs[cut][0].offset
            waited_offset, since = self._waiting.get(tp, (offset, now))
            if waited_offset != offset:
                since = now  # ingest moved on: a new wait begins at the next event
            if now - since >= wait:
                log.warning(
                    "rules: events of %s/%d from offset %d still not ingested after %.0fs; evaluating without them",
                    tp[0],
                    tp[1],
                    offset,
                    self.settings.rules_ingest_wait_seconds,
                )
                self._waiting.pop(tp, None)
                out.extend(r for r, _ in recs)
                continue
            self._waiting[tp] = (offset, since)
            out.extend(r for r, _ in recs[:cut])
        return out

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        now = self.clock.now()
        valid = self._valid(records)
        events = [
            EventSubject(ev.event_id, ev.account_id, ev.user_id, ev.name, ev.timestamp, ev.properties)
            for ev in valid
            if ev.type == "track" and ev.name is not None
        ]
        self.index.refresh(session)
        report = evaluate_events(session, events, self.index, now, self.settings)
        self.last_report = report
        # Segment membership of the accounts with a fresh event of any type (a trait arrives
        # in a group or identify event); the accounts of stale ones change at the next tick.
        oldest = now - timedelta(seconds=self.settings.rules_event_freshness_seconds)
        fresh = sorted({ev.account_id for ev in valid if ev.timestamp >= oldest})
        segments = refresh_accounts(session, self.segment_index, fresh, now, self.settings)
        return BatchResult(
            summary={
                "events": report.events,
                "stale": report.stale,
                "evaluations": report.evaluations,
                "signals": len(report.signals) + len(segments.signals),
            }
        )

    def poll_once(self, timeout_ms: int | None = None) -> int:
        n = super().poll_once(timeout_ms)
        self.housekeeping()
        return n

    def housekeeping(self) -> None:
        """The tick, the outbox relay and outbox retention. A broker or database outage
        here is logged and retried on the next poll, never fatal: the tick is claimed per
        rule and slot, and unsent outbox rows stay unsent until the relay succeeds."""
        try:
            if self.tick_enabled:
                self.maybe_tick()
                self.maybe_score_health()
            self._maybe_sweep_orphans()
            self.relay()
            self._maybe_prune_outbox()
        except (KafkaError, OperationalError) as exc:
            log.error("rules: housekeeping failed (%s: %s); retrying", type(exc).__name__, exc)
            if isinstance(exc, KafkaError):
                self._reset_producer()
            self.stop_event.wait(self.db_retry_seconds)

    def maybe_tick(self) -> None:
        now = self.clock.now()
        if self._next_tick is not None and now < self._next_tick:
            return
        RULES_TICK_INTERVAL.set(self.settings.rules_tick_seconds)
        started = time.perf_counter()
        # One look at the watermark for the tick and the segments (a metadata request and a
        # query), asked only if either has work, and the same answer for both.
        caught_up = functools.cache(lambda: self.ingest_caught_up(now))
        report = self.last_tick = run_tick(self.session_factory, self.settings, now, gate=caught_up)
        segments = self.last_segments = run_segments(self.session_factory, self.settings, now, gate=caught_up)
        if report.deferred or segments.deferred:
            return  # asked again at the next poll; runs as soon as ingest has caught up
        # A tick longer than the interval starts the next one at once: the worker then
        # spends its time ticking, not evaluating events (the RulesTickOverrunning alert).
        RULES_TICK_SECONDS.observe(time.perf_counter() - started)
        self._next_tick = now + timedelta(seconds=self.settings.rules_tick_seconds)

    def maybe_score_health(self) -> None:
        """Every account's health once per UTC day, one chunk of accounts per poll (so the
        next poll's events wait for one chunk, never for the whole day's scoring), behind
        the same freshness watermark as the tick (docs/health.md): while ingest is behind,
        the next chunk waits."""
        now = self.clock.now()
        if self._health_day == now.date() or (self._health_next_check is not None and now < self._health_next_check):
            return
        report = self.last_health = score_health_chunk(self.session_factory, self.settings, now, gate=lambda: self.ingest_caught_up(now))
        if report.done:
            self._health_day = now.date()
        elif not report.deferred and not report.ran:
            # No model yet (one may be defined during the day), or another worker claimed the
            # day or stored this chunk meanwhile: look again a tick later.
            self._health_next_check = now + timedelta(seconds=self.settings.rules_tick_seconds)

    def ingest_caught_up(self, now: datetime) -> bool:
        """The freshness watermark: has ingest stored what the topic holds? Logs and
        counts a deferral when the first check of a waiting period fails, then once per
        tick interval while it lasts, and logs when the tick resumes."""
        topic = self.settings.topic_events
        parts = self.start()._live().partitions_for_topic(topic)
        with transaction(self.session_factory) as session:
            mark = progress.watermark(
                session,
                group_id_of(self.settings, "ingest"),
                topic,
                parts or set(),
                now,
                timedelta(seconds=self.settings.rules_ingest_stale_seconds),
            )
        if not parts:
            mark.silent = [-1]  # no metadata for the topic yet: nothing is known
        TICK_INGEST_LAG.set(mark.lag)
        if mark.caught_up(self.settings.rules_max_ingest_lag):
            if self._deferred_since is not None:
                log.info(
                    "rules: ingest caught up (lag %d); the scheduled tick held back since %s runs now",
                    mark.lag,
                    self._deferred_since.isoformat(),
                )
            self._deferred_since = self._deferral_logged_at = None
            TICK_WAITING.set(0)
            return True
        self._deferred_since = self._deferred_since or now
        TICK_WAITING.set((now - self._deferred_since).total_seconds())
        every = timedelta(seconds=self.settings.rules_tick_seconds)
        if self._deferral_logged_at is None or now - self._deferral_logged_at >= every:
            self._deferral_logged_at = now
            if mark.silent:
                reason = "ingest_silent"
                log.warning(
                    "rules: scheduled tick held back: no ingest progress report for %s within %.0fs (is the ingest worker running?)",
                    "partitions " + ", ".join(map(str, mark.silent)) if parts else f"topic {topic}",
                    self.settings.rules_ingest_stale_seconds,
                )
            else:
                reason = "ingest_lag"
                log.warning(
                    "rules: scheduled tick held back: ingest is %d records behind (limit %d)", mark.lag, self.settings.rules_max_ingest_lag
                )
            TICKS_DEFERRED.labels(reason).inc()
        return False

    def _maybe_sweep_orphans(self) -> None:
        now = self.clock.now()
        if self._next_orphan_sweep is not None and now < self._next_orphan_sweep:
            return
        n = 0
        while True:  # bounded batches, each its own transaction
            with transaction(self.session_factory) as session:
                checked, republished = republish_orphans(session, now, self.settings, self.orphan_batch)
            n += republished
            if checked < self.orphan_batch:
                break
        self._next_orphan_sweep = now + ORPHAN_SWEEP_EVERY
        if n:
            log.warning(
                "rules: %d signals had no outreach decision after %.0fs; published them again",
                n,
                self.settings.signal_decision_grace_seconds,
            )

    def relay(self) -> int:
        sent = 0
        while True:
            n = relay(self.session_factory, self.producer, self.clock.now())
            sent += n
            if n < 500:
                break
        self._maybe_sample_outbox()
        return sent

    def _maybe_sample_outbox(self) -> None:
        """The signals outbox's backlog and oldest unsent row, for the OutboxStuck alert.
        Sampled after the relay drained what it could, so a healthy relay shows ~0."""
        now = self.clock.now()
        if self._next_outbox_sample is not None and now < self._next_outbox_sample:
            return
        with transaction(self.session_factory) as session:
            count, oldest = pending_stats(session)
        OUTBOX_BACKLOG.labels("signals").set(count)
        OUTBOX_OLDEST_AGE.labels("signals").set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        self._next_outbox_sample = now + timedelta(seconds=OUTBOX_SAMPLE_SECONDS)

    def _maybe_prune_outbox(self) -> None:
        now = self.clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        with transaction(self.session_factory) as session:
            pruned = prune_sent(session, now - SENT_RETENTION)
        self._next_prune = now + timedelta(hours=1)
        if pruned:
            log.info("rules: pruned %d outbox messages sent more than %s ago", pruned, SENT_RETENTION)
