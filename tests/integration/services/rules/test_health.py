"""Customer health on both databases with the simulated clock: the model over the API
(validated, versioned, audited), scoring on demand with its explanation, a model version
change, the change over 7 days, and the accounts listed by health."""

from __future__ import annotations

from datetime import timedelta

from tests.support.helpers import T0, auth, track
from tests.support.rules import group, ingest

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
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    seed(session_factory)
    r = await api.post("/v1/accounts/acme/health", headers=ops)
    assert r.status_code == 404 and "PUT /v1/health/model" in r.json()["detail"]
    await api.put("/v1/health/model", json=MODEL, headers=ops)
    assert (await api.post("/v1/accounts/nobody/health", headers=ops)).status_code == 404

    r = await api.post("/v1/accounts/acme/health", headers=csm)
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

    r = await api.get("/v1/accounts/acme/health", headers=csm)
    body = r.json()
    assert body["current"]["score"] == 55.0 and body["current"]["components"][0]["band"] == "3 to < 14"
    assert [(p["day"], p["score"], p["label"]) for p in body["history"]] == [
        ((T0 + timedelta(days=7)).date().isoformat(), 55.0, "watch"),
        (T0.date().isoformat(), 87.5, "healthy"),
    ]
    assert (await api.get("/v1/accounts/acme/health?days=3", headers=csm)).json()["history"][0]["score"] == 55.0
    assert (await api.get("/v1/accounts/nobody/health", headers=csm)).json() == {"account_id": "nobody", "current": None, "history": []}

    # The accounts by health on the latest scored day, lowest first; a page at a time.
    r = await api.get("/v1/health/accounts?limit=1", headers=csm)
    page = r.json()
    assert page["day"] == (T0 + timedelta(days=7)).date().isoformat()
    assert [(i["account_id"], i["score"]) for i in page["items"]] == [("fading", 10.0)]
    r = await api.get(f"/v1/health/accounts?limit=1&cursor={page['next_cursor']}", headers=csm)
    assert [i["account_id"] for i in r.json()["items"]] == ["acme"]
    r = await api.get("/v1/health/accounts?order=desc", headers=csm)
    assert [i["account_id"] for i in r.json()["items"]] == ["acme", "fading"] and r.json()["next_cursor"] is None
    r = await api.get("/v1/health/accounts?label=at_risk", headers=csm)
    assert [i["account_id"] for i in r.json()["items"]] == ["fading"]
    assert (await api.get("/v1/health/accounts?cursor=nonsense", headers=csm)).status_code == 422
