"""A one-line progress bar on stderr for long CLI commands (demo history, backtest,
rules import). On a terminal it redraws one line in place (at most ten times a
second); when stderr is not a terminal (CI, a log file, `touchline run`'s children) it
draws nothing and writes a log line at intervals instead, so logs stay clean.

Hand-written rather than a dependency: it needs a dozen lines of what tqdm does."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("touchline.progress")


class ProgressBar:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "",
        *,
        stream: TextIO | None = None,
        log_every_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every = log_every_seconds
        self.clock = clock
        self.started = clock()
        self.done, self.message = 0, ""
        self._last_draw = float("-inf")
        self._last_log = self.started
        self._closed = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def update(self, done: int, total: int | None = None, message: str = "") -> None:
        self.done = done
        self.total = total if total is not None else self.total
        self.message = message or self.message
        now = self.clock()
        if self.tty:
            if now - self._last_draw >= 0.1 or self._complete():
                self._last_draw = now
                self._draw(now)
        elif now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("%s", self.line(now))

    def advance(self, n: int = 1, message: str = "") -> None:
        self.update(self.done + n, message=message)

    def close(self, message: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.message = message or self.message
        now = self.clock()
        if self.tty:
            self._draw(now)
            self.stream.write("\n")
            self.stream.flush()
        else:
            log.info("%s", self.line(now))

    def line(self, now: float | None = None, width: int = 30) -> str:
        """The text of the bar: ``label [#####-----] 50% 5/10 days 2s msg`` (no bar
        without a total: ``label 1,234 events (617/s) 2s``)."""
        elapsed = max(0.0, (now if now is not None else self.clock()) - self.started)
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * width)
            text = f"{self.label} [{'#' * filled}{'-' * (width - filled)}] {frac:4.0%} {self.done:,}/{self.total:,}{unit} {elapsed:.0f}s"
        else:
            rate = f" ({self.done / elapsed:,.0f}/s)" if elapsed >= 1 else ""
            text = f"{self.label} {self.done:,}{unit}{rate} {elapsed:.0f}s"
        return f"{text} {self.message}".rstrip()

    def _complete(self) -> bool:
        return self.total is not None and self.total > 0 and self.done >= self.total

    def _draw(self, now: float) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        text = self.line(now)[: max(10, columns - 1)]
        self.stream.write("\r" + text.ljust(columns - 1))
        self.stream.flush()
