"""The automatic measurement of an engagement (``closing.measure_outcome``), read whole:
every figure it records (window, baseline, threshold, value, verdict, seats and ARR)
against the value worked out by hand for a small account, on both databases. The
engagement tests read a few of these figures through the API; these read all of them,
at the window's edges (a second past whole days, the 28-day cap, an hour) and for
each way an expansion can be decided, so a one-line slip in any of them fails here
first (make mutation runs this module before the slower engagement tests)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.ingest.models import Account
from services.outreach.engagements import closing
from services.outreach.models import Engagement
from shared.db import transaction
from tests.support.engagements import open_engagement
from tests.support.helpers import T0
from tests.support.outreach import add_account, add_activity, days, signal

FIRED = T0 - timedelta(hours=12)  # the signal fired half a day before the engagement opened


def _world(session_factory, settings, clock, account_id: str, goal: str = "recover_usage", seats=None, arr=None) -> str:
    """Four users active on each of the 28 days before the signal (baseline 4)."""
    add_account(session_factory, account_id)
    with transaction(session_factory) as s:
        a = s.get(Account, account_id)
        a.seats, a.arr = seats, arr
    for d in range(1, 29):
        add_activity(session_factory, account_id, ["ada", "bob", "cy", "dee"], (FIRED - days(d)).date())
    return open_engagement(session_factory, settings, clock, account_id, goal=goal, signal=signal(account_id, fired_at=FIRED))


def _measure(session_factory, settings, engagement_id: str, now) -> dict:
    with session_factory() as s:
        e = s.get(Engagement, engagement_id)
        return closing.measure_outcome(s, e, now, settings)


def _set(session_factory, account_id: str, **values) -> None:
    with transaction(session_factory) as s:
        a = s.get(Account, account_id)
        for k, v in values.items():
            setattr(a, k, v)


def test_the_measurement_records_each_figure_against_the_hand_computed_value(session_factory, settings, clock):
    """Ratio 0.6 of a baseline of 4: a threshold of ceil(2.4) = 3 (not 2.4 rounded down,
    not 4, not 1). Three days and one second after the signal: a 4-day window (whole
    days rounded up). Three distinct users active since the signal reach the threshold
    exactly (>=, not >); two do not."""
    settings = settings.model_copy(update={"engagement_recovery_ratio": 0.6})
    eid = _world(session_factory, settings, clock, "acme")
    now = FIRED + days(3) + timedelta(seconds=1)
    for d, users in ((0, ["ada"]), (1, ["bob", "ada"]), (2, ["cy"])):
        add_activity(session_factory, "acme", users, (now - days(d)).date())
    m = _measure(session_factory, settings, eid, now)
    explanation = m.pop("explanation")
    assert m == {
        "metric": {"metric": "active_users", "window": "4d"},
        "window_days": 4,
        "since": FIRED.isoformat(),
        "baseline": 4,
        "baseline_metric": {"metric": "active_users", "window": "28d"},
        "value": 3,
        "threshold": 3,
        "recovered": True,
        "measured_at": now.isoformat(),
        "success": True,
        "verdict": "recovered",
    }
    assert explanation["threshold"] == 3 and explanation["value"] == 3
    # One of the three users was active before the signal only: two since, below 3.
    other = _world(session_factory, settings, clock, "beta")
    for d, users in ((0, ["ada"]), (1, ["bob"])):
        add_activity(session_factory, "beta", users, (now - days(d)).date())
    m = _measure(session_factory, settings, other, now)
    assert (m["value"], m["threshold"], m["recovered"], m["success"], m["verdict"]) == (2, 3, False, False, "no_response")
    assert "expanded" not in m and "seats" not in m


def test_the_window_is_whole_days_since_the_signal_at_least_one_and_at_most_28(session_factory, settings, clock):
    eid = _world(session_factory, settings, clock, "acme")
    cases = [
        (timedelta(hours=1), 1),  # under a day: one day, not zero
        (days(2), 2),  # whole days exactly: not one more
        (days(2) + timedelta(seconds=1), 3),
        (days(27) + timedelta(hours=1), 28),
        (days(40), 28),  # capped at the baseline's 28
    ]
    for since, window in cases:
        m = _measure(session_factory, settings, eid, FIRED + since)
        assert (m["window_days"], m["metric"]["window"]) == (window, f"{window}d"), since
        # Ratio 1 of 4: the threshold is the baseline itself; nobody active since: 0 users.
        assert (m["threshold"], m["value"], m["recovered"], m["verdict"]) == (4, 0, False, "no_response"), since


def test_an_engagement_without_a_baseline_measures_from_its_opening_against_one_user(session_factory, settings, clock):
    """An engagement opened without a signal has no activity baseline (value 0): it is
    measured from its opening, against a threshold of one user (never zero: nobody
    active would otherwise count as recovered)."""
    add_account(session_factory, "solo")
    eid = open_engagement(session_factory, settings, clock, "solo")
    with transaction(session_factory) as s:
        e = s.get(Engagement, eid)
        e.measured = None  # an engagement opened before baselines were recorded
    now = clock.now() + days(1) + timedelta(seconds=1)
    m = _measure(session_factory, settings, eid, now)
    assert (m["since"], m["window_days"], m["baseline"], m["threshold"], m["value"], m["recovered"]) == (
        clock.now().isoformat(),
        2,
        0.0,
        1.0,
        0,
        False,
    )
    add_activity(session_factory, "solo", ["ada"], now.date())
    m = _measure(session_factory, settings, eid, now)
    assert (m["value"], m["recovered"], m["verdict"]) == (1, True, "recovered")


@pytest.mark.parametrize(
    "before, after, active_since, verdict",
    [
        ((10, 1000.0), (11, 1000.0), 0, "expanded"),  # more seats
        ((10, 1000.0), (10, 1000.5), 0, "expanded"),  # more ARR
        ((10, 1000.0), (9, 2000.0), 0, "expanded"),  # fewer seats, more ARR: either grows
        ((10, 1000.0), (11, 500.0), 0, "expanded"),  # more seats, less ARR
        ((10, 1000.0), (10, 1000.0), 0, "no_response"),  # nothing grew, nobody back
        ((10, 1000.0), (10, 1000.0), 4, "recovered"),  # nothing grew, usage held
        ((10, 1000.0), (9, 999.0), 4, "recovered"),
        ((None, None), (None, None), 0, "no_response"),  # unknown stays unknown: not growth
        ((None, None), (1, None), 0, "expanded"),  # from unknown (0) to one seat
        ((None, None), (None, 1.0), 0, "expanded"),
        ((1, 1.0), (None, None), 0, "no_response"),
    ],
)
def test_an_expansion_is_seats_or_arr_grown_else_usage_held(session_factory, settings, clock, before, after, active_since, verdict):
    eid = _world(session_factory, settings, clock, "grow", goal="discover_expansion", seats=before[0], arr=before[1])
    _set(session_factory, "grow", seats=after[0], arr=after[1])
    now = FIRED + days(5)
    if active_since:
        add_activity(session_factory, "grow", ["ada", "bob", "cy", "dee"][:active_since], (now - days(1)).date())
    m = _measure(session_factory, settings, eid, now)
    expanded = verdict == "expanded"
    assert (m["seats"], m["arr"], m["expanded"], m["success"], m["verdict"]) == (after[0], after[1], expanded, expanded, verdict)
    assert m["recovered"] is (active_since >= 4) and m["value"] == active_since


@pytest.mark.parametrize(
    "outcome, source, success, agrees",
    [
        ("recovered", "csm", True, True),
        ("expanded", "csm", False, False),
        ("churned", "csm", False, True),
        ("no_response", "csm", True, False),
        ("other", "csm", True, None),  # says nothing either way
        (None, "csm", True, None),
        # The measurement's own verdict (an automatic close) is never compared with itself.
        ("recovered", "automatic", True, None),
        ("no_response", "automatic", False, None),
    ],
)
def test_the_csm_agrees_only_when_a_csm_said_something_that_can_be_compared(outcome, source, success, agrees):
    assert closing.agreement(outcome, source, success) is agrees
