"""Firing signals: claim the cooldown, persist the signal, queue it in the outbox for
``cs.signals`` and apply lifecycle actions, all in the caller's transaction.

signal_id = uuid5(rule id, account, firing key); the firing key is the triggering
event's id for event-triggered rules and the tick slot for scheduled ones. A
redelivered event or a re-run tick therefore produces the same id (inserted once),
and the cooldown claim makes "once per account per cooldown" hold across workers.

No signal without an outcome. A stored signal is due for a decision check
``signal_decision_grace_seconds`` after it fired. Outreach, in the transaction that
records its decision on a signal, settles it through rules' published command
(:func:`settle`): rules never asks outreach. :func:`republish_orphans` puts the due
signals, none of which has a decision, in the outbox again (→ ``cs.signals``; outreach
deduplicates by signal_id), checking again after a doubling delay (capped at a day). A broker that lost ``cs.signals`` records between
the relay's ack and outreach's consumer (the embedded broker after a restart) thus
heals by itself.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.rules.rules.service import LoadedRule
from services.rules.signals import repository as repo
from shared import outbox
from shared.ids import uuid5
from shared.metrics import SIGNALS_FIRED, SIGNALS_REPUBLISHED
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
    return uuid5(NAMESPACE, f"{rule_id}\x1f{account_id}\x1f{firing_key}")


def fire(session: Session, rule: LoadedRule, firings: list[Firing], now: datetime, settings: Settings, trigger: str) -> list[Signal]:
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
        Signal(
            signal_id=signal_id(rule.id, a, f.firing_key),
            rule_id=rule.id,
            rule_version=rule.version,
            rule_name=d.name,
            account_id=a,
            user_id=f.user_id,
            kind=d.kind,
            severity=d.severity,
            fired_at=now,
            evidence=f.evidence,
        )
        for a, f in sorted(first.items())
        if a in won
    ]
    new = emit(session, signals, now, settings, trigger, {a: f.event_id for a, f in first.items()})
    stage = d.actions.set_lifecycle_stage
    if stage and new:
        ingest.set_lifecycle_stage(session, [s.account_id for s in new], stage, now)  # ingest owns the stage
        session.flush()
    return new


def emit(
    session: Session, signals: list[Signal], now: datetime, settings: Settings, trigger: str, event_ids: dict[str, str | None] | None = None
) -> list[Signal]:
    """Store ``signals`` (those whose id is new), queue them in the outbox for
    ``cs.signals`` and schedule their decision check: what every firing does, a rule's
    (:func:`fire`) or a segment's entering and leaving. Returns the new ones."""
    check_at = now + timedelta(seconds=settings.signal_decision_grace_seconds)
    event_of = (event_ids or {}).get
    # vars(s): the fields as they are (the row is written, never changed), where model_dump()
    # would serialise each signal's evidence into a copy; the outbox serialises it once, to JSON.
    inserted = repo.insert_signals(
        session,
        [
            {**vars(s), "trigger": trigger, "event_id": event_of(s.account_id), "decision_due_at": check_at, "republished": 0}
            for s in signals
        ],
    )
    new = [s for s in signals if s.signal_id in inserted]
    enqueue_many(session, [_outbox_message(settings, s) for s in new], now)
    session.flush()
    # Counted when written: a batch rolled back after this point and redelivered counts
    # its signals twice on the dashboard (never in the database: the ids are deterministic).
    for kind, n in Counter(s.kind for s in new).items():
        SIGNALS_FIRED.labels(kind).inc(n)
    return new


def _outbox_message(settings: Settings, s: Signal) -> dict[str, Any]:
    return {
        "topic": settings.topic_signals,
        "key": s.account_id.encode(),
        "value": s.model_dump_json().encode(),
        "headers": {"touchline.signal_id": s.signal_id, "touchline.kind": s.kind},
    }


MAX_RECHECK = timedelta(days=1)


def settle(session: Session, signal_ids: list[str]) -> None:
    """Outreach has decided on ``signal_ids`` (called in the transaction that records
    the decisions): they are never checked or republished again. Unknown ids are
    ignored. Flushes only."""
    repo.settle(session, set(signal_ids))


def republish_orphans(session: Session, now: datetime, settings: Settings, limit: int = 1000) -> tuple[int, int]:
    """Republish up to ``limit`` signals whose decision check is due: outreach settles a
    signal when it decides on it (:func:`settle`), so a due signal has no decision.
    Returns (checked, republished); flushes only."""
    orphans = repo.due_for_decision_check(session, now, limit)
    if not orphans:
        return 0, 0
    grace = timedelta(seconds=settings.signal_decision_grace_seconds)
    enqueue_many(
        session,
        [_outbox_message(settings, r.to_signal()) for r in orphans],
        now,
    )
    for r in orphans:
        r.republished += 1
        r.decision_due_at = now + min(grace * 2 ** min(r.republished, 16), MAX_RECHECK)
    if orphans:
        SIGNALS_REPUBLISHED.inc(len(orphans))
    session.flush()
    return len(orphans), len(orphans)


def forget_contact(session: Session, account_id: str, identifiers: list[str]) -> int:
    """Erasure: scrub a contact's email addresses and names from the account's signals
    and from the outbox payloads that carry them. Returns the rows changed."""
    changed = repo.scrub_evidence(session, account_id, identifiers) + outbox.scrub(session, identifiers)
    session.flush()
    return changed
