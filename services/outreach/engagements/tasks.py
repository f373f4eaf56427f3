"""The engagements worker (``touchline worker outreach-engagements``): one tick
assigns queued engagements (assignment.py) and runs the time-box timers (reminders,
expiry, held-out measurement), each in its own transaction. Several may run at once:
the roster lock and SKIP LOCKED claims keep them correct (docs/engagements.md).
Time comes from the injected clock."""
from __future__ import annotations

import logging
import os
import socket
import threading

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.outreach.engagements import assignment, service
from shared.clock import Clock, SystemClock
from shared.db import transaction

log = logging.getLogger(__name__)


class EngagementWorker:
    name = "outreach-engagements"

    def __init__(self, settings, session_factory: sessionmaker[Session], clock: Clock | None = None):
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.actor = f"{assignment.ACTOR}:{socket.gethostname()}:{os.getpid()}"

    def run(self) -> None:
        log.info("%s: assigning and running engagement time-boxes every %.1fs", self.name,
                 self.settings.outreach_tick_seconds)
        while not self.stop_event.is_set():
            try:
                busy = self.poll_once()
            except OperationalError as exc:  # the database is away: roll back (done), back off, retry
                log.warning("%s: database error, retrying: %s", self.name, exc.orig)
                busy = 0
            if busy == 0:
                self.stop_event.wait(self.settings.outreach_tick_seconds)

    def close(self) -> None:
        pass

    def poll_once(self, timeout_ms: int | None = None) -> int:
        now = self.clock.now()
        with transaction(self.session_factory) as session:
            assigned = assignment.assign_pending(session, now, self.settings, actor=self.actor)
        with transaction(self.session_factory) as session:
            timers = service.run_timers(session, now, self.settings)
        if assigned or any(timers.values()):
            log.info("%s: assigned %d, %s", self.name, assigned, timers)
        return assigned + sum(timers.values())
