"""Issue 18 against the console and the API over real HTTP (SQLite and PostgreSQL): no
forged session under development defaults, sessions that end on the server, link keys
that expire, a throttled, logged and audited sign-in, and console forms held to the
API's input limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from datetime import timedelta
from html import unescape

import httpx
from prometheus_client import REGISTRY

from services.console import session as sessions
from shared import audit, auth
from shared.settings import Settings
from tests.support.console import csrf_of, ops_link, sign_in
from tests.support.helpers import auth as bearer

OLD_PLACEHOLDER = "dev-insecure-change-me"  # the development default until issue 18


def _client(app, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://touchline.test")


def _old_style_cookie(secret: str, key_id: int, expires: int) -> str:
    """A session cookie as versions before issue 18 signed it (HMAC over readable JSON)."""
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    payload = b64(json.dumps({"e": expires, "k": key_id, "n": "forged"}, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{b64(hmac.new(secret.encode(), f'console-session|{payload}'.encode(), hashlib.sha256).digest())}"


def _signins(channel: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("touchline_signins_total", {"channel": channel, "outcome": outcome}) or 0.0


# ---- finding 4: the secret ---------------------------------------------------------------


async def test_a_cookie_forged_with_the_old_placeholder_is_refused_under_development_defaults(
    settings, session_factory, clock, keys, tmp_path
):
    from services.wiring.app import create_app

    # Development defaults: no TOUCHLINE_SECRET_KEY, a var dir of its own.
    dev = Settings(**{**settings.model_dump(exclude={"secret_key"}), "env": "development", "var_dir": tmp_path})
    with session_factory() as s:
        admin = auth.authenticate(s, keys["admin"])
    expires = int((clock.now() + timedelta(hours=1)).timestamp())
    app = create_app(dev, clock, session_factory)
    async with _client(app) as client:
        for forged in (
            _old_style_cookie(OLD_PLACEHOLDER, admin.key_id, expires),
            sessions.cookie_for(OLD_PLACEHOLDER, secrets.token_urlsafe(32)),
        ):
            client.cookies.set(sessions.SESSION_COOKIE, forged, domain="touchline.test", path="/console")
            r = await client.get("/console/rules")
            assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
            r = await client.post("/console/rules/no-login-14d/enable", data={"csrf": sessions.csrf_token(OLD_PLACEHOLDER, "forged")})
            assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
        # The generated secret is what signs: a real sign-in works.
        client.cookies.clear()
        assert (await sign_in(client, keys["ops"])).status_code == 303
        assert (await client.get("/console/rules")).status_code == 200
    app.state.ctx.close()
    assert (tmp_path / "secret-key").read_text().strip() == dev.secret != OLD_PLACEHOLDER


# ---- finding 6: sessions end on the server ----------------------------------------------------


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(api, keys, session_factory):
    await sign_in(api, keys["ops"])
    page = await api.get("/console/rules/no-login-14d")
    assert page.status_code == 200
    copied, csrf = api.cookies.get(sessions.SESSION_COOKIE), csrf_of(page.text)
    assert (await api.post("/console/sign-out", data={"csrf": csrf})).status_code == 303
    api.cookies.set(sessions.SESSION_COOKIE, copied, domain="touchline.test", path="/console")
    r = await api.get("/console/rules")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    r = await api.post("/console/rules/no-login-14d/disable", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
    assert (await api.get("/v1/rules/no-login-14d", headers=bearer(keys["ops"]))).json()["enabled"] is True
    with session_factory() as s:  # sign-in and sign-out are in the audit log, under the key
        key_id = auth.authenticate(s, keys["ops"]).key_id
        trail = [(a.action, a.details.get("address")) for a in audit.history(s, "api_key", str(key_id))]
    assert trail[-2:] == [("console_sign_in", "127.0.0.1"), ("console_sign_out", "127.0.0.1")]


async def test_a_link_key_expires_after_its_lifetime_and_its_session_with_it(api, session_factory, settings, clock):
    url = ops_link(session_factory, settings, clock, minutes=15, key_minutes=60)
    page = await api.get(url.removeprefix("http://touchline.test"))
    token = unescape(page.text.split('name="token" value="', 1)[1].split('"', 1)[0])
    assert (await api.post("/console/link", data={"csrf": csrf_of(page.text), "token": token})).headers["location"] == "/console/"
    clock.advance(timedelta(minutes=59))
    assert (await api.get("/console/rules")).status_code == 200
    clock.advance(timedelta(minutes=2))  # past the key's 60 minutes, well inside the session's 720
    assert (await api.get("/console/rules")).status_code == 303
    with session_factory() as s:  # and `touchline keys list` shows it expired
        assert [k for k in auth.list_keys(s) if k.name == "console link (ops)"][-1].expires_at == clock.now() - timedelta(minutes=1)


# ---- finding 5: throttled, logged, counted, audited ------------------------------------------


async def test_wrong_bearer_keys_are_throttled_per_address_and_key_and_a_right_key_elsewhere_still_works(
    settings, session_factory, clock, keys, caplog
):
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    prefix = keys["ops"].split("_")[1]  # an attacker guessing the ops key's secret under its (public) prefix
    failures_before = _signins("api", "failure")
    statuses, retry_afters = [], []
    with caplog.at_level(logging.WARNING, logger="touchline.signin"):
        async with _client(app, "10.6.6.6") as attacker:
            for _ in range(500):
                r = await attacker.get("/v1/rules", headers=bearer(f"tl_{prefix}_{secrets.token_urlsafe(32)}"))
                statuses.append(r.status_code)
                if r.status_code == 429:
                    retry_afters.append(int(r.headers["retry-after"]))
                    assert r.json()["error"] == "too_many_sign_ins"
            # From this address the right key waits too (else a right answer would show through) ...
            assert (await attacker.get("/v1/rules", headers=bearer(keys["ops"]))).status_code == 429
            # ... other keys do not (a product app on the same host keeps working) ...
            assert (await attacker.get("/v1/rules", headers=bearer(keys["admin"]))).status_code == 200
        async with _client(app, "10.7.7.7") as colleague:  # ... nor does this key from another address
            assert (await colleague.get("/v1/rules", headers=bearer(keys["ops"]))).status_code == 200
    checked = settings.signin_failures_before_delay + 1  # then each try must wait
    assert statuses[:checked] == [401] * checked and set(statuses[checked:]) == {429}
    assert retry_afters and min(retry_afters) >= 1
    failed_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sign-in failed")]
    assert len(failed_lines) == checked
    assert all(f"channel=api address=10.6.6.6 key_prefix={prefix} reason=" in m for m in failed_lines)
    assert _signins("api", "failure") - failures_before == checked
    assert _signins("api", "throttled") >= 500 - checked
    # Waiting as told lets the next try through (and be checked).
    clock.advance(timedelta(seconds=max(retry_afters)))
    async with _client(app, "10.6.6.6") as attacker:
        assert (await attacker.get("/v1/rules", headers=bearer(keys["ops"]))).status_code == 200
    # Junk that is not even shaped like a key is throttled under "-" (and costs no lookup).
    async with _client(app, "10.8.8.8") as junk:
        answers = [(await junk.get("/v1/rules", headers=bearer("garbage"))).status_code for _ in range(20)]
    assert answers[:checked] == [401] * checked and set(answers[checked:]) == {429}
    app.state.ctx.close()


async def test_the_console_form_is_throttled_logged_and_never_logs_a_secret(api, keys, settings, caplog):
    secret_part = "s3cr3t-" + secrets.token_urlsafe(24)
    with caplog.at_level(logging.INFO, logger="touchline.signin"):
        for i in range(settings.signin_failures_before_delay + 1):
            r = await sign_in(api, f"tl_{keys['ops'].split('_')[1]}_{secret_part}")
            assert r.status_code == 401, i
        r = await sign_in(api, f"tl_{keys['ops'].split('_')[1]}_{secret_part}")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in r.text and "api_key" in r.text  # the form, with the reason
        # Another key from the same browser is not affected.
        assert (await sign_in(api, keys["csm"])).status_code == 303
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "channel=console" in text and "reason=" in text and secret_part not in text
    assert f"sign-in: channel=console address=127.0.0.1 key_prefix={keys['csm'].split('_')[1]}" in text


# ---- finding 7: console forms get the API's input limits ---------------------------------------


async def test_a_rule_nested_2000_deep_is_a_readable_422_never_a_500(api, keys, settings):
    await sign_in(api, keys["ops"])
    csrf = csrf_of((await api.get("/console/rules/new")).text)
    for text in ("[" * 2000, "- " * 2000 + "x", "a: {" * 2000, "condition:\n" + "".join(" " * i + "all:\n" for i in range(1, 600))):
        r = await api.post("/console/rules/new", data={"csrf": csrf, "definition": text})
        assert r.status_code == 422, (text[:20], r.status_code, r.text[:300])
        assert "text/html" in r.headers["content-type"] and "nothing was saved" in r.text
        assert f"nests more than {settings.max_json_depth} levels deep" in r.text
        r = await api.post("/console/rules/no-login-14d/edit", data={"csrf": csrf, "definition": text})
        assert r.status_code == 422 and "levels deep" in r.text


async def test_a_nul_in_any_console_form_is_refused_beside_its_field_and_never_stored(api, keys, seeded, session_factory):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/templates/win-back")
    csrf = csrf_of(page.text)
    before = (await api.get("/v1/templates/win-back", headers=h)).json()
    fields = {f: before[f] or "" for f in ("name", "description", "subject", "html_body", "text_body")}
    r = await api.post("/console/templates/win-back", data={"csrf": csrf, "action": "save", **fields, "subject": "Hi\x00there"})
    assert r.status_code == 422 and 'id="e-subject">subject' not in r.text
    assert 'aria-describedby="e-subject"' in r.text and "NUL character" in r.text.split('id="e-subject"', 1)[1][:200]
    r = await api.post("/console/templates/win-back", data={"csrf": csrf, "action": "preview", **fields, "account_id": "a\x00"})
    assert r.status_code == 422 and "account_id: contains a NUL character" in r.text
    assert (await api.get("/v1/templates/win-back", headers=h)).json()["version"] == before["version"]

    r = await api.post("/console/rules/new", data={"csrf": csrf, "definition": "id: nul-rule\nname: x\x00y\n"})
    assert r.status_code == 422 and "line 2: /: definition contains a NUL character" in r.text
    assert (await api.get("/v1/rules/nul-rule", headers=h)).status_code == 404

    # A CSM's note on an engagement (a 500 on PostgreSQL before; stored on SQLite).
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    eid = seeded["engagements"][seeded["churning"][0]]
    csm = bearer(keys["csm"])
    events_before = len((await api.get(f"/v1/engagements/{eid}/events?limit=500", headers=csm)).json()["items"])
    page = await api.get(f"/console/engagements/{eid}")
    for action, data in [
        ("note", {"text": "called\x00them"}),
        ("touch", {"kind": "call", "summary": "x\x00"}),
        ("cancel", {"reason": "\x00"}),
    ]:
        r = await api.post(f"/console/engagements/{eid}/{action}", data={"csrf": csrf_of(page.text), **data})
        assert r.status_code == 422 and "contains a NUL character" in r.text and 'role="alert"' in r.text, action
    assert len((await api.get(f"/v1/engagements/{eid}/events?limit=500", headers=csm)).json()["items"]) == events_before

    # Signing in: never looked up.
    api.cookies.clear()
    r = await sign_in(api, "tl_abc\x00_def")
    assert r.status_code == 422 and "api_key: contains a NUL character" in r.text


async def test_an_oversized_console_form_names_the_field_to_shorten(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    csrf = csrf_of((await api.get("/console/templates/win-back")).text)
    before = (await api.get("/v1/templates/win-back", headers=h)).json()
    fields = {f: before[f] or "" for f in ("name", "description", "subject", "html_body", "text_body")}
    r = await api.post("/console/templates/win-back", data={"csrf": csrf, "action": "save", **fields, "html_body": "<p>x</p>" * 80_000})
    assert r.status_code == 422
    beside = r.text.split('id="e-html_body"', 1)[1][:300]
    assert re.search(r"makes the form \d+ KiB; a console form takes at most 512 KiB: shorten it", beside), beside
    assert (await api.get("/v1/templates/win-back", headers=h)).json()["version"] == before["version"]
