"""Durations as a person reads them (issue 19, finding 7: "0.0 days left" for an
engagement due in an hour)."""

from __future__ import annotations

import pytest

from shared.clock import time_left

H, D = 3600, 86400


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (7 * D, "7 days"),
        (D, "1 day"),
        (D - 600, "23 hours"),
        (H, "1 hour"),
        (H - 1, "59 minutes"),
        (60, "1 minute"),
        (59, "less than a minute"),
        (0, "less than a minute"),
        (-2 * H - 5, "overdue by 2 hours"),
        (-3 * D, "overdue by 3 days"),
    ],
)
def test_time_left_uses_the_unit_that_fits(seconds: float, text: str) -> None:
    assert time_left(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2 * D, "2 days"),
        (2 * D - 1, "47 hours"),
        (D, "24 hours"),
        (H, "1 hour"),
        (-D - 5, "overdue by 24 hours"),
        (-3 * D, "overdue by 3 days"),
    ],
)
def test_time_left_counts_hours_under_two_days_when_asked(seconds: float, text: str) -> None:
    """Issue 23: the inbox shows the time left in hours under two days."""
    assert time_left(seconds, days_from=2) == text
