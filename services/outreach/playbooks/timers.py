"""The timer worker: runs enrolments whose ``due_at`` has passed (waits ending).

A tick claims due enrolments (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so timer
workers can run side by side), advances each inside a savepoint (one broken
enrolment is marked failed, the rest go on) and commits once. Time comes from the
injected clock: tests and the demo move a simulated clock instead of sleeping.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.outreach.playbooks import engine
from services.outreach.playbooks import repository as repo
from shared import faults
from shared.clock import Clock
from shared.db import transaction, transient_db_error
from shared.worker import PeriodicWorker

log = logging.getLogger(__name__)


class TimerWorker(PeriodicWorker):
    name = "outreach-timers"
    batch = 500
    sweep_limit = 20_000

    def __init__(self, settings, session_factory: sessionmaker[Session], clock: Clock | None = None):
        super().__init__(settings, session_factory, clock)
        self._next_sweep = None

    def describe(self) -> str:
        return f"due playbook steps every {self.interval():.1f}s"

    def more_work(self, handled: int) -> bool:
        return handled >= self.batch  # a full batch: more may be due already

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
        self._maybe_sweep(now)
        return len(due)

    def _maybe_sweep(self, now) -> None:
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
