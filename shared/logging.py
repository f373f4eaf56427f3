"""Readable one-line logs: time, level, component, message with key=value pairs.

Repeated warnings and errors are logged once per interval with a count
(:class:`RepeatedRecords`): a flood of identical failures (asyncio's "Too many open
files" on every accept, "database is locked" on every request) cannot fill the disk or
drown the one line that matters."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable


class RepeatedRecords(logging.Filter):
    """A warning or error identical to one logged less than ``interval`` seconds ago
    (same logger, level, message and exception type) is counted instead of logged; the
    first one after the interval is logged with the count of those held back. Records
    below WARNING always pass."""

    MAX_KINDS = 1000  # distinct messages remembered at once (oldest forgotten first)

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval, self.clock = interval, clock
        self._seen: dict[tuple[str, int, str, str | None], list[float]] = {}  # kind -> [logged at, held back since]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.interval <= 0:
            return True
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        kind = (record.name, record.levelno, record.getMessage(), exc)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            held = int(seen[1]) if seen is not None else 0
            self._seen.pop(kind, None)
            self._seen[kind] = [now, 0]
            while len(self._seen) > self.MAX_KINDS:
                del self._seen[next(iter(self._seen))]
        if held:
            record.msg, record.args = f"{record.getMessage()} [and {held} more like this in the last {self.interval:g} s]", None
        return True


def configure_logging(level: str = "INFO", component: str = "touchline", repeat_seconds: float = 60.0) -> None:
    fmt = f"%(asctime)s %(levelname)-5s [{component}] %(name)s: %(message)s"
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    handler.addFilter(RepeatedRecords(repeat_seconds))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connect and rebalance step).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("aiosmtpd").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
