"""A sender's claim on a batch: the lease it renews while it works, and the fencing
token that makes a stale owner harmless.

Every claim gets a fresh token, written on each claimed row. While the owner delivers,
the lease is renewed (``UPDATE ... SET lease_until WHERE lease_token = :token``) every
third of the lease: between messages by the sending thread, and by a heartbeat thread
while one message takes long (an SMTP server has 10 minutes to answer the final dot).
So a live owner's lease never runs out, and only a dead (or cut-off) owner's rows are
taken over.

If a renewal finds fewer rows than were claimed, another sender has taken some over:
the claim is *lost*. The owner then starts no further message, and its outcomes are
recorded only for rows still carrying its token (see ``repository.mark_sent``,
``held_by``, ``release``); a stale owner can never overwrite the new owner's record.
If the database cannot be reached, the owner keeps going only while the lease it last
wrote is still running, which is exactly the time nobody else may take it over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.outreach.delivery import repository as repo
from shared.clock import Clock
from shared.db import transaction

log = logging.getLogger(__name__)


class Lease:
    """``with Lease(...) as lease:`` renews in the background; call :meth:`held` before
    starting each message."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        clock: Clock,
        *,
        token: str,
        count: int,
        until: datetime,
        seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.session_factory = session_factory
        # The process's own clock for "a third of the lease since the last renewal" (a
        # wall clock that jumps does not stop the renewals); given, it is a test's.
        self.monotonic = monotonic
        self.clock = clock
        self.token = token
        self.count = count
        self.until = until
        self.seconds = seconds
        self.lost = False
        self.renewals = 0
        self._renewed_at = self.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.token[:8]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def held(self) -> bool:
        """Renew if due; whether the claim may start another message."""
        if not self.lost and self._due():
            self.renew()
        return not self.lost and self.clock.now() < self.until

    def _due(self) -> bool:
        return self.monotonic() - self._renewed_at >= self.seconds / 3 or self.clock.now() >= self.until - timedelta(
            seconds=self.seconds / 2
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.seconds / 6, 30.0)):
            if self.lost:
                return
            if self._due():
                self.renew()

    def renew(self) -> None:
        with self._lock:
            if self.lost:
                return
            until = self.clock.now() + timedelta(seconds=self.seconds)
            try:
                with transaction(self.session_factory) as session:
                    held = repo.renew_lease(session, token=self.token, lease_until=until)
            except SQLAlchemyError as exc:
                # Keep the lease already written: nobody may take it over before it runs out.
                log.warning("lease %s: renewal failed (%s); holding until %s", self.token[:8], type(exc).__name__, self.until.isoformat())
                return
            if held < self.count:
                self.lost = True
                log.error(
                    "lease %s: %d of %d claimed messages were taken over by another sender; this sender stops sending the batch",
                    self.token[:8],
                    self.count - held,
                    self.count,
                )
                return
            self.until = until
            self.renewals += 1
            self._renewed_at = self.monotonic()
