"""The rules and signals API over real HTTP (ASGI): validation that teaches,
versioning, enable/disable/delete, audit, dry-run, backtest with a diff, signals."""

from __future__ import annotations

from datetime import timedelta

from services.rules.evaluation.service import run_tick
from shared.pagination import encode_cursor
from tests.support.helpers import T0, auth, run_jobs, track
from tests.support.rules import group, ingest

NO_LOGIN = {
    "id": "no-login-14d",
    "name": "No login in 14 days",
    "kind": "churn_risk",
    "severity": "high",
    "trigger": {"schedule": {"every": "1h"}},
    "condition": {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 14}]},
    "cooldown": "14d",
}


async def test_validate_answers_pointers_and_canonical_form(api, keys):
    ops = auth(keys["ops"])
    r = await api.post("/v1/rules/validate", json=NO_LOGIN, headers=ops)
    assert r.status_code == 200 and r.json()["rule"]["cooldown"] == "14d"
    bad = {**NO_LOGIN, "condition": {"all": [{"metric": "logins", "op": ">=", "value": 1}]}}
    r = await api.post("/v1/rules/validate", json=bad, headers=ops)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error"
    assert body["detail"][0]["pointer"] == "/condition/all/0/metric" and "known metrics" in body["detail"][0]["message"]
    r = await api.post("/v1/rules", json={**NO_LOGIN, "enabled": "yes"}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/enabled"


async def test_rule_lifecycle_versions_and_audit(api, keys):
    ops = auth(keys["ops"])
    r = await api.post("/v1/rules", json=NO_LOGIN, headers=ops)
    assert r.status_code == 201, r.text
    assert (r.json()["current_version"], r.json()["enabled"], r.json()["created_by"]) == (1, False, "ops:test ops")
    assert (await api.post("/v1/rules", json=NO_LOGIN, headers=ops)).status_code == 409

    changed = {**NO_LOGIN, "condition": {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 21}]}}
    r = await api.put("/v1/rules/no-login-14d", json=changed, headers=ops)
    assert r.status_code == 200 and r.json()["current_version"] == 2
    r = await api.put("/v1/rules/no-login-14d", json=changed, headers=ops)  # no change, no new version
    assert r.json()["current_version"] == 2
    r = await api.put("/v1/rules/no-login-14d", json={**changed, "id": "other"}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/id"
    versions = (await api.get("/v1/rules/no-login-14d/versions", headers=ops)).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    page = (await api.get("/v1/rules/no-login-14d/versions", params={"limit": 1}, headers=ops)).json()
    assert [v["version"] for v in page["items"]] == [1] and page["next_cursor"] == "1"
    page = (await api.get("/v1/rules/no-login-14d/versions", params={"limit": 1, "cursor": "1"}, headers=ops)).json()
    assert [v["version"] for v in page["items"]] == [2]
    v1 = (await api.get("/v1/rules/no-login-14d/versions/1", headers=ops)).json()
    assert v1["definition"]["condition"]["all"][0]["value"] == 14
    assert (await api.get("/v1/rules/no-login-14d/versions/9", headers=ops)).status_code == 404

    assert (await api.post("/v1/rules/no-login-14d/enable", headers=ops)).json()["enabled"] is True
    listed = (await api.get("/v1/rules", params={"enabled": True, "kind": "churn_risk"}, headers=ops)).json()
    assert [x["id"] for x in listed["items"]] == ["no-login-14d"]
    assert (await api.post("/v1/rules/no-login-14d/disable", headers=ops)).json()["enabled"] is False
    r = await api.delete("/v1/rules/no-login-14d", headers=ops)
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    assert (await api.get("/v1/rules", headers=ops)).json()["items"] == []
    assert len((await api.get("/v1/rules", params={"include_deleted": True}, headers=ops)).json()["items"]) == 1
    assert (await api.get("/v1/rules/no-login-14d/versions/2", headers=ops)).status_code == 200  # old versions stay readable
    audit = (await api.get("/v1/rules/no-login-14d/audit", headers=ops)).json()["items"]
    assert [(a["action"], a["version"]) for a in audit] == [("create", 1), ("update", 2), ("enable", 2), ("disable", 2), ("delete", 2)]
    assert audit[1]["details"]["changed_fields"] == ["condition"] and {a["actor"] for a in audit} == {"ops:test ops"}
    assert (await api.get("/v1/rules/nope", headers=ops)).status_code == 404
    # Issue 18: a number cursor past the integer column's range is a 422 (PostgreSQL
    # answered 500, "integer out of range"; SQLite past 2**63 too); the last one in range pages on.
    for path in ("/v1/rules/no-login-14d/versions", "/v1/rules/no-login-14d/audit"):
        for cursor in ("2147483648", "9999999999", "44496976212199556438"):
            r = await api.get(path, params={"cursor": cursor}, headers=ops)
            assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, cursor, r.text)
        r = await api.get(path, params={"cursor": "2147483647"}, headers=ops)
        assert r.status_code == 200 and r.json()["items"] == []


