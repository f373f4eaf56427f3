"""Driving `touchline demo`'s world on the simulated clock, for the tests that run the
demo (tests/e2e/test_demo.py, tests/e2e/test_readme_tour.py): when the history has been
judged, and the outreach workers run on while the clock jumps to each next due time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import yaml
from sqlalchemy import func, select

from services.outreach.models import Enrollment, Message
from services.outreach.outcomes import signals_with_decision
from services.rules.interface import STARTER_DIR
from services.rules.models import RuleTick, SignalRecord
from shared.outbox import pending_count

# The scheduled ones of services/rules/starter/*.yaml, which the demo enables: each ticks once
# (an event-triggered rule, such as nps-detractor, never ticks).
SCHEDULED_STARTER_RULES = sum("schedule" in (yaml.safe_load(p.read_text()).get("trigger") or {}) for p in STARTER_DIR.glob("*.yaml"))


def settled(session_factory) -> bool:
    """Every scheduled starter rule has ticked once over the loaded history, every signal is
    published and outreach has decided on each."""
    with session_factory() as s:
        ticks = s.scalar(select(func.count()).select_from(RuleTick))
        fired = list(s.scalars(select(SignalRecord.signal_id)))
        return ticks == SCHEDULED_STARTER_RULES and pending_count(s) == 0 and len(signals_with_decision(s, fired)) == len(fired)


def next_due(session_factory, now: datetime) -> datetime:
    """The next time a playbook step or a queued message falls due (a minute on if none)."""
    with session_factory() as s:
        due = [
            s.scalar(select(func.min(Enrollment.due_at)).where(Enrollment.status == "active", Enrollment.due_at > now)),
            s.scalar(select(func.min(Message.next_attempt_at)).where(Message.state == "queued", Message.next_attempt_at > now)),
        ]
    return min([d for d in due if d is not None], default=now + timedelta(minutes=1))


def run_outreach_until(workers, session_factory, clock, done: Callable[[], bool], what: Callable[[], object]) -> None:
    """Poll the outreach workers, the clock jumping to each next due time when they are
    idle, until ``done()``. Quiet hours can defer an email (and so an escalation) to the
    contact's morning: at most 14 simulated hours; ``what()`` says where it stood."""
    started = clock.now()
    while not done():
        assert clock.now() - started < timedelta(hours=14), what()
        if not sum(w.poll_once(100) or 0 for w in workers):
            clock.set(max(next_due(session_factory, clock.now()), clock.now() + timedelta(seconds=1)))
