"""The enrolment consumer: a consumer group on ``cs.signals``.

Per batch, in one transaction: record each signal's receipt (a redelivered signal
is recognised by its ``signal_id`` and changes nothing), enrol its account in every
enabled playbook whose trigger and audience match, and run the first steps at once
(so the first message is in the outbox before the offsets are committed).
"""
from __future__ import annotations

import json
import logging

from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.ingest import repository as ingest_repo
from services.outreach.playbooks import engine
from services.outreach.playbooks import repository as repo
from shared.kafka import BatchResult, BatchWorker, Reject
from shared.metrics import EVENTS_DUPLICATE
from shared.signals import Signal

log = logging.getLogger(__name__)


class SignalWorker(BatchWorker):
    name = "outreach"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dlq_topic = self.settings.topic_signals_dlq

    def topics(self) -> list[str]:
        return [self.settings.topic_signals]

    def handle_batch(self, session: Session, records: list[ConsumerRecord]) -> BatchResult:
        now = self.clock.now()
        signals: list[Signal] = []
        rejects: list[Reject] = []
        for record in records:
            try:
                signals.append(Signal.model_validate(json.loads(record.value)))
            except (ValueError, TypeError, ValidationError) as exc:
                rejects.append(Reject(record, "invalid_signal", f"{type(exc).__name__}: {exc}"[:2000]))
        new = repo.record_signals(session, [
            {"signal_id": s.signal_id, "account_id": s.account_id, "rule_id": s.rule_id, "kind": s.kind,
             "received_at": now, "enrolled": 0} for s in {s.signal_id: s for s in signals}.values()])
        duplicates = len(signals) - len(new)
        if duplicates:
            EVENTS_DUPLICATE.labels(self.name).inc(duplicates)
        playbooks = [engine.compile_version(head.id, v.version, v.definition) for head, v in repo.enabled_current(session)]
        accounts = ingest_repo.get_accounts(session, {s.account_id for s in signals if s.signal_id in new})
        enrolled = already = 0
        done: set[str] = set()
        for signal in signals:
            if signal.signal_id not in new or signal.signal_id in done:
                continue
            done.add(signal.signal_id)
            account = accounts.get(signal.account_id)
            for compiled in playbooks:
                d = compiled.definition
                if not (d.trigger.matches(signal) and d.audience.matches(account)):
                    continue
                if engine.enroll(session, compiled, signal, account, now, self.settings) is None:
                    already += 1
                else:
                    enrolled += 1
            session.flush()
        return BatchResult(rejects=rejects, summary={"signals": len(new), "duplicates": duplicates, "enrolled": enrolled,
                                                     "already_enrolled": already})
