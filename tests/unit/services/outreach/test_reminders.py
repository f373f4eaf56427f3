"""The time-box's next reminder (``timebox.next_reminder``) on plain model objects: no
database, so make mutation runs these before the engagement worker's tests."""

from __future__ import annotations

from datetime import timedelta

from services.outreach.engagements.timebox import next_reminder
from services.outreach.models import Engagement
from shared.settings import Settings
from tests.support.helpers import T0

SETTINGS = Settings(engagement_reminder_days="7,1")
DUE = T0 + timedelta(days=30)


def _e(**kw) -> Engagement:
    return Engagement(id="e1", account_id="acme", goal="recover_usage", due_at=kw.pop("due_at", DUE), **kw)


def test_the_next_reminder_is_the_earliest_not_yet_sent():
    assert next_reminder(_e(assigned_at=T0), SETTINGS, T0) == DUE - timedelta(days=7)
    assert next_reminder(_e(assigned_at=T0, reminders_sent=[7.0]), SETTINGS, T0) == DUE - timedelta(days=1)
    assert next_reminder(_e(assigned_at=T0, reminders_sent=[7, 1]), SETTINGS, T0) is None  # stored as numbers of days
    assert next_reminder(_e(due_at=None, assigned_at=T0), SETTINGS, T0) is None  # no time-box


def test_a_reminder_whose_time_passed_before_the_assignment_is_never_sent_late():
    """Assigned three days before the due time: the 7-day reminder's time had passed
    (skipped, not sent late), the 1-day one is next. Unassigned, now counts instead."""
    assigned = DUE - timedelta(days=3)
    assert next_reminder(_e(assigned_at=assigned), SETTINGS, assigned) == DUE - timedelta(days=1)
    assert next_reminder(_e(assigned_at=None), SETTINGS, assigned) == DUE - timedelta(days=1)
    assert next_reminder(_e(assigned_at=DUE - timedelta(hours=12)), SETTINGS, DUE) is None  # both passed
    # A second of slack: a reminder due less than a second before the assignment is still sent.
    one_day = DUE - timedelta(days=1)
    assert next_reminder(_e(assigned_at=one_day + timedelta(milliseconds=999)), SETTINGS, DUE) == one_day
    assert next_reminder(_e(assigned_at=one_day + timedelta(seconds=1)), SETTINGS, DUE) is None
