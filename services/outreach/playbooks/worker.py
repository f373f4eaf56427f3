"""The playbooks' enrolment consumer, :class:`SignalWorker` (``touchline worker
outreach``). The steps that come due later are run by the timer worker
(services/outreach/timers.py, ``outreach-timers``).

The enrolment consumer is a consumer group on ``cs.signals``.

Per batch, in one transaction and set-based (a fixed number of statements however
many signals it holds: engine.enroll_batch): record each signal's receipt (a
redelivered signal is recognised by its ``signal_id`` and changes nothing), enrol its
account in every enabled playbook whose trigger and audience match, run the first
steps at once (so the first message is in the outbox before the offsets are committed), and record
the signal's outreach decision (``outreach_decisions``): ``enrolled``, ``held_out``,
``skipped`` (reason ``already_enrolled``: the account is active in every matching
playbook already) or ``no_matching_playbook``, and settle the signal with the rules
service (its ``settle_signals`` command). No signal is left without a decision; the
rules service republishes any it has not seen settled (see docs/playbooks.md, "Every
signal ends in a decision").
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from services.ingest import interface as ingest
from services.outreach.playbooks import engine
from services.outreach.playbooks import repository as repo
from services.rules.interface import SEGMENT_LEFT, segment_memberships, settle_signals
from shared.clock import Clock
from shared.collector import cyclic_gc_paused
from shared.kafka.batch_worker import BatchResult, BatchWorker, Reject
from shared.metrics import EVENTS_DUPLICATE, OUTREACH_DECISIONS
from shared.settings import Settings
from shared.signals import Signal

log = logging.getLogger(__name__)


class SignalWorker(BatchWorker):
    name = "outreach"

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        group_id: str | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        super().__init__(settings, session_factory, clock, group_id, producer)
        self.dlq_topic = self.settings.topic_signals_dlq

    def topics(self) -> list[str]:
        return [self.settings.topic_signals]

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        # The cyclic collector paused while a batch is enrolled (each worker is its own process).
        with cyclic_gc_paused():
            return self._handle_batch(session, records)

    def _handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        now = self.clock.now()
        signals: list[Signal] = []
        rejects: list[Reject] = []
        for record in records:
            try:
                signals.append(Signal.model_validate(json.loads(record.value)))
            except (ValueError, TypeError, ValidationError) as exc:
                rejects.append(Reject(record, "invalid_signal", f"{type(exc).__name__}: {exc}"[:2000]))
        new = repo.record_signals(
            session,
            [
                {
                    "signal_id": s.signal_id,
                    "account_id": s.account_id,
                    "rule_id": s.rule_id,
                    "kind": s.kind,
                    "received_at": now,
                    "enrolled": 0,
                }
                for s in {s.signal_id: s for s in signals}.values()
            ],
        )
        duplicates = len(signals) - len(new)
        if duplicates:
            EVENTS_DUPLICATE.labels(self.name).inc(duplicates)
        playbooks = [engine.compile_version(head.id, v.version, v.definition) for head, v in repo.enabled_current(session)]
        accounts = ingest.accounts(session, {s.account_id for s in signals if s.signal_id in new})
        # Each new signal once, in order; its matching playbooks, in order: the pairs to enrol.
        first: dict[str, Signal] = {}
        for signal in signals:
            if signal.signal_id in new:
                first.setdefault(signal.signal_id, signal)
        fresh = list(first.values())
        pairs: list[tuple[engine.Compiled, Signal]] = []
        matched: list[list[int]] = []
        # The accounts' named segments, read once for the batch if an audience names one.
        members = (
            segment_memberships(session, first_accounts(fresh)) if any(c.definition.audience.named_segments for c in playbooks) else {}
        )
        for signal in fresh:
            account = accounts.get(signal.account_id)
            matched.append([])
            for compiled in playbooks:
                d = compiled.definition
                if d.trigger.matches(signal) and d.audience.matches(account, members.get(signal.account_id)):
                    matched[-1].append(len(pairs))
                    pairs.append((compiled, signal))
        enrollments = engine.enroll_batch(session, pairs, {s.account_id: accounts.get(s.account_id) for s in fresh}, now, self.settings)
        # Leaving a segment stops the running enrolments that entering it started.
        stopped = engine.stop_on_segment_left(session, [s for s in fresh if s.kind == SEGMENT_LEFT], now)
        enrolled = already = 0
        decisions: list[dict[str, Any]] = []
        for signal, indexes in zip(fresh, matched, strict=True):
            outcomes = [{"playbook_id": p, "version": v, "outcome": "stopped"} for p, v in stopped.get(signal.signal_id, [])]
            for k in indexes:
                enrollment = enrollments[k]
                if enrollment is None:
                    already += 1
                    outcome = "already_enrolled"
                else:
                    enrolled += 1
                    outcome = "held_out" if enrollment.holdout else "enrolled"
                compiled = pairs[k][0]
                outcomes.append({"playbook_id": compiled.playbook_id, "version": compiled.version, "outcome": outcome})
            decision, reason = decide(outcomes)
            decisions.append(
                {
                    "signal_id": signal.signal_id,
                    "account_id": signal.account_id,
                    "rule_id": signal.rule_id,
                    "kind": signal.kind,
                    "decision": decision,
                    "reason": reason,
                    "playbooks": outcomes,
                    "decided_at": now,
                }
            )
        for decision, n in Counter(row["decision"] for row in decisions).items():
            OUTREACH_DECISIONS.labels(decision).inc(n)
        repo.record_new_decisions(session, decisions)  # only the signals whose receipts are new
        settle_signals(session, [row["signal_id"] for row in decisions])  # rules' orphan sweeper stops checking them
        return BatchResult(
            rejects=rejects, summary={"signals": len(new), "duplicates": duplicates, "enrolled": enrolled, "already_enrolled": already}
        )


def first_accounts(signals: list[Signal]) -> list[str]:
    return sorted({s.account_id for s in signals})


def decide(outcomes: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A signal's decision from its matching playbooks' outcomes."""
    kinds = {o["outcome"] for o in outcomes}
    if not kinds:
        return "no_matching_playbook", None
    if "enrolled" in kinds:
        return "enrolled", None
    if "held_out" in kinds:
        return "held_out", None
    if kinds == {"stopped"}:
        return "stopped", "segment_left"
    return "skipped", "already_enrolled"
