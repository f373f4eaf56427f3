"""The HTTP edge: every error in the {"error", "detail"} shape, body and depth caps,
numbers the database cannot store, NaN and Infinity, rule size limits, the OpenAPI
document telling the truth about all of it, one pagination shape, offline docs and
metrics behind a key."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.support.helpers import T0, auth

HUGE = 10**30


def event(**extra) -> dict:
    return {"event_id": str(uuid.uuid4()), "account_id": "acme", "name": "login", "timestamp": T0.isoformat(), **extra}


async def test_a_50_mb_event_and_a_51_mb_batch_are_413_in_the_error_shape(api, keys, topics):
    ingest = auth(keys["ingest"])
    r = await api.post("/v1/events", json=event(properties={"blob": "x" * (50 * 1024 * 1024)}), headers=ingest)
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "payload_too_large" and "TOUCHLINE_MAX_REQUEST_BYTES" in r.json()["detail"]
    batch = [event(properties={"blob": "x" * 60_000}) for _ in range(900)]
    r = await api.post("/v1/events", json=batch, headers=ingest)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    async def chunks():  # no Content-Length: the cap holds while the body streams in
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    r = await api.post("/v1/events", content=chunks(), headers={**ingest, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


async def test_deep_json_is_422_not_a_recursion_error(api, keys, topics):
    deep = '{"a":' * 1000 + "1" + "}" * 1000
    body = json.dumps(event())[:-1] + ', "properties": ' + deep + "}"
    r = await api.post("/v1/events", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "too_deep" and "TOUCHLINE_MAX_JSON_DEPTH" in r.json()["detail"]
    # Under the body cap but over the event's own limit: that event is rejected, its batch goes on.
    r = await api.post(
        "/v1/events", json=[event(properties=json.loads('{"a":' * 20 + "1" + "}" * 20)), event()], headers=auth(keys["ingest"])
    )
    assert r.status_code == 202 and r.json()["accepted"] == 1
    assert r.json()["rejected"][0]["reason"] == "invalid_field" and "limit is 16" in r.json()["rejected"][0]["detail"]
    r = await api.post(
        "/v1/rules/validate",
        content='{"condition":' + "[" * 5000 + "]" * 5000 + "}",
        headers={**auth(keys["ops"]), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"] == "too_deep"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_nan_and_infinity_are_rejected_in_event_properties(api, keys, topics, literal):
    body = json.dumps(event())[:-1] + ', "properties": {"score": ' + literal + "}}"
    r = await api.post("/v1/events", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["rejected"][0]["reason"] == "invalid_json"


async def test_numbers_the_database_cannot_store_are_422_never_500(api, keys, topics):
    ops = auth(keys["ops"])
    r = await api.put("/v1/accounts/acme", json={"seats": HUGE}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    assert (await api.put("/v1/accounts/acme", json={"seats": 2**31 - 1}, headers=ops)).status_code == 200
    group = {"event_id": "g", "type": "group", "account_id": "acme", "timestamp": T0.isoformat(), "traits": {"seats": HUGE}}
    r = await api.post("/v1/events", json=group, headers=auth(keys["ingest"]))
    assert r.status_code == 422 and r.json()["detail"]["rejected"][0]["reason"] == "invalid_field"
    assert (await api.get(f"/v1/rules/some-rule/versions/{HUGE}", headers=ops)).status_code == 422
    assert (await api.get("/v1/playbooks/some-playbook", params={"version": HUGE}, headers=ops)).status_code == 422


def _predicate(i: int) -> dict:
    return {"metric": "count", "event": "login", "window": "7d", "op": ">=", "value": i}


RULE = {"id": "r", "name": "R", "kind": "churn_risk", "trigger": {"schedule": {"every": "1h"}}}


@pytest.mark.parametrize(
    "condition,limit",
    [
        ({"all": [_predicate(i) for i in range(10_000)]}, "max_predicates"),
        ({"any": [{"all": [_predicate(i) for i in range(60)]}, {"all": [_predicate(i) for i in range(60)]}]}, "max_predicates"),
        (json.loads('{"not":' * 9 + json.dumps(_predicate(1)) + "}" * 9), "max_depth"),
        ({"all": [{"field": "account.plan", "op": "in", "value": [str(i) for i in range(501)]}]}, "max_list_items"),
        ({"all": [{**_predicate(1), "value": 10**3999}]}, "max_number"),
    ],
)
async def test_rule_size_limits_are_422_naming_the_limit(api, keys, condition, limit):
    body = json.dumps({**RULE, "condition": condition})
    r = await api.post("/v1/rules/validate", content=body, headers={**auth(keys["ops"]), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["limit"] == limit and limit in r.json()["detail"][0]["message"]


async def test_every_error_has_the_error_shape(api, keys):
    ops = auth(keys["ops"])
    for r, status, code in [
        (await api.get("/v1/nowhere", headers=ops), 404, "not_found"),
        (await api.get("/nowhere"), 404, "not_found"),
        (await api.delete("/v1/accounts", headers=ops), 405, "method_not_allowed"),
        (
            await api.put("/v1/accounts/acme", content=b"\xff\xfe{", headers={**ops, "content-type": "application/json"}),
            422,
            "invalid_json",
        ),
        (await api.put("/v1/accounts/acme", content=b"{oops", headers={**ops, "content-type": "application/json"}), 422, "invalid_json"),
        (await api.post("/v1/rules/validate", content=b"\xff", headers={**ops, "content-type": "application/json"}), 422, "invalid_json"),
        # PostgreSQL cannot hold (or even compare) a NUL: it used to be a 500 there.
        (await api.put("/v1/accounts/a%00b", json={}, headers=ops), 422, "nul_character"),
        (await api.get("/v1/accounts", params={"segment": "a\x00"}, headers=ops), 422, "nul_character"),
        (await api.put("/v1/accounts/acme", json={"name": "a\x00"}, headers=ops), 422, "nul_character"),
    ]:
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
        assert set(r.json()) == {"error", "detail"}


async def test_the_openapi_document_lists_the_real_errors(api):
    spec = (await api.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert {"413", "422"} <= set(op["responses"]), (method, path)
            for status in ("413", "422"):
                if status in op["responses"]:
                    assert op["responses"][status]["content"]["application/json"]["schema"] == error_ref, (method, path)


async def test_docs_are_served_without_a_cdn_and_cannot_be_framed(api):
    for page in ("/docs", "/redoc"):
        r = await api.get(page)
        assert "cdn" not in r.text.lower() and "/docs-assets/" in r.text
        assert r.headers["x-frame-options"] == "DENY" and r.headers["content-security-policy"] == "frame-ancestors 'none'"
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = await api.get(f"/docs-assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000, asset
        assert b"cdn.redoc.ly" not in r.content and b"https://cdn." not in r.content, asset  # issue 19, finding 9: ReDoc's logo


async def test_metrics_move_off_the_api_port_when_a_metrics_port_is_set(settings, clock, session_factory, keys):
    from services.wiring.app import create_app

    app = create_app(settings.model_copy(update={"metrics_port": 9464}), clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/metrics", headers=auth(keys["admin"]))).status_code == 404
        assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]


async def test_every_list_pages_with_items_and_next_cursor(api, keys):
    """Every operation answering a list answers a page: {"items": [...], "next_cursor"},
    taking ?cursor= back (none answers a bare array or pages with next_before)."""
    spec = (await api.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    pages = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ("200", "201"):  # nor does an operation that creates something answer one
                answer = op["responses"].get(status, {}).get("content", {}).get("application/json", {}).get("schema", {})
                assert answer.get("type") != "array", (method, path, status)
            ok = op["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
            props = schemas[ok["$ref"].rsplit("/", 1)[1]].get("properties", {}) if "$ref" in ok else {}
            assert "next_before" not in props, (method, path)
            if "items" in props and "next_cursor" in props:
                pages += 1
                assert "cursor" in {p["name"] for p in op.get("parameters", [])}, (method, path)
    assert pages >= 15


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "1e400"])
async def test_nan_and_infinity_in_an_accounts_or_users_traits_are_422_not_500(api, keys, literal):
    """PUT /v1/accounts/{id} and its users keep unknown traits as sent; Python's json reads
    NaN, Infinity and 1e400 as floats, and PostgreSQL's jsonb refused them at the insert:
    a 500 there (stored on SQLite). Now a 422 naming the trait, nothing stored."""
    ops = auth(keys["ops"])
    for url in ("/v1/accounts/acme", "/v1/accounts/acme/users/ada"):
        body = '{"name": "Acme", "scores": {"q/1": [1, ' + literal + "]}}"
        r = await api.put(url, content=body, headers={**ops, "content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
        assert "/scores/q~11/1" in r.json()["detail"][0]["message"], r.text
        assert (await api.get(url, headers=ops)).status_code == 404  # nothing stored
        ok = await api.put(url, content=body.replace(literal, "2"), headers={**ops, "content-type": "application/json"})
        assert ok.status_code == 200, ok.text
