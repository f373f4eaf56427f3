"""Choosing a CSM for an engagement (``assignment.choose``), on plain model objects: no
database, so make mutation runs these before the engagement tests that reach the same
function through the worker (docs/testing.md)."""

from __future__ import annotations

from services.outreach.engagements.assignment import choose
from services.outreach.models import Csm, Engagement


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
