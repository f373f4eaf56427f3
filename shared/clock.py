"""The one injectable clock. Windows are defined on event time and evaluated at
clock time; tests, the demo and backtests drive a :class:`SimulatedClock` so nothing
ever sleeps for real to test a 14-day silence."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that only moves when told to. Thread-safe; always timezone-aware UTC."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("SimulatedClock.set needs a timezone-aware time")
        with self._lock:
            self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def utc(dt: datetime) -> datetime:
    """Normalise an aware datetime to UTC; naive values from SQLite are UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def time_left(seconds: float, days_from: float = 1) -> str:
    """A time span as a person reads it, in the unit that fits: "7 days", "1 day",
    "5 hours", "40 minutes"; past the due time, "overdue by 3 hours". Whole units,
    rounded down (an engagement due in 23 h 50 min is "23 hours", never "1.0 days" or
    "0.0 days"). ``days_from``: the span from which it counts in days; under it, hours
    (the console's inbox passes 2: "47 hours", a CSM plans a day in hours)."""
    ahead = seconds >= 0
    left = abs(seconds)
    for unit, size, start in (("day", 86400, days_from * 86400), ("hour", 3600, 3600), ("minute", 60, 60)):
        if left >= start:
            n = int(left // size)
            text = f"{n} {unit}{'' if n == 1 else 's'}"
            break
    else:
        text = "less than a minute"
    return text if ahead else f"overdue by {text}"
