"""The ingest worker: a consumer group on ``product.events``.

Each batch is validated record by record (rejects go to the DLQ with their original
bytes), applied in one transaction, and only then are offsets committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.ingest.repository import store
from services.ingest.service import apply_events, bring_contract_outcomes_into_effect
from shared.clock import Clock
from shared.db import transaction
from shared.events import Rejection, ValidEvent, validate_record
from shared.kafka.batch_worker import BatchResult, BatchWorker, Reject
from shared.metrics import EVENTS_DUPLICATE
from shared.settings import Settings

log = logging.getLogger(__name__)

# How old a verdict from prepare() may be when its batch is stored.
PREPARED_FOR = timedelta(seconds=5)


class Prepared(NamedTuple):
    """Records polled ahead, by (topic, partition, offset): each one's verdict, given at
    ``at``, and on PostgreSQL a valid event's row of the COPY text (store.copy_row)."""

    at: datetime
    verdicts: dict[tuple[str, int, int], tuple[ValidEvent | Rejection, str | None]]


def _key(record: ConsumerRecord) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


class IngestWorker(BatchWorker):
    name = "ingest"
    prune_every = timedelta(hours=1)
    # After a failed prune (the database is down or locked): try again this much later on the
    # worker's clock, not on every poll (one warning a minute, not five a second).
    prune_retry = timedelta(minutes=1)
    # Batches are independent (every effect is keyed by event_id): the next one is fetched
    # and decoded while the database stores this one (docs/performance.md).
    overlap = True

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        group_id: str | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        super().__init__(settings, session_factory, clock, group_id, producer)
        self._next_prune: datetime | None = None
        self._postgresql = self.dialect == "postgresql"

    def topics(self) -> list[str]:
        return [self.settings.topic_events]

    def prepare(self, records: list[ConsumerRecord]) -> Prepared:
        """Validate records polled ahead while the database stores the batch before them
        (docs/performance.md, "Ingest"): the worker's own CPU per record then runs beside
        its database backend's instead of before it."""
        now = self.clock.now()
        validate = self._validator(now)
        copy_row = store.copy_row if self._postgresql else None
        verdicts = {}
        for r in records:  # 5,000 a batch: the key written out, not through _key
            verdict = validate(r)
            verdicts[r.topic, r.partition, r.offset] = (
                verdict,
                copy_row(verdict) if copy_row and isinstance(verdict, ValidEvent) else None,
            )
        return Prepared(now, verdicts)

    def _validator(self, now: datetime) -> Callable[[ConsumerRecord], ValidEvent | Rejection]:
        """Validation of records at ``now``, with the limits read from the settings once a
        batch rather than once a record."""
        max_bytes, max_future = self.settings.max_event_bytes, timedelta(seconds=self.settings.max_future_skew_seconds)
        return lambda record: validate_record(record.key, record.value, now, max_bytes, max_future)

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        now = self.clock.now()
        ahead = self.prepared
        # A verdict given up to PREPARED_FOR before now stands (the future-skew bound is the
        # only part of a verdict that moves with time, and it is hours wide).
        verdicts = ahead.verdicts if isinstance(ahead, Prepared) and timedelta(0) <= now - ahead.at <= PREPARED_FOR else {}
        events: list[ValidEvent] = []
        rows: list[str | None] = []
        rejects: list[Reject] = []
        validate = self._validator(now)
        for record in records:
            result, row = verdicts.get(_key(record)) or (validate(record), None)
            if isinstance(result, Rejection):
                rejects.append(Reject(record, result.reason, result.detail))
            else:
                events.append(result)
                rows.append(row)
        summary = apply_events(session, events, now, rows)
        if summary.duplicates:
            EVENTS_DUPLICATE.labels(self.name).inc(summary.duplicates)
        return BatchResult(rejects=rejects, summary=summary.as_dict())

    def poll_once(self, timeout_ms: int | None = None) -> int:
        n = super().poll_once(timeout_ms)
        self._maybe_prune()
        return n

    def _maybe_prune(self) -> None:
        now = self.clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        cutoff = now - timedelta(days=self.settings.raw_event_retention_days)
        try:
            with transaction(self.session_factory) as session:
                deleted = store.prune_events(session, cutoff)
                taking_effect = bring_contract_outcomes_into_effect(session, now.date())
        except OperationalError as exc:  # housekeeping never takes the worker down
            self._next_prune = now + self.prune_retry
            log.warning("ingest: retention pruning failed (%s); will retry in %.0fs", exc.orig, self.prune_retry.total_seconds())
            return
        self._next_prune = now + self.prune_every
        if taking_effect:
            log.info("ingest: %d accounts' contract outcomes took effect today (dated in the future when they arrived)", taking_effect)
        if deleted:
            log.info(
                "ingest: pruned %d raw events received before %s (retention %d days)",
                deleted,
                cutoff.isoformat(),
                self.settings.raw_event_retention_days,
            )