async def test_dry_run_explains_predicate_by_predicate(api, keys, session_factory, clock):
    ingest(
        session_factory,
        [
            group("acme", T0 - timedelta(days=60), segment="smb", seats=4),
            track("acme", "login", T0 - timedelta(days=20), "ada", "l1"),
            track("acme", "report_created", T0 - timedelta(days=1), "ada", "r1", report_type="funnel"),
        ],
        T0,
    )
    ops = auth(keys["ops"])
    await api.post("/v1/rules", json={**NO_LOGIN, "audience": {"segment": ["smb"]}}, headers=ops)
    r = await api.post("/v1/rules/no-login-14d/test", params={"account_id": "acme"}, headers=ops)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["would_fire"] is True and out["version"] == 1
    assert out["condition"]["all"][0] == {"predicate": "days_since(login)", "value": 20.0, "op": ">=", "threshold": 14, "result": True}
    assert out["audience"] == {"match": True, "checks": [{"filter": "segment", "value": "smb", "allowed": ["smb"], "result": True}]}

    unsaved = {
        "id": "funnel-fan",
        "name": "Funnel fan",
        "kind": "expansion",
        "trigger": {"events": ["report_created"]},
        "audience": {"segment": ["enterprise"]},
        "condition": {
            "all": [
                {"field": "event.properties.report_type", "op": "==", "value": "funnel"},
                {"metric": "seat_utilisation", "window": "28d", "op": ">=", "value": 90},
            ]
        },
    }
    r = await api.post("/v1/rules/test", params={"account_id": "acme"}, json={"rule": unsaved}, headers=ops)
    out = r.json()
    assert out["would_fire"] is False and out["version"] is None
    assert out["trigger"]["source"] == "latest stored event" and out["trigger"]["event"]["event_id"] == "r1"
    assert "not in the audience (segment)" in out["summary"] and "seat_utilisation(28d) = 25.0, needs >= 90" in out["summary"]
    r = await api.post(
        "/v1/rules/test",
        params={"account_id": "acme"},
        headers=ops,
        json={"rule": unsaved, "event": {"name": "report_created", "properties": {"report_type": "table"}}},
    )
    assert r.json()["condition"]["all"][0]["value"] == "table"
    assert (await api.post("/v1/rules/no-login-14d/test", params={"account_id": "ghost"}, headers=ops)).status_code == 404


