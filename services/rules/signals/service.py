"""Firing signals: claim the cooldown, persist the signal, queue it in the outbox for
``cs.signals`` and apply lifecycle actions, all in the caller's transaction.

signal_id = uuid5(rule id, account, firing key); the firing key is the triggering
event's id for event-triggered rules and the tick slot for scheduled ones. A
redelivered event or a re-run tick therefore produces the same id (inserted once),
and the cooldown claim makes "once per account per cooldown" hold across workers.
"""
from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import repository as ingest_repo
from services.ingest.service import apply_account_traits
from services.rules.rules.service import LoadedRule
from services.rules.signals import repository as repo
from shared.events import AccountTraits
from shared.metrics import SIGNALS_FIRED
from shared.outbox import enqueue_many
from shared.settings import Settings
from shared.signals import Signal

NAMESPACE = uuid.UUID("2b7e9c1a-4f3d-5e8a-9b6c-0d1e2f3a4b5c")


@dataclass
class Firing:
    account_id: str
    evidence: dict[str, Any]
    firing_key: str
    user_id: str | None = None
    event_id: str | None = None


def signal_id(rule_id: str, account_id: str, firing_key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{rule_id}\x1f{account_id}\x1f{firing_key}"))


def fire(session: Session, rule: LoadedRule, firings: list[Firing], now: datetime, settings: Settings,
         trigger: str) -> list[Signal]:
    """Fire at most once per account (the first firing of each account wins). Returns
    the signals that are new."""
    first: dict[str, Firing] = {}
    for f in firings:
        first.setdefault(f.account_id, f)
    if not first:
        return []
    won = repo.claim_cooldowns(session, rule.id, list(first), now, now + timedelta(seconds=rule.definition.cooldown_seconds))
    d = rule.definition
    signals = [
        Signal(signal_id=signal_id(rule.id, a, f.firing_key), rule_id=rule.id, rule_version=rule.version, rule_name=d.name,
               account_id=a, user_id=f.user_id, kind=d.kind, severity=d.severity, fired_at=now, evidence=f.evidence)
        for a, f in sorted(first.items()) if a in won
    ]
    inserted = repo.insert_signals(session, [
        {**s.model_dump(), "trigger": trigger, "event_id": first[s.account_id].event_id} for s in signals
    ])
    new = [s for s in signals if s.signal_id in inserted]
    enqueue_many(session, [
        {"topic": settings.topic_signals, "key": s.account_id.encode(), "value": s.model_dump_json().encode(),
         "headers": {"touchline.signal_id": s.signal_id, "touchline.kind": s.kind}} for s in new
    ], now)
    stage = d.actions.set_lifecycle_stage
    if stage and new:
        accounts = ingest_repo.get_accounts(session, [s.account_id for s in new])
        for account in accounts.values():
            if account.lifecycle_stage != stage:
                apply_account_traits(account, AccountTraits(lifecycle_stage=stage), now, now)
    session.flush()
    # Counted when written: a batch rolled back after this point and redelivered counts
    # its signals twice on the dashboard (never in the database: the ids are deterministic).
    for kind, n in Counter(s.kind for s in new).items():
        SIGNALS_FIRED.labels(kind).inc(n)
    return new
