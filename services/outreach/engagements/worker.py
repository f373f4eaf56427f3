"""The engagements worker (``touchline worker outreach-engagements``): one tick
assigns queued engagements (assignment.py) and runs the time-box timers (reminders,
expiry, held-out measurement), each in its own transaction. Several may run at once:
the roster lock and SKIP LOCKED claims keep them correct (docs/engagements.md).
Time comes from the injected clock."""

from __future__ import annotations

import logging
import os
import socket

from sqlalchemy.orm import Session, sessionmaker

from services.outreach.engagements import assignment, timebox
from shared.clock import Clock
from shared.db import transaction
from shared.settings import Settings
from shared.worker import PeriodicWorker

log = logging.getLogger(__name__)


class EngagementWorker(PeriodicWorker):
    """The loop, its pacing and its database retries are PeriodicWorker's."""

    name = "outreach-engagements"

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], clock: Clock | None = None):
        super().__init__(settings, session_factory, clock)
        self.actor = f"{assignment.ACTOR}:{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> str:
        return f"assigning engagements and running their time-boxes every {self.interval():.1f}s"

    def poll_once(self, timeout_ms: int | None = None) -> int:
        now = self.clock.now()
        with transaction(self.session_factory) as session:
            assigned = assignment.assign_pending(session, now, self.settings, actor=self.actor)
        with transaction(self.session_factory) as session:
            timers = timebox.run_timers(session, now, self.settings)
        if assigned or any(timers.values()):
            log.info("%s: assigned %d, %s", self.name, assigned, timers)
        return assigned + sum(timers.values())
