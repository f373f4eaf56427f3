"""Holdout assignment (stable, near the percentage, the documented hash) and the lift
interval of the report: pure functions."""

from __future__ import annotations

from services.outreach.playbooks.holdouts import holdout_bucket, is_held_out
from services.outreach.playbooks.service import lift_interval
from tests.support.helpers import expected_held_out


def test_holdout_assignment_is_stable_and_near_the_percentage():
    n = 20_000
    held = sum(is_held_out("win-back", f"acct-{i}", 30) for i in range(n))
    assert abs(held / n - 0.30) < 0.015
    assert [holdout_bucket("win-back", f"acct-{i}") for i in range(50)] == [holdout_bucket("win-back", f"acct-{i}") for i in range(50)]
    # Another playbook shuffles accounts independently.
    same = sum(is_held_out("win-back", f"acct-{i}", 30) == is_held_out("onboarding", f"acct-{i}", 30) for i in range(n))
    assert abs(same / n - (0.3 * 0.3 + 0.7 * 0.7)) < 0.02
    assert not any(is_held_out("p", f"a{i}", 0) for i in range(1000)) and all(is_held_out("p", f"a{i}", 100) for i in range(1000))
    # The assignment is the documented one (a changed hash would reshuffle every running holdout).
    assert [is_held_out("win-back", f"acct-{i}", 30) for i in range(500)] == [
        expected_held_out("win-back", f"acct-{i}", 30) for i in range(500)
    ]


def test_a_fractional_holdout_percentage_holds_out_its_fraction():
    for percent in (0.5, 1, 2.5):
        held = {i for i in range(4000) if is_held_out("win-back", f"acct-{i}", percent)}
        assert held and held == {i for i in range(4000) if expected_held_out("win-back", f"acct-{i}", percent)}


def test_lift_interval_matches_newcombe():
    # Newcombe (1998), table II, example (a): 56/70 vs 48/80 -> 0.0524 to 0.3339.
    lo, hi = lift_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    assert lift_interval(1, 1, 0, 0) is None
