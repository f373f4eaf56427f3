"""Demo-like data for the console tests, written through our own services: the demo's
synthetic events through ingest, the starter rules and playbooks, one scheduled tick
(signals), enrolment through the outreach signal worker's own batch handler, and a
conversion sweep after some churning accounts come back. Plus one hostile account
whose name, traits and event properties are markup."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from services import demo
from services.ingest.service import apply_events
from services.outreach.playbooks import engine
from services.outreach.playbooks.worker import SignalWorker
from services.outreach.starter import seed_starter_content
from services.rules.evaluation.service import run_tick
from services.rules.interface import install_starter_health_model, run_health_day
from services.rules.models import SignalRecord
from services.rules.rules.importer import STARTER_DIR, import_rules
from shared.clock import SimulatedClock
from shared.db import transaction
from shared.events import Event

XSS_SCRIPT = "<script>window.__pwned = 1</script>"
XSS_IMG = '"><img src=x onerror="window.__pwned = 2">'
HOSTILE = "acct-hostile"
HEALTH_DAYS = 30


@dataclass
class _Record:
    value: bytes


def _apply(session_factory, events: list[dict], now: datetime) -> None:
    for i in range(0, len(events), 2000):
        with transaction(session_factory) as s:
            apply_events(s, [Event.model_validate_json(json.dumps(e)) for e in events[i : i + 2000]], now)


def hostile_events(now: datetime) -> list[dict]:
    ts = (now - timedelta(days=2)).isoformat()
    return [
        {
            "event_id": "hostile-group",
            "type": "group",
            "account_id": HOSTILE,
            "timestamp": ts,
            "traits": {"name": XSS_SCRIPT, "plan": "pro", "segment": "smb", "seats": 3, "note": XSS_IMG},
        },
        {
            "event_id": "hostile-identify",
            "type": "identify",
            "account_id": HOSTILE,
            "user_id": "u-evil",
            "timestamp": ts,
            "traits": {"name": XSS_IMG, "email": "evil@example.com", "role": "champion"},
        },
        {
            "event_id": "hostile-track",
            "account_id": HOSTILE,
            "user_id": "u-evil",
            "name": "login",
            "timestamp": ts,
            "properties": {"note": XSS_SCRIPT},
        },
    ]


def seed(session_factory, settings, clock: SimulatedClock, accounts: int = 20, days: int = 40) -> dict:
    now = clock.now()
    events = list(demo.generate(accounts=accounts, days=days, seed=7, end=now))
    _apply(session_factory, events + hostile_events(now), now)
    with transaction(session_factory) as s:
        import_rules(s, STARTER_DIR, actor="ops:seed", now=now, retention_days=settings.raw_event_retention_days, enable=True)
        seed_starter_content(s, settings, now, enable_playbooks=True)
    run_tick(session_factory, settings, now)
    with session_factory() as s:
        rows = list(s.scalars(select(SignalRecord)))
    signals = [r.to_signal() for r in rows]
    worker = SignalWorker(settings, session_factory, clock)
    with transaction(session_factory) as s:
        worker.handle_batch(s, [_Record(sig.model_dump_json().encode()) for sig in signals])
    # Half of the churning accounts come back over the next days; the sweep converts them.
    later = now + timedelta(days=3)
    churning = sorted({sig.account_id for sig in signals if sig.rule_id == "no-login-14d"})
    back = []
    for a in churning[::2]:
        for d in range(3):
            ts = (now + timedelta(days=d, hours=1)).isoformat()
            for n in range(2):
                back.append({"event_id": f"back-{a}-{d}-{n}", "account_id": a, "user_id": "u000", "name": "login", "timestamp": ts})
    clock.set(later)
    _apply(session_factory, back, later)
    with transaction(session_factory) as s:
        engine.sweep_conversions(s, later, 10_000)
    scored = seed_health(session_factory, settings, now)
    engagements = seed_engagements(session_factory, settings, later, churning)
    # Scored again after the engagements opened (their reason recorded the health of
    # `now`): the change since opening is what the inbox and the engagement page show.
    run_health_day(session_factory, settings, later)
    return {
        "signals": len(signals),
        "churning": churning,
        "accounts": accounts + 1,
        "engagements": engagements,
        "health_days": scored + 1,
    }


def seed_health(session_factory, settings, now: datetime, days: int = HEALTH_DAYS) -> int:
    """The starter health model and the daily scoring, as the rules worker runs it, of the
    ``days`` days up to ``now`` (so the sparklines and the 90-day chart have a history)."""
    with transaction(session_factory) as s:
        install_starter_health_model(s, actor="ops:seed", now=now - timedelta(days=days))
    for back in range(days - 1, -1, -1):
        run_health_day(session_factory, settings, now - timedelta(days=back))
    return days


def seed_engagements(session_factory, settings, now: datetime, churning: list[str]) -> dict[str, str]:
    """Two CSMs on the roster; an engagement per churning account and one for the hostile
    account (with a hostile note), assigned to csm-1 by CS Ops."""
    from services.outreach.engagements import assignment, opening, roster
    from services.outreach.engagements.schemas import CsmIn

    out = {}
    with transaction(session_factory) as s:
        roster.put(
            s, "csm-1", CsmIn(name="Grace Pool", email="grace@example.com", capacity=200), actor="ops:seed", now=now, settings=settings
        )
        roster.put(s, "csm-2", CsmIn(name="Alan Pool", email="alan@example.com", capacity=5), actor="ops:seed", now=now, settings=settings)
        for a in churning + [HOSTILE]:
            e, _ = opening.open_engagement(
                s,
                account_id=a,
                goal="recover_usage",
                actor="ops:seed",
                now=now,
                settings=settings,
                title=f"Win back {a}",
                note=XSS_IMG if a == HOSTILE else "usage stopped two weeks ago",
            )
            if e.csm_id != "csm-1":
                assignment.reassign(s, e, "csm-1", actor="ops:seed", now=now, settings=settings, reason="seed")
            out[a] = e.id
    return out
