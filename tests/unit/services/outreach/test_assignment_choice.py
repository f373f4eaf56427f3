"""Choosing a CSM for an engagement (``assignment.choose``), on plain model objects: no
database, so make mutation runs these before the engagement tests that reach the same
function through the worker (docs/testing.md)."""

from __future__ import annotations

from datetime import timedelta

from services.outreach.engagements.assignment import choose
from services.outreach.engagements.availability import available, is_away
from services.outreach.models import Csm, Engagement
from tests.support.helpers import T0


def _csm(cid: str, capacity: int = 5, seq: int = 0, **kw) -> Csm:
    return Csm(id=cid, capacity=capacity, assign_seq=seq, segments=kw.pop("segments", []), skills=kw.pop("skills", []), **kw)


def _engagement(**kw) -> Engagement:
    return Engagement(id="e1", account_id="acme", goal=kw.pop("goal", "recover_usage"), segment=kw.pop("segment", "smb"), **kw)


def test_the_account_s_last_csm_keeps_it_while_they_have_room_even_when_others_are_less_loaded():
    ann, ben = _csm("ann", seq=1), _csm("ben", seq=2)
    loads = {"ann": 0, "ben": 3}  # ann is the least loaded and the longest since assigned
    assert choose(_engagement(), [ann, ben], loads, sticky_csm="ben") is ben
    assert choose(_engagement(), [ann, ben], loads, sticky_csm=None) is ann
    assert choose(_engagement(), [ann, ben], loads, sticky_csm="cat") is ann  # the last CSM is gone from the pool
    assert choose(_engagement(), [ann, ben], {"ann": 0, "ben": 5}, sticky_csm="ben") is ann  # ben is full


def test_the_least_loaded_wins_then_the_longest_since_assigned_then_the_id():
    ann, ben, cat = _csm("ann", seq=3), _csm("ben", seq=1), _csm("cat", seq=1)
    assert choose(_engagement(), [ann, ben, cat], {"ann": 0, "ben": 1, "cat": 1}, None) is ann
    assert choose(_engagement(), [ann, ben, cat], {"ann": 1, "ben": 1, "cat": 1}, None) is ben
    assert choose(_engagement(), [cat, ben], {}, None) is ben  # no load recorded counts as none
    fresh = _csm("fresh", seq=9)  # never assigned anything (no load recorded), assigned most recently
    assert choose(_engagement(), [_csm("busy", seq=0), fresh], {"busy": 1}, None) is fresh
    assert choose(_engagement(), [ann, ben, cat], {"ann": 5, "ben": 5, "cat": 5}, None) is None  # all full


def test_only_csms_who_cover_the_engagement_are_candidates():
    seg, skill = _csm("seg", segments=["enterprise"]), _csm("skill", skills=["discover_expansion"])
    assert choose(_engagement(segment="smb"), [seg, skill], {}, None) is None
    assert choose(_engagement(segment="enterprise"), [seg, skill], {}, None) is seg
    assert choose(_engagement(goal="discover_expansion", segment="enterprise"), [skill], {}, None) is skill
    assert choose(_engagement(segment="smb"), [seg], {}, None, named=["enterprise"]) is seg  # in a named segment it covers
    # A skill named by the engagement (its step's) is matched in place of the goal.
    renewals = _csm("renewals", skills=["renewals"])
    assert choose(_engagement(skill="renewals"), [renewals], {}, None) is renewals
    assert choose(_engagement(skill="renewals", goal="discover_expansion"), [skill], {}, None) is None


def test_an_away_window_starts_at_its_start_and_ends_at_its_end():
    start, end = T0, T0 + timedelta(days=2)
    csm = _csm("ann", away_from=start, away_until=end, active=True)
    assert [is_away(csm, t) for t in (start - timedelta(seconds=1), start, end - timedelta(seconds=1), end)] == [False, True, True, False]
    assert available(csm, end) and not available(csm, start)
    assert is_away(_csm("open", away_from=start, away_until=None), end + timedelta(days=99))  # away until further notice
    assert not is_away(_csm("back", away_from=None, away_until=end), end)
    assert not available(_csm("gone", active=False), start)
