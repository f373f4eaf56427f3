"""The loop of every worker that polls the database on a period (playbook timers, the
sender), beside :class:`shared.kafka.batch_worker.BatchWorker` for the consumer-group workers.

One tick is :meth:`PeriodicWorker.poll_once`: it owns its transactions and returns how
much it did; the loop runs it again at once while there is more (:meth:`more_work`),
else waits one period. A database error that time can cure (SQLite's "database is
locked", a lost connection, a serialization failure) never ends the loop: the tick's
transaction has rolled back, the worker logs it, counts it in
``touchline_db_retries_total`` and tries again after an exponential backoff. Any other
error is a bug and ends the process (``touchline run`` restarts it, with backoff).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock, SystemClock
from shared.db import transient_db_error
from shared.metrics import DB_RETRIES
from shared.settings import Settings

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff: ``initial``, doubling up to ``maximum``; :meth:`reset` after a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return min(self.maximum, self.initial * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


def retry_db_error(worker: str, exc: BaseException, backoff: Backoff, stop_event: threading.Event) -> bool:
    """If ``exc`` is a transient database error: log it, count it, wait the backoff (or
    until stopped) and return True. Else return False (the caller re-raises)."""
    kind = transient_db_error(exc)
    if kind is None:
        return False
    DB_RETRIES.labels(worker, kind).inc()
    delay = backoff.next_delay()
    log.error(
        "%s: database %s (%s); rolled back, retrying in %.1fs (attempt %d)",
        worker,
        "unavailable" if kind == "connection" else kind,
        getattr(exc, "orig", exc),
        delay,
        backoff.failures,
    )
    stop_event.wait(delay)
    return True


class PeriodicWorker:
    """Base of the database-polling workers. Subclasses set ``name`` and implement
    :meth:`poll_once`; the loop owns pacing, retries and stopping."""

    name = "periodic"

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], clock: Clock | None = None) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.db_backoff = Backoff(1.0, settings.retry_max_seconds)

    # ---- to implement -------------------------------------------------
    def poll_once(self, timeout_ms: int | None = None) -> int:
        """One tick; returns how many items it handled."""
        raise NotImplementedError

    def more_work(self, handled: int) -> bool:
        """Whether to tick again at once instead of waiting a period."""
        return handled > 0

    def interval(self) -> float:
        return self.settings.outreach_tick_seconds

    def describe(self) -> str:
        return f"every {self.interval():.1f}s"

    def housekeeping(self) -> None:
        """Periodic upkeep after each tick (pruning, sampling), retried like the tick."""

    def close(self) -> None:
        pass

    # ---- the loop -----------------------------------------------------
    def tick(self) -> int:
        """Run one tick; a transient database error is logged, counted and backed off
        (returns 0), never raised."""
        try:
            handled = self.poll_once()
            self.housekeeping()
        except Exception as exc:
            if retry_db_error(self.name, exc, self.db_backoff, self.stop_event):
                return 0
            raise
        self.db_backoff.reset()
        return handled

    def run(self) -> None:
        """Tick until :attr:`stop_event` is set (SIGTERM/SIGINT in the CLI)."""
        log.info("%s worker running %s", self.name, self.describe())
        try:
            while not self.stop_event.is_set():
                if not self.more_work(self.tick()):
                    self.stop_event.wait(self.interval())
        finally:
            self.close()
            log.info("%s worker stopped", self.name)
