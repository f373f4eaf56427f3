"""The rules worker: consumer group ``touchline-rules`` on ``product.events`` (same
account partitioning as ingest), plus the scheduled tick and the outbox relay.

Ordering with ingest. Both groups read the topic independently, so this worker can
see an event before ingest has committed it. It therefore evaluates a batch only once
every valid event in it is in ingest's raw event store (one indexed query per batch):
ingest commits whole batches in partition order, so the rollups then hold these
events and everything before them. Until then the batch is rewound and retried a
moment later; after ``rules_ingest_wait_seconds`` it is evaluated anyway (ingest may
have dead-lettered an event it could not process) with a warning.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.ingest.events.consumer import validate_record
from services.rules.evaluation import repository as eval_repo
from services.rules.evaluation.engine import EventSubject
from services.rules.evaluation.service import RuleIndex, evaluate_events, run_tick
from shared.db import transaction
from shared.events import Event
from shared.kafka import BatchResult, BatchWorker
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_SAMPLE_SECONDS, RULES_TICK_INTERVAL, RULES_TICK_SECONDS
from shared.outbox import SENT_RETENTION, pending_stats, prune_sent, relay

log = logging.getLogger(__name__)


class RulesWorker(BatchWorker):
    name = "rules"

    def __init__(self, *args, tick: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.index = RuleIndex(self.settings.raw_event_retention_days)
        self.tick_enabled = tick
        self._next_tick = None
        self._next_prune = None
        self._next_outbox_sample = None
        self._waiting_since: float | None = None
        self.last_report = None
        self._parsed: dict[tuple[str, int, int], object] = {}

    def topics(self) -> list[str]:
        return [self.settings.topic_events]

    def _valid(self, records: list[ConsumerRecord]) -> list[Event]:
        """The valid events of ``records``, parsed once per batch: ``ready()`` parses, and
        ``handle_batch`` (and any bisection of the batch) reuses the result."""
        now = self.clock.now()
        max_future = timedelta(seconds=self.settings.max_future_skew_seconds)
        out = []
        for r in records:
            key = (r.topic, r.partition, r.offset)
            ev = self._parsed.get(key)
            if ev is None:
                ev = self._parsed[key] = validate_record(r, now, self.settings.max_event_bytes, max_future)
            if isinstance(ev, Event):
                out.append(ev)
        return out  # invalid records are ingest's to dead-letter, not ours

    def ready(self, records: list[ConsumerRecord]) -> bool:
        self._parsed = {}  # a new batch (or the same one, redelivered after a rewind)
        ids = sorted({ev.event_id for ev in self._valid(records)})
        if not ids:
            return True
        with transaction(self.session_factory) as session:
            present = eval_repo.ingested_event_ids(session, ids)
        if len(present) == len(ids):
            self._waiting_since = None
            return True
        started = self._waiting_since = self._waiting_since or time.monotonic()
        if time.monotonic() - started >= self.settings.rules_ingest_wait_seconds:
            log.warning("rules: %d of %d events still not ingested after %.0fs; evaluating without them",
                        len(ids) - len(present), len(ids), self.settings.rules_ingest_wait_seconds)
            self._waiting_since = None
            return True
        return False

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        now = self.clock.now()
        events = [EventSubject(ev.event_id, ev.account_id, ev.user_id, ev.name, ev.timestamp, ev.properties)
                  for ev in self._valid(records) if ev.type == "track"]
        self.index.refresh(session)
        report = evaluate_events(session, events, self.index, now, self.settings)
        self.last_report = report
        return BatchResult(summary={"events": report.events, "evaluations": report.evaluations, "signals": len(report.signals)})

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
        run_tick(self.session_factory, self.settings, now)
        # A tick longer than the interval starts the next one at once: the worker then
        # spends its time ticking, not evaluating events (the RulesTickOverrunning alert).
        RULES_TICK_SECONDS.observe(time.perf_counter() - started)
        self._next_tick = now + timedelta(seconds=self.settings.rules_tick_seconds)

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
