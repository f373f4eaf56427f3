"""The progress bar long CLI commands show: one line redrawn in place on a terminal, log
lines at intervals otherwise (on a clock the test moves)."""

from __future__ import annotations

import io
import logging

from shared.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_on_a_terminal_the_bar_redraws_one_line():
    out, ticks = Terminal(), Ticks()
    bar = ProgressBar("backtest r", total=10, unit="days", stream=out, clock=ticks)
    for i in range(1, 11):
        ticks.t += 0.2
        bar.update(i, message=f"day {i}")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 11 and text.endswith("\n") and text.count("\n") == 1  # one line, redrawn
    last = text.rsplit("\r", 1)[1]
    assert "[" + "#" * 30 + "] 100% 10/10 days 2s day 10" in last
    assert "[" + "#" * 15 + "-" * 15 + "]  50% 5/10" in text


def test_off_a_terminal_no_bar_only_log_lines_at_intervals(caplog):
    out, ticks = io.StringIO(), Ticks()
    with caplog.at_level(logging.INFO, logger="touchline.progress"):
        with ProgressBar("demo: history sent", unit="events", stream=out, clock=ticks, log_every_seconds=5) as bar:
            for i in range(1, 97):
                ticks.t += 0.125  # 12 s in all: lines at 5 s and 10 s, then the final one
                bar.update(i * 1000)
    assert out.getvalue() == ""
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "demo: history sent 40,000 events (8,000/s) 5s",
        "demo: history sent 80,000 events (8,000/s) 10s",
        "demo: history sent 96,000 events (8,000/s) 12s",
    ]
