"""Helpers for the rules tests: seed ingest state through ingest's own service, create rules."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import func, select

from services.ingest.service import apply_events
from services.rules.models import SignalRecord
from services.rules.rules import service as rules_service
from shared.db import transaction
from shared.events import Event
from tests.support.helpers import track


def ingest(session_factory, events: list[dict], now: datetime) -> None:
    with transaction(session_factory) as s:
        apply_events(s, [Event.model_validate_json(json.dumps(e)) for e in events], now)


def group(account_id: str, ts: datetime, **traits) -> dict:
    key = hashlib.sha1(f"{account_id}{ts.isoformat()}{sorted(traits.items())}".encode()).hexdigest()
    return {"event_id": f"g-{key}", "type": "group", "account_id": account_id, "timestamp": ts.isoformat(), "traits": traits}


def identify(account_id: str, user_id: str, ts: datetime, **traits) -> dict:
    return {
        "event_id": f"i-{account_id}-{user_id}-{ts.isoformat()}",
        "type": "identify",
        "account_id": account_id,
        "user_id": user_id,
        "timestamp": ts.isoformat(),
        "traits": traits,
    }


def no_login_rule(**changes) -> dict:
    """The rule most tests fire: "no login in 14 days" on an account, checked every hour.
    ``changes`` replace or add top-level fields (a shorter cooldown, an audience ...)."""
    return {
        "id": "no-login-14d",
        "name": "No login in 14 days",
        "kind": "churn_risk",
        "severity": "high",
        "trigger": {"schedule": {"every": "1h"}},
        "condition": {"metric": "days_since", "event": "login", "op": ">=", "value": 14},
        "cooldown": "14d",
        **changes,
    }


def make_rule(session_factory, obj: dict, now: datetime, enabled: bool = True, actor: str = "ops:test"):
    with transaction(session_factory) as s:
        d, _ = rules_service.parse(obj, 400)
        rules_service.create(s, d, enabled, actor, now)
    return d


def seed_one_fading_account(session_factory, now: datetime) -> tuple[str, str]:
    """A backtest with one answer: "steady" logs in daily for the 30 days up to ``now``,
    "fades" only for the first ten of them, and no_login_rule() is saved disabled.
    Returns (start, end), the last 20 days as ISO dates: a backtest over them finds
    "fades" alone."""
    ingest(
        session_factory,
        [
            track(a, "login", now - timedelta(days=30 - d), "u1", f"{a}{d}")
            for a in ("fades", "steady")
            for d in range(30)
            if a == "steady" or d < 10
        ],
        now,
    )
    make_rule(session_factory, no_login_rule(), now, enabled=False)
    return (now - timedelta(days=20)).date().isoformat(), now.date().isoformat()


def signals(session_factory, **where) -> list[SignalRecord]:
    with session_factory() as s:
        q = select(SignalRecord).order_by(SignalRecord.fired_at, SignalRecord.account_id)
        for k, v in where.items():
            q = q.where(getattr(SignalRecord, k) == v)
        return list(s.scalars(q))


def count(session_factory, model) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(model))


def ingest_reports_caught_up(settings, session_factory, clock) -> None:
    """The rules tick runs only once ingest has reported that it stored what the topic
    holds (the freshness watermark, docs/rules.md). Tests that load ingest state through
    its service rather than the topic run a real ingest worker on the (empty) topic
    until it has reported every partition."""
    from services.ingest.events.worker import IngestWorker
    from shared import consumer_progress as progress
    from shared.kafka.clients import ensure_topics, group_id_of
    from tests.support.helpers import drain

    ensure_topics(settings)
    worker = IngestWorker(settings, session_factory, clock)

    def reported() -> bool:
        with session_factory() as s:
            return len(progress.positions(s, group_id_of(settings, "ingest"), settings.topic_events)) == settings.topic_partitions

    try:
        drain(worker, reported)
    finally:
        worker.close()
