"""The richer metrics (issue 21, item 1) on both databases with the simulated clock:
aggregates of a numeric event property, counts with property filters, metrics of one
role, contact coverage. Each against values computed by hand from the world below,
empty windows and missing or non-numeric properties included; a scheduled rule on each
fires for exactly the accounts it should; dry-run, backtest and the 422s.

The world, at T0 (Monday 2026-03-02 12:00 UTC; "30d" is Feb 1 .. Mar 2, "14d" Feb 17 ..
Mar 2, "7d" Feb 24 .. Mar 2):

- "acme": champions u1 and u2, power user u3, member u4 (roles from identify calls on
  day -60). nps_answered by u9 (no role): score 2 on day -40 (outside 30d), 9 on -20, 7 on
  -10, "8" (a string) on -5, no score on -3, true on -2, 6.5 on -1 and a nested
  answer.score 4 on -4. Numeric scores in 30d: 9, 7, 6.5 -> sum 22.5, avg 7.5, min 6.5, max
  9, latest 6.5, 3 values. ticket_opened: P0 on -40 (outside), -25 and -3; P1 on -2; no
  priority on -1; tier 2 on -2 and tier "2" on -3; meta.priority P0 on -4. Logins: u1 (champion) at day -9 12:00,
  u3 (power user) on -2, u4 on -1.
- "quiet": nps_answered twice in 30d, with no numeric score (a string, nothing).
- "empty": an account with no events but its group call.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from services.ingest import interface
from services.rules.backtest.series import DailySeries
from services.rules.backtest.service import run_backtest
from services.rules.conditions import evaluate_condition
from services.rules.evaluation.engine import EventSubject, Measurements
from services.rules.evaluation.service import RuleIndex, evaluate_events, run_tick
from services.rules.language import parse_condition, parse_rule
from shared.db import transaction
from tests.support.helpers import T0, auth, run_jobs, track
from tests.support.rules import group, identify, ingest, make_rule, signals


def day(n: int, hour: int = 12) -> datetime:
    return (T0 - timedelta(days=n)).replace(hour=hour)


def seed(session_factory) -> None:
    evs: list[dict] = [group(a, day(60), plan="pro") for a in ("acme", "quiet", "empty")]
    for user, role in (("u1", "champion"), ("u2", "champion"), ("u3", "power_user"), ("u4", "member")):
        evs.append(identify("acme", user, day(60), role=role))
    nps = [
        (40, {"score": 2}),
        (20, {"score": 9}),
        (10, {"score": 7}),
        (5, {"score": "8"}),
        (3, {}),
        (2, {"score": True}),
        (1, {"score": 6.5}),
    ]
    evs += [track("acme", "nps_answered", day(n), "u9", f"nps{n}", **p) for n, p in nps]
    evs.append(track("acme", "nps_answered", day(4), "u9", "nps-nested", answer={"score": 4}))
    tickets = [
        (40, {"priority": "P0"}),
        (25, {"priority": "P0"}),
        (3, {"priority": "P0", "tier": "2"}),
        (2, {"priority": "P1", "tier": 2}),
        (1, {}),
    ]
    evs += [track("acme", "ticket_opened", day(n), "u9", f"t{n}", **p) for n, p in tickets]
    evs.append(track("acme", "ticket_opened", day(4), "u9", "t-nested", meta={"priority": "P0"}))
    evs += [
        track("acme", "login", day(9), "u1", "l1"),
        track("acme", "login", day(2), "u3", "l3"),
        track("acme", "login", day(1), "u4", "l4"),
    ]
    evs += [track("quiet", "nps_answered", day(5), "q1", "q5", score="9"), track("quiet", "nps_answered", day(2), "q1", "q2")]
    ingest(session_factory, evs, T0)


def value(session_factory, cond: dict, account: str, now: datetime = T0):
    with session_factory() as s:
        ok, tree = evaluate_condition(s, parse_condition(cond), account, now)
    return tree.get("value"), ok, tree


def agg(fn: str, prop: str = "score", window: str = "30d", **extra) -> dict:
    return {"metric": "aggregate", "fn": fn, "event": "nps_answered", "property": prop, "window": window, "op": ">=", "value": 0, **extra}


def test_aggregates_against_hand_computed_values(session_factory):
    seed(session_factory)
    expected = {"sum": 22.5, "avg": 7.5, "min": 6.5, "max": 9.0, "latest": 6.5}
    for fn, want in expected.items():
        v, ok, tree = value(session_factory, agg(fn), "acme")
        assert (v, ok, tree["values"]) == (want, True, 3), (fn, tree)
    # A nested property; a window that keeps only the last two days (6.5 on day -1; true on -2 is no number).
    assert value(session_factory, agg("sum", "answer.score"), "acme")[0] == 4.0
    assert value(session_factory, agg("avg", window="2d"), "acme")[0] == 6.5
    assert value(session_factory, agg("max", window="90d"), "acme")[0] == 9.0  # day -40's 2 is now in, not the max
    assert value(session_factory, agg("min", window="90d"), "acme")[0] == 2.0
    # Events without a numeric value, and no events at all: undefined for avg/min/max/latest
    # (the predicate is false, and the explanation says so), 0 for sum.
    for account in ("quiet", "empty"):
        for fn in ("avg", "min", "max", "latest"):
            v, ok, tree = value(session_factory, agg(fn), account)
            assert (v, ok, tree["undefined"], tree["values"]) == (None, False, True, 0), (account, fn, tree)
            assert value(session_factory, {"not": agg(fn)}, account)[1] is True  # false, so "not" of it holds
        v, ok, tree = value(session_factory, {**agg("sum"), "op": "==", "value": 0}, account)
        assert (v, ok, tree["values"]) == (0.0, True, 0)


def test_counts_with_property_filters(session_factory):
    seed(session_factory)

    def tickets(where: dict, window: str = "30d", account: str = "acme") -> float:
        return value(
            session_factory,
            {"metric": "count", "event": "ticket_opened", "where": where, "window": window, "op": ">=", "value": 0},
            account,
        )[0]

    assert tickets({"priority": "P0"}) == 2  # days -25 and -3; -40 is outside
    assert tickets({"priority": "P0"}, "90d") == 3
    assert tickets({"priority": {"in": ["P0", "P1"]}}) == 3
    assert tickets({"priority": "P2"}) == 0
    assert tickets({"tier": 2}) == 1  # the number, not the string "2"
    assert tickets({"tier": "2"}) == 1
    assert tickets({"priority": "P0", "tier": "2"}) == 1  # every filter must match
    assert tickets({"priority": "P0"}, account="empty") == 0
    assert tickets({"meta.priority": "P0"}) == 1  # a nested key; the top-level filter did not see it
    # A key of digits names an object's key, never an array's index (PostgreSQL's #> would
    # read "seats.0" as [5][0]), on both databases, as an event-triggered rule reads it.
    ingest(
        session_factory,
        [
            track("acme", "seats_changed", day(4), "u9", "sc-array", seats=[5]),
            track("acme", "seats_changed", day(3), "u9", "sc-object", seats={"0": 5, "1": "five"}),
        ],
        T0,
    )
    for where, expected in (({"seats.0": 5}, 1), ({"seats.1": "five"}, 1), ({"seats.0": {"in": [5, 6]}}, 1)):
        cond = {"metric": "count", "event": "seats_changed", "where": where, "window": "30d", "op": ">=", "value": 0}
        assert value(session_factory, cond, "acme")[0] == expected, where
    total = {"metric": "aggregate", "fn": "sum", "event": "seats_changed", "property": "seats.0", "window": "30d", "op": ">=", "value": 0}
    assert value(session_factory, total, "acme")[0] == 5  # the object's 5 only
    # Without "where" it is the rollup count: the five tickets of the last 30 days.
    plain = {"metric": "count", "event": "ticket_opened", "window": "30d", "op": ">=", "value": 0}
    assert value(session_factory, plain, "acme")[0] == 5


def test_role_metrics_and_coverage(session_factory):
    seed(session_factory)
    v, ok, _ = value(session_factory, {"metric": "days_since", "event": "login", "role": "champion", "op": ">=", "value": 9}, "acme")
    assert (v, ok) == (9.0, True)  # u1's login at day -9, 12:00: exactly nine days
    v, ok, tree = value(session_factory, {"metric": "days_since", "event": "login", "role": "buyer", "op": ">=", "value": 30}, "acme")
    assert (v, ok, tree["never_seen"]) == (None, True, True)  # no buyer ever logged in: infinitely long ago
    v, _, _ = value(session_factory, {"metric": "days_since", "event": "login", "op": ">=", "value": 0}, "acme")
    assert v == pytest.approx(1.0)  # without a role: u4's login yesterday

    def active(role: str, window: str) -> float:
        return value(session_factory, {"metric": "active_users", "window": window, "role": role, "op": ">=", "value": 0}, "acme")[0]

    assert (active("power_user", "7d"), active("champion", "7d"), active("champion", "14d"), active("member", "7d")) == (1, 0, 1, 1)

    def contacts(role: str, within: str | None = None, account: str = "acme") -> float:
        cond = {"metric": "contacts", "role": role, "op": ">=", "value": 0, **({"active_within": within} if within else {})}
        return value(session_factory, cond, account)[0]

    assert (contacts("champion"), contacts("champion", "14d"), contacts("champion", "7d")) == (2, 1, 0)
    assert (contacts("buyer"), contacts("champion", account="empty")) == (0, 0)
    # A contact counts from its first tracked event (u1: day -9); one never tracked (u2, known
    # from an identify call only) counts at any date.
    assert value(session_factory, {"metric": "contacts", "role": "champion", "op": ">=", "value": 0}, "acme", day(10))[0] == 1


def test_one_query_per_operand_for_the_whole_population(session_factory):
    seed(session_factory)
    conds = [
        agg("avg"),
        {"metric": "count", "event": "ticket_opened", "where": {"priority": "P0"}, "window": "30d", "op": ">=", "value": 1},
        {"metric": "contacts", "role": "champion", "active_within": "14d", "op": ">=", "value": 1},
        {"metric": "days_since", "event": "login", "role": "champion", "op": "<", "value": 14},
        {"metric": "active_users", "window": "7d", "role": "power_user", "op": ">=", "value": 1},
    ]
    with session_factory() as s:
        meas = Measurements(s, T0)
        got = [meas.matching(parse_condition(c)) for c in conds]
        again = [meas.matching(parse_condition({**c, "value": 2})) for c in conds]  # other thresholds: no new read
        assert meas.queries == len(conds)
    assert got == [{"acme"}] * 5 and again[0] == {"acme"} and again[1] == {"acme"}


RULES = {
    "low-nps": {
        "metric": "aggregate",
        "fn": "latest",
        "event": "nps_answered",
        "property": "score",
        "window": "90d",
        "op": "<=",
        "value": 6.5,
    },
    "p0-tickets": {"metric": "count", "event": "ticket_opened", "where": {"priority": "P0"}, "window": "30d", "op": ">=", "value": 2},
    "champion-quiet": {"metric": "days_since", "event": "login", "role": "champion", "op": ">=", "value": 7},
    "no-active-champion": {"metric": "contacts", "role": "champion", "active_within": "7d", "op": "<", "value": 1},
    "power-users-active": {"metric": "active_users", "window": "7d", "role": "power_user", "op": ">=", "value": 1},
}


def test_a_rule_on_each_metric_fires_for_the_right_accounts(session_factory, settings, clock):
    seed(session_factory)
    for rid, cond in RULES.items():
        make_rule(
            session_factory, {"id": rid, "name": rid, "kind": "churn_risk", "trigger": {"schedule": {"every": "1h"}}, "condition": cond}, T0
        )
    run_tick(session_factory, settings, clock.now())
    fired = {(s.rule_id, s.account_id) for s in signals(session_factory)}
    # low-nps: acme's latest 6.5; quiet and empty have no number (undefined: false).
    # champion-quiet: acme 9 days; quiet and empty never saw a champion log in (infinitely long ago).
    # no-active-champion: nobody has a champion active in 7 days (acme's was 9 days ago).
    assert fired == {
        ("low-nps", "acme"),
        ("p0-tickets", "acme"),
        ("champion-quiet", "acme"),
        ("champion-quiet", "quiet"),
        ("champion-quiet", "empty"),
        ("no-active-champion", "acme"),
        ("no-active-champion", "quiet"),
        ("no-active-champion", "empty"),
        ("power-users-active", "acme"),
    }
    evidence = {s.rule_id: s.evidence for s in signals(session_factory, account_id="acme")}
    assert evidence["low-nps"]["latest(nps_answered.score, 90d)"] == {"value": 6.5, "op": "<=", "threshold": 6.5}
    assert evidence["p0-tickets"]["count(ticket_opened where priority=P0, 30d)"]["value"] == 2


def test_backtest_replays_the_raw_event_metrics_exactly(session_factory, settings):
    seed(session_factory)
    rule = parse_rule(
        {
            "id": "low-nps",
            "name": "Low NPS",
            "kind": "churn_risk",
            "trigger": {"schedule": {"every": "1d"}},
            "condition": {"any": [RULES["low-nps"], {**RULES["champion-quiet"], "value": 8}]},
            "cooldown": "1m",
        }
    )
    with session_factory() as s:
        res = run_backtest(s, rule, date(2026, 2, 18), date(2026, 3, 2))
    by_day: dict[date, set[str]] = {}
    for d, a, _ in res.firings:
        by_day.setdefault(d, set()).add(a)
    # Latest NPS as of each day's end: 9 from Feb 10, 7 from Feb 20, 6.5 from Mar 1 (<= 6.5 fires).
    # A champion last logged in on Feb 21 at 12:00: as of each day's end, 8 days later is Mar 1.
    # quiet and empty never saw a champion: every day.
    for d in (date(2026, 2, 18) + timedelta(days=i) for i in range(13)):
        want = {"quiet", "empty"} | ({"acme"} if d >= date(2026, 3, 1) or d < date(2026, 2, 21) else set())
        assert by_day.get(d, set()) == want, d
    first_acme = next(ev for d, a, ev in res.firings if a == "acme" and d == date(2026, 3, 1))
    assert first_acme["latest(nps_answered.score, 90d)"]["value"] == 6.5


async def test_backtest_refuses_a_period_past_the_retained_raw_events(api, keys, session_factory, settings, clock):
    """The rollups are kept, the raw events pruned after the retention: a replay of a
    raw-event metric is refused (422 at /start, saying why and from when it works) when
    its first window reaches past them, and runs as a job when it does not."""
    seed(session_factory)
    ops = auth(keys["ops"])
    rule = {"id": "p0", "name": "P0", "kind": "churn_risk", "trigger": {"schedule": {"every": "1h"}}, "condition": RULES["p0-tickets"]}
    oldest = clock.now().date() - timedelta(days=settings.raw_event_retention_days - 1)
    first_ok = oldest + timedelta(days=29)  # the first replayed day's 30-day window starts on the oldest retained day
    r = await api.post(
        "/v1/rules/backtest",
        json={"rule": rule, "start": (first_ok - timedelta(days=1)).isoformat(), "end": T0.date().isoformat()},
        headers=ops,
    )
    assert r.status_code == 422, r.text
    problem = r.json()["detail"][0]
    assert problem["pointer"] == "/start" and "count(ticket_opened where priority=P0, 30d) reads the raw events" in problem["message"]
    assert f"Start the period on {first_ok.isoformat()} or later" in problem["message"]
    # The rollup metrics are not limited by the raw events' retention.
    plain = {**rule, "condition": {"metric": "count", "event": "ticket_opened", "window": "30d", "op": ">=", "value": 2}}
    r = await api.post(
        "/v1/rules/backtest",
        json={"rule": plain, "start": oldest.isoformat(), "end": (oldest + timedelta(days=3)).isoformat()},
        headers=ops,
    )
    assert r.status_code == 202, r.text
    # From the first day that works, the job runs (its worker checks again, with its clock) and fires on acme
    # from the day its second P0 ticket of 30 days arrived (Feb 27) until Mar 2.
    r = await api.post(
        "/v1/rules/backtest", json={"rule": {**rule, "cooldown": "1m"}, "start": "2026-02-20", "end": T0.date().isoformat()}, headers=ops
    )
    assert r.status_code == 202, r.text
    assert run_jobs(settings, session_factory, clock) == 2
    job = (await api.get(r.headers["location"], headers=ops)).json()
    assert job["state"] == "succeeded", job
    fired = [d["day"] for d in job["result"]["per_day"] if d["firings"]]
    assert fired == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"] and job["result"]["accounts"] == ["acme"]


BAD = [
    (
        {"metric": "aggregate", "fn": "median", "event": "e", "property": "score", "window": "7d", "op": ">", "value": 1},
        "/fn",
        "sum, avg, min, max, latest",
    ),
    ({"metric": "aggregate", "fn": "avg", "event": "e", "window": "7d", "op": ">", "value": 1}, "/property", 'needs "property"'),
    (
        {"metric": "aggregate", "fn": "avg", "event": "e", "property": "a..b", "window": "7d", "op": ">", "value": 1},
        "/property",
        "letters, digits",
    ),
    (
        {"metric": "count", "event": "e", "where": {"priority": ["P0"]}, "window": "7d", "op": ">", "value": 1},
        "/where/priority",
        '{"in": [<values>]}',
    ),
    (
        {"metric": "count", "event": "e", "where": {"priority": {"in": []}}, "window": "7d", "op": ">", "value": 1},
        "/where/priority",
        "non-empty",
    ),
    ({"metric": "count", "event": "e", "where": {}, "window": "7d", "op": ">", "value": 1}, "/where", "property filters"),
    ({"metric": "days_since", "event": "login", "role": 3, "op": ">", "value": 1}, "/role", "champion, power_user, buyer, admin, member"),
    ({"metric": "active_users", "window": "7d", "role": "champions", "op": ">", "value": 1}, "/role", "did you mean 'champion'"),
    ({"metric": "contacts", "active_within": "14d", "op": "<", "value": 1}, "/role", 'needs "role"'),
    ({"metric": "contacts", "role": "champion", "active_within": "2 weeks", "op": "<", "value": 1}, "/active_within", "whole days"),
    ({"metric": "active_days", "window": "7d", "role": "champion", "op": "<", "value": 1}, "/role", "unknown field"),
]


async def test_bad_definitions_are_422_with_pointer_and_allowed_values(api, keys):
    ops = auth(keys["ops"])
    for cond, ptr, words in BAD:
        rule = {"name": "x", "kind": "churn_risk", "trigger": {"schedule": {"every": "1h"}}, "condition": {"all": [cond]}}
        r = await api.post("/v1/rules/validate", json=rule, headers=ops)
        assert r.status_code == 422, (cond, r.text)
        problems = r.json()["detail"]
        assert any(p["pointer"] == "/condition/all/0" + ptr and words in p["message"] for p in problems), (cond, problems)
    # role and scope "user" name users two ways.
    rule = {
        "name": "x",
        "kind": "churn_risk",
        "trigger": {"events": ["login"]},
        "condition": {"metric": "days_since", "event": "login", "scope": "user", "role": "champion", "op": ">", "value": 1},
    }
    r = await api.post("/v1/rules/validate", json=rule, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/condition/role"


async def test_dry_run_explains_an_empty_window(api, keys, session_factory):
    seed(session_factory)
    ops = auth(keys["ops"])
    rule = {"name": "NPS low", "kind": "churn_risk", "trigger": {"schedule": {"every": "1h"}}, "condition": {"any": [agg("avg")]}}
    out = (await api.post("/v1/rules/test", params={"account_id": "quiet"}, json={"rule": rule}, headers=ops)).json()
    leaf = out["condition"]["any"][0]
    assert out["would_fire"] is False
    assert out["summary"] == (
        "would not fire: the condition does not hold (avg(nps_answered.score, 30d) = undefined (no numeric value in the window), needs >= 0.0)"
    )
    assert (leaf["predicate"], leaf["value"], leaf["undefined"], leaf["values"], leaf["result"]) == (
        "avg(nps_answered.score, 30d)",
        None,
        True,
        0,
        False,
    )


def seed_history(session_factory) -> None:
    """80 days of varied raw events (Jan 1 .. Mar 21, 2026) for the backtest comparison:
    gaps, scores that are numbers, halves, strings or missing, several events a day, an
    account that goes quiet, one that starts late, champions coming and going."""
    rng = random.Random(21)
    day0 = datetime(2026, 1, 1, tzinfo=UTC)
    evs: list[dict] = []
    for n, kind in enumerate(["steady", "quiet-late", "fades", "late", "sparse", "never"]):
        a = f"{kind}-{n}"
        evs.append(group(a, day0, plan="pro"))
        for u, role in (
            ("c1", "champion"),
            ("c2", "champion"),
            ("p1", "power_user"),
            ("m1", "member"),
            ("b1", "buyer"),
            ("c3", "champion"),
        ):
            evs.append(identify(a, u, day0, role=role))  # c3 is never tracked: a contact at any date
        if n % 2:  # a buyer first tracked inside the replayed period
            evs.append(track(a, "login", day0 + timedelta(days=50 + n, hours=n), "b1", f"b-{a}"))
        if kind == "never":
            continue
        for d in range(80):
            if (kind == "fades" and d > 40) or (kind == "late" and d < 45) or (kind == "sparse" and d % 9):
                continue
            for k in range(rng.randint(0, 3)):
                ts = day0 + timedelta(days=d, seconds=rng.randint(0, 86399))
                user = rng.choice(["c1", "c2", "p1", "m1"])
                score = rng.choice([rng.randint(0, 10), rng.randint(0, 20) / 2, "7", None, True])
                props = {} if score is None else {"score": score}
                evs.append(track(a, "nps_answered", ts, user, f"n-{a}-{d}-{k}", **props))
                prio = rng.choice(["P0", "P1", "P2", None])
                evs.append(track(a, "ticket_opened", ts, user, f"t-{a}-{d}-{k}", **({"priority": prio} if prio else {})))
                if rng.random() < (0.2 if kind == "quiet-late" and d > 60 else 0.7):
                    evs.append(track(a, "login", ts + timedelta(minutes=1), user, f"l-{a}-{d}-{k}"))
    ingest(session_factory, evs, datetime(2026, 4, 1, tzinfo=UTC))


RAW_OPERANDS = [
    {"metric": "count", "event": "ticket_opened", "where": {"priority": "P0"}, "window": "7d"},
    {"metric": "count", "event": "ticket_opened", "where": {"priority": {"in": ["P0", "P1"]}}, "window": "30d"},
    *(
        {"metric": "aggregate", "fn": fn, "event": "nps_answered", "property": "score", "window": w}
        for fn in ("sum", "avg", "min", "max", "latest")
        for w in ("1d", "14d")
    ),
    {"metric": "days_since", "event": "login", "role": "champion"},
    {"metric": "days_since", "event": "login", "role": "power_user"},
    {"metric": "active_users", "window": "1d", "role": "champion"},
    {"metric": "active_users", "window": "14d", "role": "power_user"},
    {"metric": "contacts", "role": "champion", "active_within": "7d"},
    {"metric": "contacts", "role": "champion"},
    {"metric": "contacts", "role": "buyer"},
]


def test_backtest_series_give_the_per_day_answers_for_raw_event_metrics(session_factory):
    """One read per operand for the whole period answers exactly what the per-day queries
    answer, every day (values, value counts, firings and evidence), on both databases."""
    seed_history(session_factory)
    start, end = date(2026, 2, 10), date(2026, 3, 31)  # data stops on Mar 21; windows reach before Jan 1
    with session_factory() as s:
        for lookback in (400, 30):
            series = DailySeries(s, start, end, 31)
            # A backtest in chunks of accounts: each chunk's series reads and answers its accounts only.
            chunks = [interface.account_ids_after(s, None, 2)]
            while len(chunks[-1]) == 2:
                chunks.append(interface.account_ids_after(s, chunks[-1][-1], 2))
            assert sorted(sum(chunks, [])) == sorted(interface.account_ids(s)) and len(chunks) >= 3
            chunk_series = [DailySeries(s, start, end, 31, c) for c in chunks]
            for i in range((end - start).days + 1):
                now = datetime.combine(start + timedelta(days=i + 1), datetime.min.time(), tzinfo=UTC) - timedelta(microseconds=1)
                fast = Measurements(s, now, None, as_of=True, lookback_days=lookback, series=series)
                slow = Measurements(s, now, None, as_of=True, lookback_days=lookback)
                by_chunk = [
                    Measurements(s, now, c, as_of=True, lookback_days=lookback, series=cs)
                    for c, cs in zip(chunks, chunk_series, strict=True)
                ]
                for op in RAW_OPERANDS:
                    leaf = parse_condition({**op, "op": ">=", "value": 0})
                    assert fast.metric(leaf) == slow.metric(leaf), (op, now, lookback)
                    assert fast._seen == slow._seen
                    values, default = slow.metric(leaf)
                    for c, meas in zip(chunks, by_chunk, strict=True):
                        assert meas.metric(leaf) == ({a: v for a, v in values.items() if a in c}, default), (op, now, c)
                        assert meas._seen == {k: {a: n for a, n in seen.items() if a in c} for k, seen in slow._seen.items()}
            # The series answered every kind (it did not hand the questions back to the per-day queries).
            assert {k[0] for k in series._raw} == {"count_where", "stats", "role_last", "role_masks", "role_users", "first_seen"}
        rules = [
            parse_rule(
                {
                    "id": f"r{i}-{k}",
                    "name": "r",
                    "kind": "churn_risk",
                    "trigger": {"schedule": {}},
                    "condition": {**op, "op": o, "value": v},
                    "cooldown": "2d",
                }
            )
            for i, op in enumerate(RAW_OPERANDS)
            for k, (o, v) in enumerate(((">=", 1), ("<", 5), (">", 7), ("==", 3)))
        ]
        fired = set()
        for d in rules:
            fast_run = run_backtest(s, d, start, end)
            slow_run = run_backtest(s, d, start, end, per_day_queries=True)
            assert fast_run.firings == slow_run.firings, d.id
            assert run_backtest(s, d, start, end, chunk_accounts=2).firings == slow_run.firings, d.id
            fired |= {d.id.split("-")[0] for _ in fast_run.firings[:1]}
    assert fired == {f"r{i}" for i in range(len(RAW_OPERANDS))}  # every operand fires somewhere: not vacuous


def test_an_event_triggered_rule_reads_them_for_the_batch_accounts(session_factory, settings):
    """The rules worker's path: metrics measured for the batch's accounts only, a plain
    count (planned and read with the batch's other counts) beside a filtered one of the
    same event and window, which must not be mistaken for each other."""
    seed(session_factory)
    make_rule(
        session_factory,
        {
            "id": "p0-pileup",
            "name": "Second P0 in a month while the latest NPS is low",
            "kind": "churn_risk",
            "trigger": {"events": ["ticket_opened"]},
            "condition": {
                "all": [
                    {"metric": "count", "event": "ticket_opened", "where": {"priority": "P0"}, "window": "30d", "op": ">=", "value": 2},
                    {"metric": "count", "event": "ticket_opened", "window": "30d", "op": ">=", "value": 4},
                    {
                        "metric": "aggregate",
                        "fn": "latest",
                        "event": "nps_answered",
                        "property": "score",
                        "window": "30d",
                        "op": "<",
                        "value": 7,
                    },
                    {"metric": "contacts", "role": "champion", "op": ">=", "value": 2},
                ]
            },
            "cooldown": "1d",
        },
        T0,
    )
    index = RuleIndex(400)
    batch = [EventSubject(f"t-now-{a}", a, "u9", "ticket_opened", T0, {"priority": "P0"}) for a in ("acme", "quiet", "empty")]
    with transaction(session_factory) as s:
        index.refresh(s)
        report = evaluate_events(s, batch, index, T0, settings)
    assert [sig.account_id for sig in report.signals] == ["acme"]
    ev = report.signals[0].evidence
    assert ev["count(ticket_opened where priority=P0, 30d)"]["value"] == 2 and ev["count(ticket_opened, 30d)"]["value"] == 5
    assert ev["latest(nps_answered.score, 30d)"]["value"] == 6.5 and ev["contacts(role=champion)"]["value"] == 2
