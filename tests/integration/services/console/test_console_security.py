"""Issue 18 against the console over real HTTP (SQLite and PostgreSQL): no forged
session under development defaults, sessions that end on the server, link keys that
expire, a throttled and audited sign-in, and forms held to the API's input limits."""

from __future__ import annotations

import httpx

from services.console import session as sessions
from shared import auth
from shared.settings import Settings
from tests.support.console import sign_in

OLD_PLACEHOLDER = "dev-insecure-change-me"  # the development default until issue 18


async def test_a_cookie_forged_with_the_old_placeholder_is_refused_under_development_defaults(
    settings, session_factory, clock, keys, tmp_path
):
    from services.wiring.app import create_app

    # Development defaults: no TOUCHLINE_SECRET_KEY, a var dir of its own.
    dev = Settings(**{**settings.model_dump(exclude={"secret_key"}), "env": "development", "var_dir": tmp_path})
    with session_factory() as s:
        admin = auth.authenticate(s, keys["admin"])
    forged = sessions.encode_session(OLD_PLACEHOLDER, sessions.new_session(admin.key_id, clock.now(), 60))
    app = create_app(dev, clock, session_factory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchline.test") as client:
        client.cookies.set(sessions.SESSION_COOKIE, forged, domain="touchline.test", path="/console")
        r = await client.get("/console/rules")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
        r = await client.post("/console/rules/no-login-14d/enable", data={"csrf": sessions.csrf_token(OLD_PLACEHOLDER, "n")})
        assert r.status_code in (303, 403) and "/console/sign-in" in r.headers.get("location", "/console/sign-in")
        # The generated secret is what signs: a real sign-in works.
        client.cookies.clear()
        assert (await sign_in(client, keys["ops"])).status_code == 303
        assert (await client.get("/console/rules")).status_code == 200
    app.state.ctx.close()
    assert (tmp_path / "secret-key").read_text().strip() == dev.secret != OLD_PLACEHOLDER