async def _backtest(api, headers, body, settings, session_factory, clock) -> dict:
    """Queue a backtest (202 + Location), run the jobs worker, read the job's result."""
    r = await api.post("/v1/rules/backtest", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{job['id']}" == job["url"]
    assert run_jobs(settings, session_factory, clock) == 1
    r = await api.get(r.headers["location"], headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    return r.json()


async def test_backtest_and_diff_against_the_current_version(api, keys, session_factory, settings, clock):
    evs = []
    for d in range(40):
        ts = T0 - timedelta(days=40 - d)
        evs.append(track("steady", "login", ts, "u1", f"s{d}"))
        if d < 20:
            evs.append(track("fades", "login", ts, "u1", f"f{d}"))
        if d < 30:
            evs.append(track("slows", "login", ts, "u1", f"w{d}"))
    ingest(session_factory, evs, T0)
    ops = auth(keys["ops"])
    await api.post("/v1/rules", json=NO_LOGIN, headers=ops)
    start, end = (T0 - timedelta(days=14)).date().isoformat(), T0.date().isoformat()
    job = await _backtest(api, ops, {"rule_id": "no-login-14d", "start": start, "end": end}, settings, session_factory, clock)
    assert job["progress"] == {"done": 15, "total": 15, "message": "rule: day 15/15"}
    out = job["result"]
    assert out["distinct_accounts"] == 1 and out["accounts"] == ["fades"] and out["total_firings"] == 1
    assert sum(d["firings"] for d in out["per_day"]) == 1 and sum(w["firings"] for w in out["per_week"]) == 1
    assert out["samples"][0]["evidence"]["days_since(login)"]["value"] == 14

    edited = {**NO_LOGIN, "condition": {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 7}]}}
    job = await _backtest(
        api, ops, {"rule": edited, "start": start, "end": end, "compare_with_current": True}, settings, session_factory, clock
    )
    assert job["progress"]["done"] == job["progress"]["total"] == 30  # both versions replayed
    diff = job["result"]["diff"]
    assert (diff["newly_firing"], diff["stop_firing"], diff["both"]) == (["slows"], [], 1)
    # "fades" fires under both, the edit (7 days) a week before the saved version (14 days).
    assert [(a["account_id"], a["days_earlier"]) for a in diff["first_firing"]["accounts"]] == [("fades", 7)]
    assert sum(d["edited"] for d in diff["per_day"]) == job["result"]["total_firings"]
    # Checked before it is queued: a bad period is a 422 now, an unknown rule a 404.
    r = await api.post("/v1/rules/backtest", json={"rule_id": "no-login-14d", "start": end, "end": start}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/end"
    r = await api.post("/v1/rules/backtest", json={"rule_id": "ghost", "start": start, "end": end}, headers=ops)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert run_jobs(settings, session_factory, clock) == 0


async def test_signals_api_filters_and_pages(api, keys, session_factory, settings, clock):
    ingest(session_factory, [track(f"a{i}", "login", T0 - timedelta(days=30), "u", f"e{i}") for i in range(5)], T0)
    ops = auth(keys["ops"])
    await api.post("/v1/rules", json={**NO_LOGIN, "enabled": True}, headers=ops)
    report = run_tick(session_factory, settings, clock.now())
    assert len(report.signals) == 5
    csm = auth(keys["csm"])
    page1 = (await api.get("/v1/signals", params={"limit": 2, "kind": "churn_risk"}, headers=csm)).json()
    page2 = (await api.get("/v1/signals", params={"limit": 2, "cursor": page1["next_cursor"]}, headers=csm)).json()
    page3 = (await api.get("/v1/signals", params={"limit": 2, "cursor": page2["next_cursor"]}, headers=csm)).json()
    ids = [s["account_id"] for p in (page1, page2, page3) for s in p["items"]]
    assert sorted(ids) == [f"a{i}" for i in range(5)] and page3["next_cursor"] is None
    assert page1["items"][0]["evidence"]["days_since(login)"]["value"] == 30
    mine = (await api.get("/v1/accounts/a3/signals", headers=csm)).json()["items"]
    assert [(s["account_id"], s["rule_id"], s["rule_version"]) for s in mine] == [("a3", "no-login-14d", 1)]
    assert (await api.get(f"/v1/signals/{mine[0]['signal_id']}", headers=ops)).json()["kind"] == "churn_risk"
    assert (await api.get("/v1/signals", params={"kind": "expansion"}, headers=ops)).json()["items"] == []
    later = (T0 + timedelta(seconds=1)).isoformat()
    assert (await api.get("/v1/signals", params={"since": later}, headers=ops)).json()["items"] == []
    assert (await api.get("/v1/signals", params={"cursor": "garbage"}, headers=ops)).status_code == 422
    # Issue 18: times and cursors at the edges of what the database can compare.
    for params in (
        {"since": "9999-12-31T23:59:59-14:00"},  # past 9999 in UTC: no value to compare (was a 500)
        {"until": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC (was a 500)
        {"since": "2026-03-02T00:00:00"},  # no zone
        {"cursor": encode_cursor("0001-01-01T00:00:00+14:00", "x")},
        {"cursor": encode_cursor(10**20, "x")},
        {"cursor": encode_cursor(None, "x")},  # a null the query compared as `< None` (was a 500)
        {"cursor": encode_cursor("2026-03-02T12:00:00+00:00", None)},
    ):
        r = await api.get("/v1/signals", params=params, headers=ops)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (params, r.text)
    r = await api.get("/v1/signals", params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"}, headers=ops)
    assert r.status_code == 200 and len(r.json()["items"]) == 5
