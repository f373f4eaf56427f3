"""HTTP ingest, the accounts and users API, auth on every route, health and metrics."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select, update

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from shared.auth import authenticate
from shared.broker import free_port
from shared.models import ApiKey
from shared.signin import SignInThrottle
from tests.support.helpers import T0, auth, drain, track


def raw_count(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(RawEvent))


async def test_http_event_to_kafka_to_database(api, topics, keys, session_factory, clock):
    batch = [
        track("acme", "login", T0 - timedelta(hours=1), "ada", "h1"),
        track("acme", "report_created", T0 - timedelta(minutes=30), "ada", "h2"),
        {"event_id": "bad", "account_id": "acme", "name": "login", "timestamp": "2026-03-02T10:00:00"},
        "not an object",
    ]
    r = await api.post("/v1/events", json=batch, headers=auth(keys["ingest"]))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert [(e["index"], e["event_id"], e["reason"]) for e in body["rejected"]] == [
        (2, "bad", "timestamp_without_zone"),
        (3, None, "not_an_object"),
    ]

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
        r = await api.put(
            f"/v1/accounts/a{i}",
            json={
                "name": f"A{i}",
                "segment": seg,
                "plan": "pro",
                "seats": 10 + i,
                "lifecycle_stage": "onboarding",
                "renewal_date": "2026-09-01",
                "industry": "retail",
            },
            headers=ops,
        )
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


async def test_a_request_the_framework_refuses_names_each_problem_as_every_422_does(api, keys):
    """One shape for every 422's problems (docs/architecture.md, "Errors"): a body field,
    a query parameter and a path parameter FastAPI refuses come back with ``in``, an RFC
    6901 ``pointer`` into that part and a ``message``, as the definitions' 422s do; its
    own ``loc``, ``msg`` and ``type`` stay beside them."""
    ops = auth(keys["ops"])
    r = await api.put("/v1/accounts/a0", json={"seats": "many", "renewal_date": "soon"}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    problems = {(p["in"], p["pointer"]): p for p in r.json()["detail"]}
    assert set(problems) == {("body", "/seats"), ("body", "/renewal_date")}, r.json()
    assert "integer" in problems["body", "/seats"]["message"] and problems["body", "/seats"]["loc"] == ["body", "seats"]
    r = await api.get("/v1/accounts", params={"limit": 0}, headers=ops)
    (problem,) = r.json()["detail"]
    assert (problem["in"], problem["pointer"]) == ("query", "/limit") and "greater than" in problem["message"]
    r = await api.put(f"/v1/accounts/{'a' * 129}", json={}, headers=ops)
    assert [(p["in"], p["pointer"]) for p in r.json()["detail"]] == [("path", "/account_id")], r.json()
    # A union-typed field (optional, never null) fails per member: no member's tag in the pointer.
    assert (await api.put("/v1/csms/csm-u", json={"name": "U", "email": "u@touchline.example"}, headers=ops)).status_code in (200, 201)
    r = await api.patch("/v1/csms/csm-u", json={"capacity": "many", "skills": ["a", 5]}, headers=ops)
    assert r.status_code == 422 and [(p["in"], p["pointer"]) for p in r.json()["detail"]] == [
        ("body", "/capacity"),
        ("body", "/skills/1"),
    ], r.json()


async def test_a_usage_window_starting_before_year_one_is_a_422_not_a_500(api, keys):
    """Issue 18: end=0001-01-01 with days=116 put the window's start before date.min
    (an OverflowError, answered 500). The edges themselves are fine."""
    ops = auth(keys["ops"])
    await api.put("/v1/accounts/acme/users/ada", json={"role": "champion"}, headers=ops)
    for path in ("/v1/accounts/acme/usage", "/v1/accounts/acme/users/ada/usage"):
        r = await api.get(path, params={"end": "0001-01-01", "days": 116}, headers=ops)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
        assert "start before 0001-01-01" in r.json()["detail"] and "fewer days" in r.json()["detail"]
        for params in ({"end": "0001-01-01", "days": 1}, {"end": "0001-04-26", "days": 116}, {"end": "9999-12-31", "days": 400}):
            r = await api.get(path, params=params, headers=ops)
            assert r.status_code == 200 and r.json()["end"] == params["end"], (params, r.text)
        r = await api.get(path, params={"start": "0001-01-01", "end": "0001-01-01"}, headers=ops)
        assert r.status_code == 200 and r.json()["days"] == []


async def test_ids_are_bounded_by_their_columns_and_the_longest_can_be_erased(api, keys):
    """Issue 18's deeper fuzz: erasing a contact whose account and user ids were long
    (each within 128, together not) answered 500 on PostgreSQL, whose audit row kept
    "account/user" in a 128-character column. Ids longer than the columns that store
    them (128) are a 422 on every route that stores them; the longest erase."""
    ops = auth(keys["ops"])
    account, user = "a" * 128, "u" * 128
    for path in (f"/v1/accounts/{'a' * 129}", f"/v1/accounts/{account}/users/{'u' * 129}"):
        r = await api.put(path, json={}, headers=ops)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, r.text)
    r = await api.post(f"/v1/accounts/{account}/users/{'u' * 129}/erase", headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert (await api.put(f"/v1/accounts/{account}/users/{user}", json={"email": "long@acme.test"}, headers=ops)).status_code == 200
    r = await api.post(f"/v1/accounts/{account}/users/{user}/erase", headers=ops)
    assert r.status_code == 200 and r.json()["suppressed"] is True, r.text


async def test_users_api(api, keys):
    ops = auth(keys["ops"])
    r = await api.put(
        "/v1/accounts/acme/users/ada", json={"email": "ada@acme.test", "role": "champion", "timezone": "Europe/Paris"}, headers=ops
    )
    assert r.status_code == 200 and r.json()["role"] == "champion"
    await api.put("/v1/accounts/acme/users/bob", json={"role": "member"}, headers=ops)
    r = await api.get("/v1/accounts/acme/users", params={"role": "champion"}, headers=ops)
    assert [u["id"] for u in r.json()["items"]] == ["ada"]
    r = await api.put("/v1/accounts/acme/users/ada", json={"timezone": "Nowhere/Land"}, headers=ops)
    assert r.status_code == 422
    assert (await api.get("/v1/accounts/acme/users/zed", headers=ops)).status_code == 404


def _operations(app):
    """Every (method, path) the API serves, walked from ``app.routes`` (included routers
    too, whether or not they are in the OpenAPI document), so a new route cannot escape.
    The web console under /console signs in with a session cookie, not an API key: its
    role rules are tested page by page in tests/integration/services/console/test_console.py."""
    yield from (op for op in _all_operations(app) if not op[1].startswith("/console"))


def _all_operations(app):
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):  # an included APIRouter
            for ctx in route.effective_route_contexts():
                for method in ctx.methods:
                    yield method, ctx.path
        elif hasattr(route, "methods"):
            for method in route.methods:
                yield method, route.path
        else:  # a mounted app (the docs' static assets): whatever it serves under its path
            yield "MOUNT", route.path


PUBLIC = "public"
OPS, CSM, INGEST = {"ops"}, {"csm"}, {"ingest"}
# Who reaches each route (admin reaches every non-public one). A new route must get a line here.
ACCESS = {
    ("GET", "/openapi.json"): PUBLIC,
    ("HEAD", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("MOUNT", "/docs-assets"): PUBLIC,
    (
        "GET",
        "/docs-assets/redoc.standalone.js",
    ): PUBLIC,  # ReDoc's bundle without its CDN logo  # Swagger UI and ReDoc files, served by Touchline itself
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): set(),  # admin only on the API port (or served on TOUCHLINE_METRICS_PORT instead)
    ("GET", "/unsubscribe/{token}"): PUBLIC,
    ("POST", "/unsubscribe/{token}"): PUBLIC,
    ("GET", "/r/{token}"): PUBLIC,
    ("GET", "/s/{token}"): PUBLIC,
    ("POST", "/s/{token}"): PUBLIC,
    ("GET", "/v1/surveys/{survey_id}/results"): OPS | CSM,
    ("GET", "/v1/surveys/{survey_id}/report"): OPS | CSM,
    ("POST", "/v1/events"): INGEST,
    ("GET", "/v1/dead-letters"): OPS,
    ("PUT", "/v1/accounts/{account_id}"): OPS | INGEST,
    ("PUT", "/v1/accounts/{account_id}/users/{user_id}"): OPS | INGEST,
    ("GET", "/v1/accounts"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/usage"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/users"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/users/{user_id}"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/users/{user_id}/usage"): OPS | CSM,
    ("POST", "/v1/accounts/{account_id}/users/{user_id}/erase"): OPS,
    # Contract outcomes are recorded by CS Ops (products and CRMs send contract events).
    ("POST", "/v1/accounts/{account_id}/contract-outcomes"): OPS,
    ("GET", "/v1/accounts/{account_id}/contract-outcomes"): OPS | CSM,
    # Rules are authored by CS Ops; signals are readable by ops and csm.
    ("POST", "/v1/rules/validate"): OPS,
    ("POST", "/v1/rules"): OPS,
    ("GET", "/v1/rules"): OPS,
    ("GET", "/v1/rules/{rule_id}"): OPS,
    ("PUT", "/v1/rules/{rule_id}"): OPS,
    ("DELETE", "/v1/rules/{rule_id}"): OPS,
    ("POST", "/v1/rules/{rule_id}/enable"): OPS,
    ("POST", "/v1/rules/{rule_id}/disable"): OPS,
    ("GET", "/v1/rules/{rule_id}/versions"): OPS,
    ("GET", "/v1/rules/{rule_id}/versions/{version}"): OPS,
    ("GET", "/v1/rules/{rule_id}/audit"): OPS,
    ("POST", "/v1/rules/test"): OPS,
    ("POST", "/v1/rules/{rule_id}/test"): OPS,
    ("POST", "/v1/rules/backtest"): OPS,
    ("POST", "/v1/health/validation"): OPS,
    ("GET", "/v1/signals"): OPS | CSM,
    ("GET", "/v1/signals/{signal_id}"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/signals"): OPS | CSM,
    # Health: CS Ops define the model; CSMs read scores and may score an account now (their
    # engagements' accounts only: tests/integration/services/rules/test_health.py).
    ("POST", "/v1/health/model/validate"): OPS,
    ("GET", "/v1/health/model"): OPS,
    ("PUT", "/v1/health/model"): OPS,
    ("GET", "/v1/health/model/versions"): OPS,
    ("GET", "/v1/health/model/versions/{version}"): OPS,
    ("GET", "/v1/health/model/audit"): OPS,
    ("GET", "/v1/health/accounts"): OPS | CSM,
    ("POST", "/v1/segments/validate"): OPS,
    ("POST", "/v1/segments/preview"): OPS,
    ("POST", "/v1/segments"): OPS,
    ("GET", "/v1/segments"): OPS | CSM,
    ("GET", "/v1/segments/{segment_id}"): OPS | CSM,
    ("PUT", "/v1/segments/{segment_id}"): OPS,
    ("DELETE", "/v1/segments/{segment_id}"): OPS,
    ("GET", "/v1/segments/{segment_id}/versions"): OPS | CSM,
    ("GET", "/v1/segments/{segment_id}/versions/{version}"): OPS | CSM,
    ("GET", "/v1/segments/{segment_id}/audit"): OPS,
    ("GET", "/v1/segments/{segment_id}/members"): OPS | CSM,
    ("GET", "/v1/segments/{segment_id}/sizes"): OPS | CSM,
    ("GET", "/v1/accounts/{account_id}/health"): OPS | CSM,
    ("POST", "/v1/accounts/{account_id}/health"): OPS | CSM,
    # Outreach authoring is CS Ops; in-app messages are fetched and marked read by the
    # product's backend with its ingest key.
    ("PUT", "/v1/templates/{template_id}"): OPS,
    ("GET", "/v1/templates"): OPS,
    ("GET", "/v1/templates/{template_id}"): OPS,
    ("POST", "/v1/templates/{template_id}/preview"): OPS,
    ("PUT", "/v1/resources/{resource_id}"): OPS,
    ("GET", "/v1/resources"): OPS | CSM,
    ("GET", "/v1/resources/{resource_id}"): OPS | CSM,
    ("GET", "/v1/resources/{resource_id}/report"): OPS | CSM,
    ("DELETE", "/v1/resources/{resource_id}"): OPS,
    ("POST", "/v1/engagements/{engagement_id}/resources"): OPS | CSM,
    ("PUT", "/v1/playbooks/{playbook_id}"): OPS,
    ("GET", "/v1/playbooks"): OPS,
    ("GET", "/v1/playbooks/{playbook_id}"): OPS,
    ("GET", "/v1/playbooks/{playbook_id}/enrollments"): OPS,
    ("GET", "/v1/playbooks/{playbook_id}/report"): OPS,
    ("GET", "/v1/playbooks/{playbook_id}/report/segments"): OPS,
    ("GET", "/v1/messages"): OPS,
    ("POST", "/v1/broadcasts/preview"): OPS,
    ("POST", "/v1/broadcasts"): OPS,
    ("GET", "/v1/broadcasts"): OPS,
    ("GET", "/v1/broadcasts/{broadcast_id}"): OPS,
    ("GET", "/v1/broadcasts/{broadcast_id}/preview"): OPS,
    ("POST", "/v1/broadcasts/{broadcast_id}/cancel"): OPS,
    ("GET", "/v1/broadcasts/{broadcast_id}/report"): OPS,
    ("POST", "/v1/messages/{message_id}/retry"): OPS,
    ("GET", "/v1/accounts/{account_id}/messages"): OPS | INGEST,
    ("POST", "/v1/accounts/{account_id}/messages/{message_id}/read"): OPS | INGEST,
    ("GET", "/v1/suppressions"): OPS,
    ("POST", "/v1/suppressions"): OPS,
    ("DELETE", "/v1/suppressions/{email}"): OPS,
    ("GET", "/v1/dev/mail"): OPS,
    # The pool: ops runs it; a CSM works the engagements (only their own: tests/integration/services/outreach/test_engagements.py).
    ("PUT", "/v1/csms/{csm_id}"): OPS,
    ("PATCH", "/v1/csms/{csm_id}"): OPS,
    ("GET", "/v1/csms"): OPS,
    ("GET", "/v1/csms/{csm_id}"): OPS,
    ("GET", "/v1/me/engagements"): CSM,
    **{
        (m, f"/v1/engagements/{{engagement_id}}{tail}"): OPS | CSM
        for m, tail in [
            ("GET", ""),
            ("GET", "/events"),
            ("POST", "/accept"),
            ("POST", "/touches"),
            ("POST", "/emails"),
            ("POST", "/notes"),
            ("POST", "/extend"),
            ("POST", "/resolve"),
        ]
    },
    ("GET", "/v1/engagements"): OPS,
    ("POST", "/v1/engagements"): OPS,
    ("POST", "/v1/engagements/{engagement_id}/reassign"): OPS,
    ("POST", "/v1/engagements/{engagement_id}/cancel"): OPS,
    ("GET", "/v1/pool"): OPS,
    ("GET", "/v1/pool/outcomes"): OPS,
    ("GET", "/v1/pool/forecast"): OPS,
    # Jobs: a role sees the jobs of the kinds it may run (backtests: ops).
    ("GET", "/v1/jobs"): OPS,
    ("GET", "/v1/jobs/{job_id}"): OPS,
    ("POST", "/v1/jobs/{job_id}/cancel"): OPS,
}


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"version": "1", "email": "nobody@example.test"}.get(m[1], f"no-{m[1]}"), template)


def _refused_by_role(r) -> bool:
    """A refusal for the key's role: the role gate's, or the jobs API's (which admits a
    role only if some job kind is open to it). A handler may also answer 403 for its own
    reasons, e.g. an admin key on /v1/me/engagements is bound to no CSM."""
    return (
        r.status_code == 403
        and r.json()["error"] == "forbidden"
        and r.json()["detail"].startswith(("this route needs role", "no job kind is open to role"))
    )


async def test_each_role_reaches_exactly_its_routes(api, keys):
    # This walk presents wrong keys on every route from one address, which the sign-in
    # throttle would soon refuse with 429 (test_console_security.py tests that): lift it.
    api.app.state.ctx.signin_throttle = SignInThrottle(
        failures_before_delay=10**6, failures_before_refusal=10**6 + 1, window_seconds=1, max_tracked=100
    )
    served = set(_operations(api.app))
    assert served == set(ACCESS), (
        "routes without an ACCESS entry (decide who may call them)",
        served - set(ACCESS),
        "ACCESS entries for routes that are gone",
        set(ACCESS) - served,
    )
    # Keys that must never pass: a forged one, and a real key's prefix with a wrong secret
    # (with the secret of another real key, too), so the secret comparison is what refuses.
    _tl, prefix, secret = keys["ops"].split("_", 2)
    other_secret = keys["csm"].split("_", 2)[2]
    refused_keys = [
        "tl_deadbeef_forged",
        f"tl_{prefix}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",
        f"tl_{prefix}_{other_secret}",
        f"tl_{prefix}_",
    ]
    for (method, template), allowed in sorted(ACCESS.items()):
        if method == "MOUNT":
            method, path = "GET", template + "/no-such-file.js"
        else:
            path = _concrete(template)
        anonymous = await api.request(method, path)
        if allowed == PUBLIC:
            assert anonymous.status_code not in (401, 403), (method, path, anonymous.status_code)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert anonymous.json()["error"] == "unauthorized" and anonymous.headers["www-authenticate"] == "Bearer"
        # Every key goes through the same gate: the wrong secret on every route, the rest on one.
        for bad in refused_keys if (method, template) == ("GET", "/v1/accounts") else refused_keys[1:2]:
            r = await api.request(method, path, headers=auth(bad))
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path, bad, r.status_code)
        for role in ("ingest", "ops", "csm", "admin"):
            r = await api.request(method, path, headers=auth(keys[role]))
            assert r.status_code != 401, (method, path, role)
            if role in allowed or role == "admin":
                assert not _refused_by_role(r), (method, path, role, r.text)
            else:
                assert _refused_by_role(r), (method, path, role, r.status_code, r.text)
                assert role in r.json()["detail"]


async def test_refusals_say_what_is_wrong_and_how_to_fix_it(api, keys):
    missing = await api.get("/v1/accounts")
    assert missing.json() == {
        "error": "unauthorized",
        "detail": "missing API key: send 'Authorization: Bearer <key>' (create one with `touchline keys create`)",
    }
    wrong = await api.get("/v1/accounts", headers=auth("tl_deadbeef_forged"))
    assert wrong.json() == {"error": "unauthorized", "detail": "invalid or revoked API key"}
    other_role = await api.get("/v1/accounts", headers=auth(keys["ingest"]))
    assert other_role.json() == {"error": "forbidden", "detail": "this route needs role admin or csm or ops; your key has role 'ingest'"}


def test_a_key_authenticates_as_its_own_row_and_only_in_its_own_scheme(keys, session_factory):
    with session_factory() as s:
        rows = {row.role: row for row in s.scalars(select(ApiKey))}
        for role, key in keys.items():
            p = authenticate(s, key)
            assert (p.key_id, p.name, p.role, p.csm_id) == (rows[role].id, rows[role].name, role, rows[role].csm_id)
        assert rows["csm"].csm_id == "csm-1"
        assert authenticate(s, "xx_" + keys["ops"].removeprefix("tl_")) is None  # the right prefix and secret, another scheme


async def test_revoked_key_is_refused(api, keys, session_factory, clock):
    from shared.auth import revoke_key
    from shared.models import ApiKey

    with session_factory.begin() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.role == "ops"))
        revoke_key(s, key_id, clock.now())
    r = await api.get("/v1/accounts", headers=auth(keys["ops"]))
    assert r.status_code == 401


async def test_a_verified_key_is_cached_briefly_and_revocation_still_ends_it(api, keys, session_factory, clock, settings):
    """Keys verified in the last TOUCHLINE_AUTH_CACHE_SECONDS are not looked up again
    (a busy client costs no query per request), but revoking one in this process ends
    it at once; with the cache off, a revocation written by another process (`touchline
    keys revoke`) ends it at the next request."""
    from shared.auth import revoke_key
    from shared.models import ApiKey

    assert (await api.get("/v1/accounts", headers=auth(keys["ops"]))).status_code == 200  # now cached
    with session_factory.begin() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.role == "ops"))
        revoke_key(s, key_id, clock.now())
    assert (await api.get("/v1/accounts", headers=auth(keys["ops"]))).status_code == 401

    api.app.state.ctx.settings = settings.model_copy(update={"auth_cache_seconds": 0})
    assert (await api.get("/v1/accounts", headers=auth(keys["csm"]))).status_code == 200
    with session_factory.begin() as s:  # as another process would: no cache to tell
        s.execute(update(ApiKey).where(ApiKey.role == "csm").values(revoked_at=clock.now()))
    assert (await api.get("/v1/accounts", headers=auth(keys["csm"]))).status_code == 401


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
