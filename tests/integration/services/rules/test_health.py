"""Customer health on both databases with the simulated clock: the model over the API
(validated, versioned, audited), scoring on demand with its explanation, a model version
change, the change over 7 days, and the accounts listed by health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.rules.backtest.health import score_history
from services.rules.backtest.service import run_backtest
from services.rules.evaluation.health import run_health_day
from services.rules.evaluation.service import run_tick
from services.rules.evaluation.worker import RulesWorker
from services.rules.health import service as health_service
from services.rules.language import RuleValidationError, parse_rule
from services.rules.models import HealthRun, HealthScore
from shared.db import transaction
from tests.support.engagements import add_csm
from tests.support.helpers import T0, auth, drain, publish, run_cli, track
from tests.support.rules import count, group, ingest, make_rule, signals

MODEL = {
    "name": "Test health",
    "labels": {"healthy": 70, "watch": 40},
    "components": [
        {
            "id": "recency",
            "measure": {"metric": "days_since", "event": "login"},
            "weight": 3,
            "bands": [{"below": 3, "points": 100}, {"below": 14, "points": 60}, {"points": 0}],
        },
        {
            "id": "seats",
            "measure": {"metric": "seat_utilisation", "window": "28d"},
            "weight": 1,
            "linear": {"from": {"value": 0, "points": 0}, "to": {"value": 100, "points": 100}},
        },
    ],
}


def seed(session_factory) -> None:
    """acme: 5 of its 10 seats log in every day of the last four weeks; fading: 2 of 10
    logged in only 20 to 27 days ago."""
    events = [group(a, T0 - timedelta(days=60), seats=10, name=a) for a in ("acme", "fading")]
    events += [track("acme", "login", T0 - timedelta(days=d), f"u{u}", f"acme-{d}-{u}") for d in range(1, 28) for u in range(5)]
    events += [track("fading", "login", T0 - timedelta(days=d), f"u{u}", f"fading-{d}-{u}") for d in range(20, 28) for u in range(2)]
    ingest(session_factory, events, T0)


async def test_the_model_is_validated_versioned_and_audited(api, keys):
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    r = await api.get("/v1/health/model", headers=ops)
    assert r.status_code == 404
    bad = {**MODEL, "components": [{**MODEL["components"][0], "measure": {"metric": "logins"}}]}
    for path in ("/v1/health/model/validate", "/v1/health/model"):
        r = await api.request("POST" if path.endswith("validate") else "PUT", path, json=bad, headers=ops)
        assert r.status_code == 422, r.text
        [problem] = r.json()["detail"]
        assert problem["pointer"] == "/components/0/measure/metric" and "days_since" in problem["message"]
    r = await api.post("/v1/health/model/validate", json=MODEL, headers=ops)
    assert r.status_code == 200 and r.json()["model"]["components"][1]["linear"]["to"] == {"value": 100, "points": 100}

    r = await api.put("/v1/health/model", json=MODEL, headers=ops)
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["changed"]
    r = await api.put("/v1/health/model", json=MODEL, headers=ops)
    assert r.json()["version"] == 1 and not r.json()["changed"]
    r = await api.put("/v1/health/model", json={**MODEL, "labels": {"healthy": 80, "watch": 50}}, headers=ops)
    assert r.json()["version"] == 2 and r.json()["definition"]["labels"] == {"healthy": 80, "watch": 50}
    r = await api.get("/v1/health/model/versions?limit=1", headers=ops)
    assert [v["version"] for v in r.json()["items"]] == [1] and r.json()["next_cursor"] == "1"
    r = await api.get("/v1/health/model/versions?cursor=1", headers=ops)
    assert [v["version"] for v in r.json()["items"]] == [2]
    assert (await api.get("/v1/health/model/versions/1", headers=ops)).json()["definition"]["labels"] == {"healthy": 70, "watch": 40}
    assert (await api.get("/v1/health/model/versions/3", headers=ops)).status_code == 404
    r = await api.get("/v1/health/model/audit", headers=ops)
    assert [(a["action"], a["version"], a["actor"] == "ops:test ops") for a in r.json()["items"]] == [
        ("create", 1, True),
        ("update", 2, True),
    ]
    assert r.json()["items"][1]["details"] == {"changed_fields": ["labels"]}
    assert (await api.put("/v1/health/model", json=MODEL, headers=csm)).status_code == 403


async def test_scoring_on_demand_explains_itself_and_follows_the_model_version(api, keys, session_factory, clock):
    ops = auth(keys["ops"])
    seed(session_factory)
    r = await api.post("/v1/accounts/acme/health", headers=ops)
    assert r.status_code == 404 and "PUT /v1/health/model" in r.json()["detail"]
    await api.put("/v1/health/model", json=MODEL, headers=ops)
    assert (await api.post("/v1/accounts/nobody/health", headers=ops)).status_code == 404

    r = await api.post("/v1/accounts/acme/health", headers=ops)
    assert r.status_code == 200, r.text
    acme = r.json()
    # Last login a day ago: 100 points (weight 3); 5 of 10 seats active: 50 points (weight 1). (300 + 50) / 4.
    assert acme["score"] == 87.5 and acme["label"] == "healthy" and acme["model_version"] == 1
    assert [(c["id"], c["value"], c["band"], c["points"], c["weight"]) for c in acme["components"]] == [
        ("recency", 1.0, "< 3", 100, 3),
        ("seats", 50.0, "linear 0..100", 50, 1),
    ]
    assert acme["change"] == {"7d": None, "30d": None} and acme["day"] == T0.date().isoformat()
    fading = (await api.post("/v1/accounts/fading/health", headers=ops)).json()
    assert fading["score"] == 5.0 and fading["label"] == "at_risk"  # (0 * 3 + 20) / 4

    # A week later, with a new model version (recency weighs as much as seats).
    clock.advance(timedelta(days=7))
    v2 = {**MODEL, "components": [{**MODEL["components"][0], "weight": 1}, MODEL["components"][1]]}
    assert (await api.put("/v1/health/model", json=v2, headers=ops)).json()["version"] == 2
    acme = (await api.post("/v1/accounts/acme/health", headers=ops)).json()
    # Last login 8 days ago: 60 points; the 28-day window still holds the 5 users: 50. (60 + 50) / 2.
    assert acme["score"] == 55.0 and acme["label"] == "watch" and acme["model_version"] == 2
    assert acme["change"] == {"7d": -32.5, "30d": None}
    fading = (await api.post("/v1/accounts/fading/health", headers=ops)).json()
    assert fading["score"] == 10.0 and fading["change"]["7d"] == 5.0

    r = await api.get("/v1/accounts/acme/health", headers=ops)
    body = r.json()
    assert body["current"]["score"] == 55.0 and body["current"]["components"][0]["band"] == "3 to < 14"
    assert [(p["day"], p["score"], p["label"]) for p in body["history"]] == [
        ((T0 + timedelta(days=7)).date().isoformat(), 55.0, "watch"),
        (T0.date().isoformat(), 87.5, "healthy"),
    ]
    assert (await api.get("/v1/accounts/acme/health?days=3", headers=ops)).json()["history"][0]["score"] == 55.0
    assert (await api.get("/v1/accounts/nobody/health", headers=ops)).json() == {"account_id": "nobody", "current": None, "history": []}

    # The accounts by health on the latest scored day, lowest first; a page at a time.
    r = await api.get("/v1/health/accounts?limit=1", headers=ops)
    page = r.json()
    assert page["day"] == (T0 + timedelta(days=7)).date().isoformat()
    assert [(i["account_id"], i["score"]) for i in page["items"]] == [("fading", 10.0)]
    r = await api.get(f"/v1/health/accounts?limit=1&cursor={page['next_cursor']}", headers=ops)
    assert [i["account_id"] for i in r.json()["items"]] == ["acme"]
    r = await api.get("/v1/health/accounts?order=desc", headers=ops)
    assert [i["account_id"] for i in r.json()["items"]] == ["acme", "fading"] and r.json()["next_cursor"] is None
    r = await api.get("/v1/health/accounts?label=at_risk", headers=ops)
    assert [i["account_id"] for i in r.json()["items"]] == ["fading"]
    assert (await api.get("/v1/health/accounts?cursor=nonsense", headers=ops)).status_code == 422
    # The next day one account is scored on request: the list is still every account's
    # current score (fading's from yesterday), not only the newest day's one row.
    clock.advance(timedelta(days=1))
    assert (await api.post("/v1/accounts/acme/health", headers=ops)).status_code == 200
    r = await api.get("/v1/health/accounts", headers=ops)
    assert [i["account_id"] for i in r.json()["items"]] == ["fading", "acme"]
    assert r.json()["day"] == (T0 + timedelta(days=8)).date().isoformat()

    # A dry-run of a rule on health explains the audience's health filters and the metric.
    rule = {
        "id": "low-health",
        "name": "Low health",
        "kind": "churn_risk",
        "trigger": {"schedule": {"every": "1h"}},
        "audience": {"health_label": ["at_risk", "watch"], "health": {"max": 50}},
        "condition": {"metric": "health", "op": "<", "value": 40},
    }
    r = await api.post("/v1/rules/test?account_id=fading", json={"rule": rule}, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["would_fire"] and r.json()["evidence"]["health"]["value"] == 10.0
    checks = {c["filter"]: c for c in r.json()["audience"]["checks"]}
    assert checks["health_label"]["value"] == "at_risk" and checks["health"] == {
        "filter": "health",
        "value": 10.0,
        "max": 50,
        "result": True,
    }
    r = await api.post("/v1/rules/test?account_id=acme", json={"rule": rule}, headers=ops)
    assert not r.json()["would_fire"] and not r.json()["audience"]["match"]
    assert {c["filter"]: c["result"] for c in r.json()["audience"]["checks"]} == {"health_label": True, "health": False}


async def test_a_csm_reads_health_only_on_their_own_engagements_accounts(api, keys, session_factory):
    """docs/health.md: a CSM key (bound to csm-1) reads, scores and lists the health of the
    accounts of its own engagements only; another account's is 403, as another CSM's
    engagement is; ops see every account."""
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    seed(session_factory)
    await api.put("/v1/health/model", json=MODEL, headers=ops)
    for a in ("acme", "fading"):
        assert (await api.post(f"/v1/accounts/{a}/health", headers=ops)).status_code == 200
    await add_csm(api, keys["ops"], "csm-1")
    r = await api.post("/v1/engagements", json={"account_id": "acme", "csm_id": "csm-1"}, headers=ops)
    assert r.status_code == 201, r.text

    assert (await api.get("/v1/accounts/acme/health", headers=csm)).json()["current"]["score"] == 87.5
    assert (await api.post("/v1/accounts/acme/health", headers=csm)).status_code == 200
    for r in (await api.get("/v1/accounts/fading/health", headers=csm), await api.post("/v1/accounts/fading/health", headers=csm)):
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    # fading (5.0) comes first for ops; the CSM's list leaves it out, one account a page or all.
    r = await api.get("/v1/health/accounts", headers=ops)
    assert [i["account_id"] for i in r.json()["items"]] == ["fading", "acme"]
    for query in ("", "?limit=1", "?order=desc", "?label=healthy"):
        r = await api.get(f"/v1/health/accounts{query}", headers=csm)
        assert [i["account_id"] for i in r.json()["items"]] == ["acme"], query
    assert (await api.get("/v1/health/accounts?label=at_risk", headers=csm)).json()["items"] == []
    # Once fading is theirs too (a closed engagement counts as an open one), the CSM pages
    # through both, lowest first, one a page, and the cursor ends the list.
    r = await api.post("/v1/engagements", json={"account_id": "fading", "csm_id": "csm-1"}, headers=ops)
    assert r.status_code == 201, r.text
    assert (await api.post(f"/v1/engagements/{r.json()['id']}/cancel", json={"reason": "test"}, headers=ops)).status_code == 200
    pages, cursor = [], ""
    while cursor is not None:
        r = await api.get(f"/v1/health/accounts?limit=1{cursor}", headers=csm)
        pages.append([i["account_id"] for i in r.json()["items"]])
        cursor = f"&cursor={r.json()['next_cursor']}" if r.json()["next_cursor"] else None
    assert [p for p in pages if p] == [["fading"], ["acme"]]


def save_model(session_factory, obj: dict, now) -> None:
    with transaction(session_factory) as s:
        health_service.save(s, health_service.parse(obj, 400), "ops:test", now)


def scores_of(session_factory, day) -> dict[str, tuple[float | None, str | None]]:
    with session_factory() as s:
        return {r.account_id: (r.score, r.label) for r in s.scalars(select(HealthScore).where(HealthScore.day == day))}


FELL_20 = {
    "id": "health-fell-20",
    "name": "Health fell 20 points in 14 days",
    "kind": "churn_risk",
    "trigger": {"schedule": {"every": "1h"}},
    "condition": {"metric": "health_change", "window": "14d", "op": "<=", "value": -20},
    "cooldown": "14d",
}


def test_a_rule_on_health_change_fires_on_the_account_whose_health_fell(session_factory, settings, clock):
    # Both accounts: 5 of 10 seats log in every day of the four weeks before T0.
    events = [group(a, T0 - timedelta(days=60), seats=10) for a in ("steady", "fading")]
    events += [
        track(a, "login", T0 - timedelta(days=d), f"u{u}", f"{a}-{d}-{u}")
        for a in ("steady", "fading")
        for d in range(1, 28)
        for u in range(5)
    ]
    ingest(session_factory, events, T0)
    save_model(session_factory, MODEL, T0)
    report = run_health_day(session_factory, settings, T0)
    assert report.ran and report.scored == 2 and report.model_version == 1
    assert scores_of(session_factory, T0.date()) == {"steady": (87.5, "healthy"), "fading": (87.5, "healthy")}
    again = run_health_day(session_factory, settings, T0 + timedelta(hours=3))
    assert again.done and not again.ran  # one scoring a day

    # Two weeks on: steady keeps logging in, fading stops at T0.
    later = T0 + timedelta(days=14)
    ingest(
        session_factory,
        [track("steady", "login", T0 + timedelta(days=d), f"u{u}", f"steady+{d}-{u}") for d in range(14) for u in range(5)],
        later,
    )
    make_rule(session_factory, FELL_20, later)
    make_rule(
        session_factory,
        {
            **FELL_20,
            "id": "at-risk-by-label",
            "name": "At risk",
            "audience": {"health_label": ["at_risk", "watch"], "health": {"max": 40}},
            "condition": {"field": "account.health_label", "op": "==", "value": "at_risk"},
        },
        later,
    )
    # Before the day's scoring the current score is T0's and there is no 14-day-old one: nothing fires.
    assert run_tick(session_factory, settings, later).signals == []
    run_health_day(session_factory, settings, later)
    # fading: 15 days without a login (0 points x 3), its users still in the 28-day window (50): 12.5.
    assert scores_of(session_factory, later.date()) == {"steady": (87.5, "healthy"), "fading": (12.5, "at_risk")}
    clock.set(later + timedelta(hours=1))
    report = run_tick(session_factory, settings, clock.now())
    fired = sorted((s.rule_id, s.account_id) for s in report.signals)
    assert fired == [("at-risk-by-label", "fading"), ("health-fell-20", "fading")]
    [sig] = signals(session_factory, rule_id="health-fell-20")
    assert sig.evidence["health_change(14d)"] == {"value": -75.0, "op": "<=", "threshold": -20}
    with session_factory() as s:
        row = s.get(HealthScore, ("fading", later.date()))
        # The 7-day change reads the latest score 7 to 14 days back (T0's); none 30 to 60 days back.
        assert row.change_7d == -75.0 and row.change_30d is None
        # A backtest reads the scores stored for each replayed day: the rule fires on the day of the fall only.
        result = run_backtest(s, parse_rule(FELL_20), (later - timedelta(days=3)).date(), later.date(), lookback_days=400)
        assert [(day, account) for day, account, _ev in result.firings] == [(later.date(), "fading")]


def test_health_in_rules_is_validated():
    with pytest.raises(RuleValidationError) as e:
        parse_rule(
            {**FELL_20, "audience": {"health_label": ["sick"]}, "condition": {"field": "account.health_label", "op": "in", "value": ["ok"]}}
        )
    pointers = {err["pointer"]: err["message"] for err in e.value.errors}
    assert "healthy, watch, at_risk" in pointers["/audience/health_label"] and "healthy, watch, at_risk" in pointers["/condition/value"]
    with pytest.raises(RuleValidationError) as e:
        parse_rule({**FELL_20, "condition": {"metric": "health_change", "op": "<", "value": -20}})
    assert e.value.errors[0]["pointer"] == "/condition/window"


def test_the_daily_scoring_waits_for_ingest_like_the_tick(topics, session_factory, clock):
    save_model(session_factory, MODEL, clock.now())
    healthy = [f"healthy-{i:02d}" for i in range(10)]
    # A month-old login for everyone, then this week's logins: ingest stores them in this order.
    old = [track(a, "login", T0 - timedelta(days=30), "u1", f"{a}-old") for a in healthy]
    recent = [track(a, "login", T0 - timedelta(days=1), "u1", f"{a}-recent") for a in healthy]
    publish(topics, old + recent)
    ingest_worker = IngestWorker(topics.model_copy(update={"kafka_max_poll_records": 1}), session_factory, clock)
    rules = RulesWorker(topics.model_copy(update={"rules_max_ingest_lag": 0}), session_factory, clock)
    try:
        drain(ingest_worker, lambda: count(session_factory, RawEvent) >= 1)
        rules.poll_once(100)
        # Half-loaded: the day's scoring is held back, nothing is claimed or stored.
        assert rules.last_health is not None and rules.last_health.deferred
        assert count(session_factory, HealthScore) == 0 and count(session_factory, HealthRun) == 0
        drain(
            [ingest_worker, rules],
            lambda: count(session_factory, RawEvent) == len(old) + len(recent) and not rules.last_health.deferred,
            timeout=60,
        )
    finally:
        ingest_worker.close()
        rules.close()
    assert rules.last_health.ran and rules.last_health.scored == len(healthy)
    # Scored on the whole history: everyone logged in a day ago (100 points), not 30 days ago (0; no seats: left out).
    assert scores_of(session_factory, T0.date()) == {a: (100.0, "healthy") for a in healthy}


def test_a_replay_scores_the_past_days_as_the_daily_scoring_would_have_and_leaves_scored_days(session_factory, settings):
    # Both accounts: 5 of 10 seats log in every day of the four weeks before T0; steady
    # keeps on for two weeks after it, fading stops. The world is loaded at once, two weeks on.
    later = T0 + timedelta(days=14)
    events = [group(a, T0 - timedelta(days=60), seats=10) for a in ("steady", "fading")]
    events += [
        track(a, "login", T0 - timedelta(days=d), f"u{u}", f"{a}-{d}-{u}")
        for a in ("steady", "fading")
        for d in range(1, 28)
        for u in range(5)
    ]
    events += [track("steady", "login", T0 + timedelta(days=d), f"u{u}", f"steady+{d}-{u}") for d in range(14) for u in range(5)]
    ingest(session_factory, events, later)
    assert score_history(session_factory, later, T0.date(), later.date()).scored_days == []  # no model: nothing
    save_model(session_factory, MODEL, T0)
    assert run_health_day(session_factory, settings, T0).ran  # T0's day is scored already: the replay leaves it

    report = score_history(session_factory, later, (T0 - timedelta(days=1)).date(), later.date())
    days = [(T0 + timedelta(days=d)).date() for d in range(-1, 15)]
    assert report.scored_days == [d for d in days if d != T0.date()] and report.scored == 2 * 15 and report.model_version == 1
    # fading, as of each day's end: its last login T0 - 1 day; 5 of 10 seats in the 28-day window (50 points, weight 1);
    # days since: 1 on T0's day... under 3: 100 (weight 3), 3 to 13: 60, from 14: 0.
    fading = {d: scores_of(session_factory, d)["fading"] for d in days}
    assert fading[(T0 + timedelta(days=1)).date()] == (87.5, "healthy")
    assert fading[(T0 + timedelta(days=2)).date()] == (57.5, "watch")  # 3 days
    assert fading[(T0 + timedelta(days=12)).date()] == (57.5, "watch")  # 13 days
    assert fading[later.date()] == (12.5, "at_risk")  # 15 days: what the daily scoring stores (the test above)
    assert {scores_of(session_factory, d)["steady"] for d in days} == {(87.5, "healthy")}
    with session_factory() as s:
        row = s.get(HealthScore, ("fading", later.date()))
        assert (row.change_7d, row.change_30d) == (12.5 - 57.5, None)  # against the replayed day a week before
        runs = {r.day: r for r in s.scalars(select(HealthRun))}
        assert sorted(runs) == days and runs[later.date()].result == {"scored": 2, "pruned": 0, "replayed": True}
    # Claimed like daily scorings: neither a second replay nor the daily job scores them again.
    assert score_history(session_factory, later, T0.date(), later.date()).scored_days == []
    again = run_health_day(session_factory, settings, later + timedelta(hours=1))
    assert again.done and not again.ran


def test_scores_older_than_the_retention_are_deleted_by_the_daily_scoring(session_factory, settings):
    ingest(session_factory, [track("acme", "login", T0 - timedelta(days=1), "u1", "acme-1")], T0)
    assert not run_health_day(session_factory, settings, T0).done  # no model: nothing to score
    save_model(session_factory, MODEL, T0)
    assert run_health_day(session_factory, settings, T0).scored == 1
    kept = settings.model_copy(update={"health_score_retention_days": 31})
    assert run_health_day(session_factory, kept, T0 + timedelta(days=31)).pruned == 0  # 31 days old: kept
    report = run_health_day(session_factory, kept, T0 + timedelta(days=32))
    assert report.pruned == 1 and report.scored == 1
    with session_factory() as s:
        assert sorted(s.scalars(select(HealthScore.day))) == [(T0 + timedelta(days=d)).date() for d in (31, 32)]
        assert s.get(HealthRun, (T0 + timedelta(days=32)).date()).result["pruned"] == 1


def test_the_cli_saves_the_starter_model_and_scores_today(settings, session_factory):
    now = datetime.now(UTC)
    ingest(session_factory, [track(a, "login", now - timedelta(days=2), "u1", f"{a}-1") for a in ("acme", "globex")], now)
    r = run_cli(settings, "health", "score")
    assert r.returncode == 2 and "no health model" in r.stderr
    r = run_cli(settings, "health", "starter")
    assert r.returncode == 0 and "version 1" in r.stdout, r.stderr
    assert "left it as it is" in run_cli(settings, "health", "starter").stdout
    r = run_cli(settings, "health", "score")
    assert r.returncode == 0 and "scored 2 accounts" in r.stdout and "model version 1" in r.stdout, r.stderr
    assert "scored already" in run_cli(settings, "health", "score").stdout
    with session_factory() as s:
        [run] = s.scalars(select(HealthRun))
        assert run.result["scored"] == 2 and {r.account_id for r in s.scalars(select(HealthScore))} == {"acme", "globex"}
