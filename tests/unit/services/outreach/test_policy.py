"""Quiet hours at the minute they start and end, across a DST change, when disabled and for
an unknown time zone: the contact policy's clock arithmetic, pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from services.outreach.policy.service import quiet_until
from shared.settings import Settings

UTC = UTC
NY = ZoneInfo("America/New_York")


def local(y, mo, d, h, mi=0, tz=NY) -> datetime:
    """A local wall-clock time, as the UTC instant the clock would give."""
    return datetime(y, mo, d, h, mi, tzinfo=tz).astimezone(UTC)


@pytest.fixture
def quiet_9pm_to_8am() -> Settings:
    return Settings(env="test", quiet_hours_start=21, quiet_hours_end=8, default_timezone="UTC")


@pytest.mark.parametrize(
    "at, until",
    [
        (local(2026, 3, 3, 7, 59), local(2026, 3, 3, 8)),  # the last quiet minute: until 08:00 today
        (local(2026, 3, 3, 8, 0), None),  # 08:00 sharp: quiet hours are over
        (local(2026, 3, 3, 20, 59), None),  # the last minute before they start
        (local(2026, 3, 3, 21, 0), local(2026, 3, 4, 8)),  # 21:00 sharp: quiet until 08:00 tomorrow
        (local(2026, 3, 3, 23, 30), local(2026, 3, 4, 8)),
        (local(2026, 3, 4, 0, 0), local(2026, 3, 4, 8)),  # after midnight: the same morning
    ],
)
def test_quiet_hours_edges_in_the_contacts_zone(quiet_9pm_to_8am, at, until):
    assert quiet_until("America/New_York", at, quiet_9pm_to_8am) == until


def test_quiet_hours_across_a_dst_change(quiet_9pm_to_8am):
    # New York springs forward on 2026-03-08 (02:00 EST -> 03:00 EDT): 21:00 EST is 02:00 UTC,
    # 08:00 EDT is 12:00 UTC, a 10-hour night; falling back on 2026-11-01 makes it 12 hours.
    spring = quiet_until("America/New_York", datetime(2026, 3, 8, 2, 0, tzinfo=UTC), quiet_9pm_to_8am)
    assert spring == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    fall = quiet_until("America/New_York", datetime(2026, 11, 1, 1, 0, tzinfo=UTC), quiet_9pm_to_8am)
    assert fall == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # In the repeated hour (01:30 happens twice) the answer is the same 08:00 EST.
    assert quiet_until("America/New_York", datetime(2026, 11, 1, 6, 30, tzinfo=UTC), quiet_9pm_to_8am) == fall


def test_quiet_hours_disabled_when_start_equals_end():
    never = Settings(env="test", quiet_hours_start=8, quiet_hours_end=8)
    for hour in range(24):
        assert quiet_until("America/New_York", local(2026, 3, 3, hour), never) is None


def test_quiet_hours_inside_one_day_when_start_is_before_end():
    lunch = Settings(env="test", quiet_hours_start=12, quiet_hours_end=14, default_timezone="UTC")
    assert quiet_until("UTC", datetime(2026, 3, 3, 11, 59, tzinfo=UTC), lunch) is None
    assert quiet_until("UTC", datetime(2026, 3, 3, 12, 0, tzinfo=UTC), lunch) == datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
    assert quiet_until("UTC", datetime(2026, 3, 3, 13, 59, tzinfo=UTC), lunch) == datetime(2026, 3, 3, 14, 0, tzinfo=UTC)
    assert quiet_until("UTC", datetime(2026, 3, 3, 14, 0, tzinfo=UTC), lunch) is None


def test_an_unknown_time_zone_falls_back_to_the_default_then_utc():
    paris = Settings(env="test", quiet_hours_start=21, quiet_hours_end=8, default_timezone="Europe/Paris")
    # 20:30 UTC is 21:30 in Paris (quiet) but not yet 21:00 in UTC.
    at = datetime(2026, 3, 3, 20, 30, tzinfo=UTC)
    assert quiet_until("Nowhere/Land", at, paris) == datetime(2026, 3, 4, 7, 0, tzinfo=UTC)
    assert quiet_until(None, at, paris) == datetime(2026, 3, 4, 7, 0, tzinfo=UTC)
    broken_default = paris.model_copy(update={"default_timezone": "Also/Nowhere"})
    assert quiet_until("Nowhere/Land", at, broken_default) is None  # UTC: 20:30 is not quiet
    assert quiet_until("Nowhere/Land", datetime(2026, 3, 3, 21, 0, tzinfo=UTC), broken_default) == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
