"""Validation of the health model against contract outcomes (docs/health.md,
"Validation") on both databases with the simulated clock: a constructed world whose
scores, AUC and per-label and per-band churn rates are worked out by hand below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.helpers import T0, auth, run_jobs, track
from tests.support.rules import ingest

# Two components: logins in the 7 days to the scoring day (0 -> 0 points, 10 -> 100,
# linear) and reports in the same days (every account has 5: 50 points). Weights 1 and
# 1, so the score is (10 x logins + 50) / 2.
MODEL = {
    "name": "Validated",
    "labels": {"healthy": 65, "watch": 40},
    "components": [
        {
            "id": "logins",
            "measure": {"metric": "count", "event": "login", "window": "7d"},
            "weight": 1,
            "linear": {"from": {"value": 0, "points": 0}, "to": {"value": 10, "points": 100}},
        },
        {
            "id": "reports",
            "measure": {"metric": "count", "event": "report_created", "window": "7d"},
            "weight": 1,
            "linear": {"from": {"value": 0, "points": 0}, "to": {"value": 10, "points": 100}},
        },
    ],
}
EFFECTIVE = (T0 - timedelta(days=10)).date()  # every contract outcome measured takes effect that day
SCORED_ON = EFFECTIVE - timedelta(days=90)  # the default horizon
# account: (logins in the week to SCORED_ON, contract outcome) -> score, label
WORLD = {
    "a1": (1, "churned"),  # (10 + 50) / 2 = 30, at_risk
    "a2": (5, "churned"),  # (50 + 50) / 2 = 50, watch
    "a3": (5, "renewed"),  # 50, watch
    "a4": (8, "renewed"),  # (80 + 50) / 2 = 65, healthy (from 65)
    "a5": (9, "expanded"),  # 70, healthy
}
# The AUC, by hand: churned {30, 50} against stayed {50, 65, 70}: 30 is below all three
# (3); 50 ties 50 (0.5) and is below 65 and 70 (2): 5.5 of 6 pairs. The first test adds a
# churned a6 scoring 0, below all three stayed: 8.5 of 9.
AUC = round(5.5 / 6, 4)
AUC_WITH_A6 = round(8.5 / 9, 4)


def seed(session_factory) -> None:
    at = datetime.combine(SCORED_ON - timedelta(days=2), datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    events = []
    for a, (logins, _kind) in WORLD.items():
        events += [track(a, "login", at + timedelta(minutes=i), "u1", f"{a}-l{i}") for i in range(logins)]
        events += [track(a, "report_created", at + timedelta(minutes=i), "u1", f"{a}-r{i}") for i in range(5)]
        # Logins after the scoring day do not count: the replay reads history as it stood.
        events += [track(a, "login", at + timedelta(days=5, minutes=i), "u1", f"{a}-late{i}") for i in range(10)]
    events.append(track("a6", "login", at, "u1", "a6-l0"))
    ingest(session_factory, events, T0)


async def record(api, ops, account_id: str, kind: str, day) -> None:
    body = {"kind": kind, "arr_before": 1000, "effective_date": day.isoformat()}
    if kind != "churned":
        body["arr_after"] = 2000 if kind == "expanded" else 1000
    r = await api.post(f"/v1/accounts/{account_id}/contract-outcomes", json=body, headers=ops)
    assert r.status_code == 201, r.text


async def validate(api, ops, body, settings, session_factory, clock, days: int = 1) -> dict:
    r = await api.post("/v1/health/validation", json=body, headers=ops)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    assert run_jobs(settings, session_factory, clock) == 1
    job = (await api.get(r.headers["location"], headers=ops)).json()
    assert job["state"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] == days  # scoring days
    return job["result"]


async def test_validation_reports_auc_rates_per_label_and_band_and_what_each_component_adds(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    seed(session_factory)
    assert (await api.put("/v1/health/model", json=MODEL, headers=ops)).status_code == 200
    for a, (_logins, kind) in WORLD.items():
        await record(api, ops, a, kind, EFFECTIVE)
    # Effective 90 days from today: scored today, so measured (a cancellation notice ahead
    # of the renewal); a6 sent nothing in the week to today, so it scores 0.
    await record(api, ops, "a6", "churned", T0.date() + timedelta(days=90))
    # 91 days ahead: its scoring day is tomorrow, so not measured yet.
    await record(api, ops, "a2", "renewed", T0.date() + timedelta(days=91))

    # By default every contract outcome whose scoring day has come: a6's too.
    result = await validate(api, ops, {}, settings, session_factory, clock, days=2)
    assert (result["outcomes"], result["churned"], result["auc"]) == (6, 3, AUC_WITH_A6)
    scores = {s["account_id"]: (s["score"], s["label"], s["scored_on"]) for s in result["samples"]}
    assert scores["a6"] == (0.0, "at_risk", T0.date().isoformat())

    result = await validate(api, ops, {"end": EFFECTIVE.isoformat()}, settings, session_factory, clock)
    assert (result["outcomes"], result["scored"], result["churned"], result["stayed"], result["model_version"]) == (5, 5, 2, 3, 1)
    scores = {s["account_id"]: (s["score"], s["label"], s["scored_on"]) for s in result["samples"]}
    assert scores == {
        "a1": (30.0, "at_risk", SCORED_ON.isoformat()),
        "a2": (50.0, "watch", SCORED_ON.isoformat()),
        "a3": (50.0, "watch", SCORED_ON.isoformat()),
        "a4": (65.0, "healthy", SCORED_ON.isoformat()),
        "a5": (70.0, "healthy", SCORED_ON.isoformat()),
    }
    assert result["auc"] == AUC
    # Churn rates with their Wilson 95% intervals, by hand (z = 1.96):
    # 1 of 1: centre (1 + z²/2) / (1 + z²) = 0.6033, half z·sqrt(z²/4) / (1 + z²) = 0.3967 -> [0.2065, 1];
    # 1 of 2: centre 0.5, half z·sqrt(1/8 + z²/16) / (1 + z²/2) = 0.4055 -> [0.0945, 0.9055];
    # 0 of 2: centre (z²/4) / (1 + z²/2) = half -> [0, 0.6576].
    assert result["by_label"] == [
        {"label": "healthy", "outcomes": 2, "churned": 0, "churn_rate": 0.0, "ci95": [0.0, 0.6576]},
        {"label": "watch", "outcomes": 2, "churned": 1, "churn_rate": 0.5, "ci95": [0.0945, 0.9055]},
        {"label": "at_risk", "outcomes": 1, "churned": 1, "churn_rate": 1.0, "ci95": [0.2065, 1.0]},
    ]
    assert [(b["from"], b["to"], b["outcomes"], b["churned"], b["ci95"]) for b in result["by_band"]] == [
        (0, 20, 0, 0, None),
        (20, 40, 1, 1, [0.2065, 1.0]),
        (40, 60, 2, 1, [0.0945, 0.9055]),
        (60, 80, 2, 0, [0.0, 0.6576]),
        (80, 100, 0, 0, None),
    ]
    # Without logins every account scores 50: a coin (0.5). Without reports the order is
    # the same: nothing lost.
    assert result["components"] == [
        {"id": "logins", "auc_without": 0.5, "adds": round(AUC - 0.5, 4)},
        {"id": "reports", "auc_without": AUC, "adds": 0.0},
    ]

    # A candidate edit, validated before it is saved: reports alone separate nothing.
    candidate = {**MODEL, "components": [MODEL["components"][1]]}
    result = await validate(api, ops, {"model": candidate, "end": EFFECTIVE.isoformat()}, settings, session_factory, clock)
    assert result["candidate"] is True and result["auc"] == 0.5 and result["compared_with"]["version"] == 1
    assert result["compared_with"]["auc"] == AUC
    assert result["diff"]["auc"] == round(0.5 - AUC, 4)
    assert result["diff"]["model"] == {
        "changed_fields": ["components"],
        "components_added": [],
        "components_removed": ["logins"],
        "components_changed": [],
    }
    # Every account scores 50 (watch) under the candidate: a1, a4 and a5 change label.
    assert result["diff"]["relabelled"] == 3
    assert (await api.get("/v1/health/model", headers=ops)).json()["version"] == 1  # nothing saved


async def test_reversed_and_separated_worlds(api, keys, session_factory, settings, clock):
    """The same world with the contract outcomes chosen so the score separates them
    perfectly (1.0), then backwards (0.0), over a 30-day horizon."""
    ops = auth(keys["ops"])
    seed(session_factory)
    assert (await api.put("/v1/health/model", json=MODEL, headers=ops)).status_code == 200
    # Scored 30 days before: SCORED_ON + 60 days ahead of it, so logins are the week to SCORED_ON again.
    effective = SCORED_ON + timedelta(days=30)
    for a, kind in {"a1": "churned", "a2": "renewed", "a4": "renewed"}.items():
        await record(api, ops, a, kind, effective)
    body = {"horizon_days": 30, "start": effective.isoformat(), "end": effective.isoformat()}
    assert (await validate(api, ops, body, settings, session_factory, clock))["auc"] == 1.0
    for a, kind in {"a5": "churned", "a3": "renewed"}.items():
        await record(api, ops, a, kind, effective + timedelta(days=1))
    body = {"horizon_days": 31, "start": (effective + timedelta(days=1)).isoformat(), "end": (effective + timedelta(days=1)).isoformat()}
    assert (await validate(api, ops, body, settings, session_factory, clock))["auc"] == 0.0


async def test_bad_validation_requests_are_refused_with_the_path(api, keys, clock):
    ops = auth(keys["ops"])
    r = await api.post("/v1/health/validation", json={}, headers=ops)
    assert r.status_code == 404 and "PUT /v1/health/model" in r.json()["detail"]
    bad_model = {"name": "Bad", "components": [{"id": "x", "measure": {"metric": "logins"}, "weight": 1, "bands": [{"points": 0}]}]}
    r = await api.post("/v1/health/validation", json={"model": bad_model}, headers=ops)
    assert r.status_code == 422
    assert [e["pointer"] for e in r.json()["detail"]] == ["/model/components/0/measure/metric"]
    # Contract outcomes up to horizon_days ahead are scored today; one day more is refused.
    ahead = (T0 + timedelta(days=31)).date().isoformat()
    r = await api.post("/v1/health/validation", json={"model": MODEL, "end": ahead, "horizon_days": 30}, headers=ops)
    assert r.status_code == 422 and [e["pointer"] for e in r.json()["detail"]] == ["/end"]
    ok = await api.post("/v1/health/validation", json={"model": MODEL, "end": ahead, "horizon_days": 31}, headers=ops)
    assert ok.status_code == 202
    r = await api.post("/v1/health/validation", json={"model": MODEL, "start": "2026-03-01", "end": "2026-02-01"}, headers=ops)
    assert [e["pointer"] for e in r.json()["detail"]] == ["/start"]
    r = await api.post("/v1/health/validation", json={"horizon_days": 0, "model": MODEL}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "horizon_days"]
