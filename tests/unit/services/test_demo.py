"""The demo stream: deterministic, valid, and its cohorts behave as documented
(the rules' starter library relies on them)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

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
