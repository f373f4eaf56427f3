"""HTTP ingest, the accounts and users API, auth on every route, health and metrics."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.ingest.events.consumer import IngestWorker
from services.ingest.models import RawEvent
from shared.broker import free_port
from tests.conftest import T0, auth
from tests.helpers import drain, track

pytestmark = pytest.mark.integration


def raw_count(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(RawEvent))


async def test_http_event_to_kafka_to_database(api, topics, keys, session_factory, clock):
    batch = [track("acme", "login", T0 - timedelta(hours=1), "ada", "h1"),
             track("acme", "report_created", T0 - timedelta(minutes=30), "ada", "h2"),
             {"event_id": "bad", "account_id": "acme", "name": "login", "timestamp": "2026-03-02T10:00:00"},
             "not an object"]
    r = await api.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert [(e["index"], e["event_id"], e["reason"]) for e in body["rejected"]] == [
        (2, "bad", "timestamp_without_zone"), (3, None, "not_an_object")]

    worker = IngestWorker(topics, session_factory, clock)
    try:
        drain(worker, lambda: raw_count(session_factory) == 2)
    finally:
        worker.close()
    r = await api.get("/v1/accounts/acme/usage", params={"days": 7}, headers=auth(keys["ops"]))
    assert r.status_code == 200
    usage = r.json()
    assert usage["totals"] == {"events": 2, "by_event": {"login": 1, "report_created": 1}, "active_users": 1, "active_days": 1}
    assert usage["days"] == [{"day": "2026-03-02", "events": 2, "by_event": {"login": 1, "report_created": 1}, "active_users": 1}]
    r = await api.get("/v1/accounts/acme/users/ada/usage", headers=auth(keys["csm"]))
    assert r.json()["totals"]["active_days"] == 1 and set(r.json()["last_seen"]) == {"login", "report_created"}


async def test_http_single_event_and_errors(api, topics, keys):
    ok = await api.post("/v1/events", json=track("acme", "login", T0, "ada"), headers=auth(keys["ingest"]))
    assert ok.status_code == 202 and ok.json() == {"accepted": 1, "rejected": []}
    bad = await api.post("/v1/events", json={"event_id": "x"}, headers=auth(keys["ingest"]))
    assert bad.status_code == 422
    assert bad.json()["error"] == "validation_error"
    assert bad.json()["detail"]["rejected"][0]["reason"] == "missing_field"
    notjson = await api.post("/v1/events", content=b"{oops", headers={**auth(keys["ingest"]), "content-type": "application/json"})
    assert notjson.status_code == 422 and "not JSON" in notjson.json()["detail"]
    empty = await api.post("/v1/events", json=[], headers=auth(keys["ingest"]))
    assert empty.status_code == 422
    too_many = await api.post("/v1/events", json=[track("acme", "login", T0)] * 1001, headers=auth(keys["ingest"]))
    assert too_many.status_code == 413 and "1000" in too_many.json()["detail"]


async def test_http_ingest_answers_503_when_the_broker_is_down(settings, clock, session_factory, keys):
    import httpx

    from services.wiring.app import create_app

    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_bootstrap_timeout_ms": 500})
    app = create_app(down, clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.post("/v1/events", json=track("acme", "login", T0), headers=auth(keys["ingest"]))
    assert r.status_code == 503 and r.json()["error"] == "unavailable"


async def test_accounts_api_put_get_list_filter_and_paginate(api, keys):
    ops = auth(keys["ops"])
    for i, seg in enumerate(["smb", "smb", "enterprise", "smb", "mid_market"]):
        r = await api.put(f"/v1/accounts/a{i}", json={"name": f"A{i}", "segment": seg, "plan": "pro", "seats": 10 + i,
                                                       "lifecycle_stage": "onboarding", "renewal_date": "2026-09-01",
                                                       "industry": "retail"}, headers=ops)
        assert r.status_code == 200, r.text
    got = (await api.get("/v1/accounts/a2", headers=ops)).json()
    assert (got["segment"], got["seats"], got["renewal_date"], got["traits"]) == ("enterprise", 12, "2026-09-01", {"industry": "retail"})
    assert got["lifecycle_stage_changed_at"] is not None

    page1 = (await api.get("/v1/accounts", params={"segment": "smb", "limit": 2}, headers=ops)).json()
    assert [a["id"] for a in page1["items"]] == ["a0", "a1"] and page1["next_cursor"] == "a1"
    page2 = (await api.get("/v1/accounts", params={"segment": "smb", "limit": 2, "cursor": "a1"}, headers=ops)).json()
    assert [a["id"] for a in page2["items"]] == ["a3"] and page2["next_cursor"] is None

    r = await api.put("/v1/accounts/a0", json={"seats": "many"}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "seats"
    r = await api.get("/v1/accounts/nope", headers=ops)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = await api.get("/v1/accounts/a0/usage", params={"start": "2026-03-05", "end": "2026-03-01"}, headers=ops)
    assert r.status_code == 422 and "after end" in r.json()["detail"]


async def test_users_api(api, keys):
    ops = auth(keys["ops"])
    r = await api.put("/v1/accounts/acme/users/ada", json={"email": "ada@acme.test", "role": "champion", "timezone": "Europe/Paris"}, headers=ops)
    assert r.status_code == 200 and r.json()["role"] == "champion"
    await api.put("/v1/accounts/acme/users/bob", json={"role": "member"}, headers=ops)
    r = await api.get("/v1/accounts/acme/users", params={"role": "champion"}, headers=ops)
    assert [u["id"] for u in r.json()["items"]] == ["ada"]
    r = await api.put("/v1/accounts/acme/users/ada", json={"timezone": "Nowhere/Land"}, headers=ops)
    assert r.status_code == 422
    assert (await api.get("/v1/accounts/acme/users/zed", headers=ops)).status_code == 404


def _v1_routes(app):
    """Every /v1 operation, from the OpenAPI document (so a new route cannot escape this test)."""
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/v1/"):
            for method in ops:
                yield method.upper(), path


ROLE_OF = {("POST", "/v1/events"): {"ingest"},
           ("PUT", "/v1/accounts/{account_id}"): {"ops", "ingest"},
           ("PUT", "/v1/accounts/{account_id}/users/{user_id}"): {"ops", "ingest"},
           # Rules are authored by CS Ops; signals are readable by ops and csm (the default).
           **{(m, p): {"ops"} for m, p in [
               ("POST", "/v1/rules/validate"), ("POST", "/v1/rules"), ("GET", "/v1/rules"), ("GET", "/v1/rules/{rule_id}"),
               ("PUT", "/v1/rules/{rule_id}"), ("DELETE", "/v1/rules/{rule_id}"), ("POST", "/v1/rules/{rule_id}/enable"),
               ("POST", "/v1/rules/{rule_id}/disable"), ("GET", "/v1/rules/{rule_id}/versions"),
               ("GET", "/v1/rules/{rule_id}/versions/{version}"), ("GET", "/v1/rules/{rule_id}/audit"),
               ("POST", "/v1/rules/test"), ("POST", "/v1/rules/{rule_id}/test"), ("POST", "/v1/rules/backtest")]},
           # Outreach: in-app messages are fetched and marked read by the product's backend
           # with its ingest key; everything else in outreach is CS Ops authoring (ops).
           ("GET", "/v1/accounts/{account_id}/messages"): {"ingest", "ops"},
           ("POST", "/v1/accounts/{account_id}/messages/{message_id}/read"): {"ingest", "ops"},
           # Jobs: a role sees the jobs of the kinds it may run (backtests: ops).
           **{(m, p): {"ops"} for m, p in [("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"),
                                           ("POST", "/v1/jobs/{job_id}/cancel")]}}
OPS_ONLY_PREFIXES = ("/v1/templates", "/v1/playbooks", "/v1/messages", "/v1/suppressions", "/v1/dev/")


async def test_every_v1_route_requires_a_key_and_the_right_role(api, keys):
    routes = list(_v1_routes(api.app))
    assert len(routes) >= 8
    for method, template in routes:
        path = template.replace("{account_id}", "acme").replace("{user_id}", "ada")
        r = await api.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        r = await api.request(method, path, headers=auth("tl_deadbeef_forged"))
        assert r.status_code == 401, (method, path)
        default = {"ops"} if template.startswith(OPS_ONLY_PREFIXES) or template.endswith("/erase") else {"ops", "csm"}
        allowed = ROLE_OF.get((method, template), default)
        for role in {"ingest", "ops", "csm"} - allowed:
            r = await api.request(method, path, headers=auth(keys[role]))
            assert r.status_code == 403, (method, path, role)
            assert r.json()["error"] == "forbidden" and role in r.json()["detail"]


async def test_revoked_key_is_refused(api, keys, session_factory, clock):
    from shared.auth import revoke_key
    from shared.models import ApiKey

    with session_factory.begin() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.role == "ops"))
        revoke_key(s, key_id, clock.now())
    r = await api.get("/v1/accounts", headers=auth(keys["ops"]))
    assert r.status_code == 401


async def test_health_readiness_metrics_and_openapi(api, keys, topics):
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    await api.post("/v1/events", json=[track("acme", "login", T0), {"bad": 1}], headers=auth(keys["ingest"]))
    assert (await api.get("/metrics")).status_code == 401  # TOUCHLINE_METRICS_PORT=0: behind an admin key
    assert (await api.get("/metrics", headers=auth(keys["ops"]))).status_code == 403
    metrics = (await api.get("/metrics", headers=auth(keys["admin"]))).text
    assert 'touchline_http_events_total{outcome="accepted"}' in metrics
    spec = (await api.get("/openapi.json")).json()
    assert "Event" in spec["components"]["schemas"]
    post = spec["paths"]["/v1/events"]["post"]
    assert {"202", "401", "403", "413", "422", "503"} <= set(post["responses"])


async def test_readiness_reports_a_broker_that_is_down(settings, clock, session_factory):
    import httpx

    from services.wiring.app import create_app

    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    app = create_app(down, clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok" and r.json()["checks"]["broker"].startswith("error")
