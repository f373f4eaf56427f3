"""The outreach timer worker (``outreach-timers``): every tick it runs the playbook
enrolments whose ``due_at`` has passed (waits ending), then the broadcasts that are due,
a chunk of member accounts per transaction (services/outreach/broadcasts), and now and
then the conversion sweep.

A tick claims due enrolments (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so timer
workers can run side by side), advances each inside a savepoint (one broken
enrolment is marked failed, the rest go on) and commits once. Time comes from the
injected clock: tests and the demo move a simulated clock instead of sleeping.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.outreach.broadcasts import service as broadcasts
from services.outreach.playbooks import engine
from services.outreach.playbooks import repository as repo
from shared import faults
from shared.clock import Clock
from shared.db import transaction, transient_db_error
from shared.settings import Settings
from shared.worker import PeriodicWorker

log = logging.getLogger(__name__)


class TimerWorker(PeriodicWorker):
    name = "outreach-timers"
    batch = 500
    sweep_limit = 20_000
    broadcast_chunks = 10  # broadcast chunks per tick, so waits coming due are not held up behind a large broadcast

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], clock: Clock | None = None):
        super().__init__(settings, session_factory, clock)
        self._next_sweep: datetime | None = None
        self._broadcast_more = False  # the last tick sent as many broadcast chunks as it may: more may be due

    def describe(self) -> str:
        return f"due playbook steps and broadcasts every {self.interval():.1f}s"

    def more_work(self, handled: int) -> bool:
        return handled >= self.batch or self._broadcast_more  # a full batch: more may be due already

    def poll_once(self, timeout_ms: int | None = None) -> int:
        now = self.clock.now()
        with transaction(self.session_factory) as session:
            due = repo.due_enrollments(session, now, self.batch)
            for enrollment in due:
                try:
                    with session.begin_nested():
                        compiled = engine.load_compiled(session, enrollment.playbook_id, enrollment.playbook_version)
                        engine.advance(session, enrollment, compiled, now, self.settings)
                except Exception as exc:  # one broken enrolment must not hold up the others
                    if transient_db_error(exc):
                        raise  # not this enrolment's fault: the whole tick rolls back and is retried
                    log.exception("%s: enrolment %s failed", self.name, enrollment.id)
                    session.refresh(enrollment)
                    engine._end(enrollment, "failed", now, {"reason": f"{type(exc).__name__}: {exc}"[:500]})
            session.flush()
            faults.point(f"{self.name}.before_commit")
        # Due broadcasts, a chunk of member accounts per transaction (docs/broadcasts.md).
        chunks = broadcasts.send_due(self.session_factory, self.settings, now, max_chunks=self.broadcast_chunks)
        self._broadcast_more = chunks >= self.broadcast_chunks
        self._maybe_sweep(now)
        return len(due) + chunks

    def _maybe_sweep(self, now: datetime) -> None:
        """Every ``outreach_conversion_check_seconds``, end as converted the running
        enrolments whose exit condition now holds, without waiting for their next step:
        a customer who came back stops getting win-back mail as soon as we can tell."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + timedelta(seconds=self.settings.outreach_conversion_check_seconds)
        with transaction(self.session_factory) as session:
            converted = engine.sweep_conversions(session, now, limit=self.sweep_limit)
        if converted:
            log.info("%s: %d enrolments converted (exit condition met)", self.name, converted)
