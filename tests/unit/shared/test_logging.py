"""Repeated identical warnings and errors are logged once per interval with a count:
asyncio logged ~340,000 "Too many open files" tracebacks in a minute (issue 18,
finding 3); now a flood of them is one line per interval."""

from __future__ import annotations

import logging

from shared.logging import RepeatedRecords


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, level: int = logging.ERROR, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord(name, level, __file__, 1, msg, None, exc_info)


def test_a_flood_of_one_error_is_one_line_per_interval_with_the_count():
    clock = Clock()
    repeated = RepeatedRecords(60, clock)
    emfile = OSError(24, "Too many open files")
    passed = [repeated.filter(_record("asyncio", "socket.accept() out of system resource", exc=emfile)) for _ in range(10_000)]
    assert passed.count(True) == 1
    clock.now = 61
    record = _record("asyncio", "socket.accept() out of system resource", exc=emfile)
    assert repeated.filter(record)
    assert record.getMessage() == "socket.accept() out of system resource [and 9999 more like this in the last 60 s]"


def test_different_messages_info_records_and_a_zero_interval_all_pass():
    repeated = RepeatedRecords(60, Clock())
    assert repeated.filter(_record("touchline.api", "database locked: one"))
    assert repeated.filter(_record("touchline.api", "database locked: two"))
    assert repeated.filter(_record("touchline.api", "database locked: one", level=logging.WARNING))  # another level
    assert repeated.filter(_record("touchline.api", "database locked: one", exc=ValueError()))  # another exception
    assert all(repeated.filter(_record("touchline", "progress", level=logging.INFO)) for _ in range(5))
    off = RepeatedRecords(0, Clock())
    assert all(off.filter(_record("asyncio", "same")) for _ in range(5))
