"""The demo stream: deterministic, valid, and its cohorts behave as documented
(the rules' starter library relies on them)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from services.demo import build_accounts, cohort_of, generate
from shared.events import Event, validate_event_obj

END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_demo_is_deterministic_and_every_event_is_valid():
    a = list(generate(accounts=12, days=20, seed=3, end=END))
    b = list(generate(accounts=12, days=20, seed=3, end=END))
    assert a == b
    assert len({e["event_id"] for e in a}) == len(a)
    for ev in a:
        assert isinstance(validate_event_obj(ev, END, 64 * 1024, timedelta(days=1)), Event), ev
    assert {e.get("type", "track") for e in a} == {"track", "identify", "group", "contract"}  # contract: the CRM's outcomes (4d46dd8)
    assert all(e["timestamp"] <= END.isoformat() for e in a)


def test_cohorts_shape_usage():
    days = 60
    accounts = {a.id: a for a in build_accounts(40, 7, END.date(), days)}
    last_login: dict[str, datetime] = {}
    users_by_week: dict[tuple[str, int], set] = defaultdict(set)
    for ev in generate(accounts=40, days=days, seed=7, end=END, with_traits=False):
        ts = datetime.fromisoformat(ev["timestamp"])
        if ev["name"] == "login":
            last_login[ev["account_id"]] = max(last_login.get(ev["account_id"], ts), ts)
        users_by_week[(ev["account_id"], (END - ts).days // 7)].add(ev["user_id"])
    by_cohort = defaultdict(list)
    for i, acct in enumerate(accounts.values()):
        assert acct.cohort == cohort_of(i)
        by_cohort[acct.cohort].append(acct.id)
    assert set(by_cohort) == {"healthy", "churning", "expanding", "onboarding"}
    for a in by_cohort["churning"]:  # silent for the last 14+ days
        assert END - last_login[a] > timedelta(days=14)
    for a in by_cohort["healthy"]:
        assert END - last_login[a] < timedelta(days=2)
    for a in by_cohort["expanding"]:  # last week's active users well above a month earlier
        assert len(users_by_week[(a, 0)]) >= 1.5 * len(users_by_week[(a, 5)])
        assert len(users_by_week[(a, 0)]) >= 0.9 * accounts[a].seats


def test_live_rounds_keep_churning_accounts_away_unless_they_come_back():
    import random

    from services.demo import live_round

    accts = build_accounts(40, 7, END.date(), 60)
    churning = [a.id for a in accts if a.cohort == "churning"]
    quiet = live_round(accts, set(), END, random.Random(1))
    assert quiet and not {e["account_id"] for e in quiet} & set(churning)
    back = live_round(accts, {churning[0]}, END, random.Random(1))
    assert {e["account_id"] for e in back} & set(churning) == {churning[0]}
    assert sum(1 for e in back if e["account_id"] == churning[0] and e["name"] == "login") >= 1
    for ev in back:
        assert isinstance(validate_event_obj(ev, END, 64 * 1024, timedelta(days=1)), Event)


def test_churning_accounts_warn_before_their_usage_falls_and_outcomes_fall_inside_validations_horizon():
    """A churning account's early signs come before its users leave: its champion goes quiet,
    it opens P0 tickets and its buyer answers the NPS survey as a detractor, while the other
    accounts answer as promoters or passives and open no P0 ticket. Every contract outcome is
    effective 45 to 90 days ahead, so validation at its default 90-day horizon scores each
    on a day of the history with two weeks of usage before it."""
    from services.demo import CHAMPION_GONE_DAYS, USERS_LEAVE_DAYS, churns_at_renewal

    days = 60
    accounts = {a.id: a for a in build_accounts(40, 7, END.date(), days)}
    p0: dict[str, list[int]] = defaultdict(list)
    nps: dict[str, list[int]] = defaultdict(list)
    champion_last: dict[str, int] = {}
    outcomes = {}
    for ev in generate(accounts=40, days=days, seed=7, end=END):
        if ev.get("type") == "contract":
            outcomes[ev["account_id"]] = ev["properties"]
            continue
        if ev.get("type", "track") != "track":
            continue
        left = (END.date() - datetime.fromisoformat(ev["timestamp"]).date()).days + 1  # days before the end, as the demo counts
        if ev["name"] == "ticket_opened" and ev["properties"]["priority"] == "P0":
            p0[ev["account_id"]].append(left)
        if ev["name"] == "survey_answered" and ev["properties"]["scale"] == "nps":
            nps[ev["account_id"]].append(ev["properties"]["score"])
        if ev["user_id"] == "u000":
            champion_last[ev["account_id"]] = min(champion_last.get(ev["account_id"], days + 1), left)
    for a in accounts.values():
        if a.cohort == "churning":
            assert champion_last[a.id] > CHAMPION_GONE_DAYS >= USERS_LEAVE_DAYS
            assert len(p0[a.id]) == 3 and min(p0[a.id]) > 16 and [s < 7 for s in nps[a.id]] == [True]
        else:
            assert not p0[a.id] and all(s >= 7 for s in nps[a.id])
            if a.cohort in ("healthy", "expanding"):
                assert len(nps[a.id]) == 1
    kinds = {a: o["kind"] for a, o in outcomes.items()}
    assert {a for a, k in kinds.items() if k == "churned"} == {a.id for i, a in enumerate(accounts.values()) if churns_at_renewal(i)}
    assert {a for a, k in kinds.items() if k == "expanded"} == {a.id for a in accounts.values() if a.cohort == "expanding"}
    assert {accounts[a].cohort for a, k in kinds.items() if k == "renewed"} == {"healthy"}
    for a, o in outcomes.items():
        assert 45 <= (datetime.fromisoformat(o["effective_date"]).date() - END.date()).days <= 90, (a, o)


def test_the_tours_escalated_account_stays_away_under_live():
    """The README's tour follows the first of ``escalated_unless_they_come_back`` ($ACCT)
    to a pooled CSM while ``--live`` streams on. An account that comes back once the
    win-back reaches it converts within a minute and is never escalated (review: $ACCT
    came back and the tour's CSM steps found nothing): those that stay away by their draw
    come first, and the live stream never brings the tour's account back."""
    from services.demo import cohorts, comes_back, coming_back
    from services.outreach.interface import starter_playbooks

    found = cohorts(100, 7, 60, starter_playbooks()["win-back"])
    escalated = found["escalated_unless_they_come_back"]
    assert any(comes_back(a, reached=True) for a in escalated)  # the case exists in this run
    stay = [a for a in escalated if not comes_back(a, reached=True)]
    assert escalated[: len(stay)] == stay  # all who stay away before any who come back
    returning = next(a for a in escalated if comes_back(a, reached=True))
    status = {a: "reached" for a in escalated}
    assert returning in coming_back(status, set(escalated), {}, set())
    assert returning not in coming_back(status, set(escalated), {}, {returning})  # the tour's account stays away
    assert returning not in coming_back(status, set(escalated), {returning: "reached"}, set())  # back once
    assert not coming_back({returning: "pending"}, set(escalated), {}, set())


@pytest.mark.parametrize("hour", range(24))
def test_at_every_hour_the_tour_has_awake_champions_for_its_escalation_and_its_click(hour):
    """The tour's $ACCT must be escalated minutes after its signal and $A1's email must be
    in the sink to be clicked, so both champions must be awake when the demo runs, and
    they must differ; $A2 needs another use case (its email may wait for its morning:
    the tour lists it queued). With the champions' zones drawn, five of the eleven
    reached accounts came from two zones and only one was awake from 19:00 to 21:00 UTC:
    the README tour failed there (and, after the review's reorder, from 08:00 to 16:00)."""
    from services.demo import _awake, build_accounts, cohorts
    from services.outreach.interface import starter_playbooks
    from shared.settings import Settings

    settings = Settings(env="test")
    now = datetime(2026, 12, 7, hour, 30, tzinfo=UTC)
    found = cohorts(100, 7, 60, starter_playbooks()["win-back"], settings, now)
    accts = {a.id: a for a in build_accounts(100, 7, now.date(), 60)}
    acct = found["escalated_unless_they_come_back"][0]
    a1, a2 = found["resource_scene"]
    assert _awake(accts[acct], settings, now) and _awake(accts[a1], settings, now), (acct, a1)
    assert a1 != acct and found["use_cases"][a1] != found["use_cases"][a2]
    assert a1 not in found["win_back_message_holdout"] and a2 not in found["win_back_message_holdout"]


def test_running_the_demo_again_later_the_same_day_adds_only_what_happened_since():
    """README: "Its history's event ids are deterministic, so running it twice adds
    nothing." A later run's history ends later the same day: it holds every event of the
    earlier run, identical, and adds only events after the earlier run's end. (Review: the
    events the earlier run cut at its end changed the random stream after them, so a
    second run 17 minutes later stored 641 events of the same hours under ids the first
    had not used: today's usage counted twice.)"""
    first_end = END.replace(hour=13, minute=27)
    later_end = END.replace(hour=13, minute=44)
    first = {e["event_id"]: e for e in generate(accounts=40, days=10, seed=7, end=first_end)}
    later = {e["event_id"]: e for e in generate(accounts=40, days=10, seed=7, end=later_end)}
    assert set(first) <= set(later)  # contract outcomes keep their ids; their time follows the end
    assert all(later[i] == e for i, e in first.items() if e.get("type", "track") == "track")
    added = [e for i, e in later.items() if i not in first]
    assert added and all(datetime.fromisoformat(e["timestamp"]) > first_end for e in added)
