"""The contact policy's edges: quiet hours at the minute they start and end, across a
DST change, when disabled and for an unknown time zone (pure functions, no database);
and the frequency caps just inside and just outside their window, global and per
playbook, on both databases."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.outreach.models import Message
from services.outreach.policy.service import Cap, Caps, check_account, check_contact, quiet_until
from shared.db import transaction
from shared.settings import Settings
from tests.conftest import T0

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


def local(y, mo, d, h, mi=0, tz=NY) -> datetime:
    """A local wall-clock time, as the UTC instant the clock would give."""
    return datetime(y, mo, d, h, mi, tzinfo=tz).astimezone(UTC)


@pytest.fixture
def quiet_9pm_to_8am() -> Settings:
    return Settings(env="test", quiet_hours_start=21, quiet_hours_end=8, default_timezone="UTC")


@pytest.mark.parametrize("at, until", [
    (local(2026, 3, 3, 7, 59), local(2026, 3, 3, 8)),   # the last quiet minute: until 08:00 today
    (local(2026, 3, 3, 8, 0), None),                     # 08:00 sharp: quiet hours are over
    (local(2026, 3, 3, 20, 59), None),                   # the last minute before they start
    (local(2026, 3, 3, 21, 0), local(2026, 3, 4, 8)),    # 21:00 sharp: quiet until 08:00 tomorrow
    (local(2026, 3, 3, 23, 30), local(2026, 3, 4, 8)),
    (local(2026, 3, 4, 0, 0), local(2026, 3, 4, 8)),     # after midnight: the same morning
])
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


# ---- frequency caps: 1 message per contact in 3 days (the default) ---------------------

def _sent(session_factory, *, ago: timedelta, playbook_id: str = "pb-a", user_id: str = "ada", state: str = "sent",
          channel: str = "email") -> None:
    at = T0 - ago
    with transaction(session_factory) as s:
        s.add(Message(id=str(uuid.uuid4()), playbook_id=playbook_id, step_id="s1", touch_key=str(uuid.uuid4()),
                      account_id="acme", user_id=user_id, channel=channel, recipient=f"{user_id}@acme.test",
                      state=state, created_at=at, updated_at=at))


def _contact(session_factory, settings, playbook_id="pb-a", caps=Caps(), user_id="ada"):
    with session_factory() as s:
        return check_contact(s, account_id="acme", user_id=user_id, playbook_id=playbook_id, playbook_caps=caps,
                             settings=settings, now=T0)


def _account(session_factory, settings, playbook_id="pb-a", caps=Caps()):
    with session_factory() as s:
        return check_account(s, account_id="acme", playbook_id=playbook_id, playbook_caps=caps, settings=settings, now=T0)


@pytest.mark.integration
@pytest.mark.parametrize("days_ago, reason", [(2.9, "contact_cap"), (3.1, None)])
def test_global_contact_cap_window(session_factory, settings, days_ago, reason):
    settings = settings.model_copy(update={"contact_cap_messages": 1, "contact_cap_days": 3})
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="another-playbook")
    assert _contact(session_factory, settings) == reason
    assert _contact(session_factory, settings, user_id="bob") is None  # per contact, not per account


@pytest.mark.integration
@pytest.mark.parametrize("days_ago, reason", [(2.9, "playbook_contact_cap"), (3.1, None)])
def test_per_playbook_contact_cap_window(session_factory, settings, days_ago, reason):
    settings = settings.model_copy(update={"contact_cap_messages": 0})  # the playbook's own cap alone
    caps = Caps(contact=Cap(limit=1, days=3))
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="pb-a")
    assert _contact(session_factory, settings, "pb-a", caps) == reason
    assert _contact(session_factory, settings, "pb-b", caps) is None  # another playbook's messages do not count


@pytest.mark.integration
def test_contact_cap_counts_only_messages_that_went_or_will_go(session_factory, settings):
    settings = settings.model_copy(update={"contact_cap_messages": 2, "contact_cap_days": 3})
    for state in ("skipped", "failed"):
        _sent(session_factory, ago=timedelta(days=1), state=state)
    _sent(session_factory, ago=timedelta(days=1), channel="webhook")  # to the CS team, not the contact
    _sent(session_factory, ago=timedelta(days=1), state="queued")
    assert _contact(session_factory, settings) is None  # one counted message of two allowed
    _sent(session_factory, ago=timedelta(days=1), channel="inapp")
    assert _contact(session_factory, settings) == "contact_cap"


@pytest.mark.integration
@pytest.mark.parametrize("days_ago, global_reason, playbook_reason", [(6.9, "account_cap", "playbook_account_cap"),
                                                                      (7.1, None, None)])
def test_account_caps_window_global_and_per_playbook(session_factory, settings, days_ago, global_reason, playbook_reason):
    only_global = settings.model_copy(update={"account_cap_touches": 1, "account_cap_days": 7})
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="pb-a")
    assert _account(session_factory, only_global, "pb-b") == global_reason
    only_playbook = settings.model_copy(update={"account_cap_touches": 0})
    caps = Caps(account=Cap(limit=1, days=7))
    assert _account(session_factory, only_playbook, "pb-a", caps) == playbook_reason
    assert _account(session_factory, only_playbook, "pb-b", caps) is None
