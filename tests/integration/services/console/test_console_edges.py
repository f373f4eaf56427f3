"""Console behaviours a one-line bug could break unseen (issue 25), over real HTTP on both
databases: a CSM's inbox lists only their own closed engagements, and a form's CSRF
token is bound to its session (one from another session, or the nonce from before
sign-in, is refused)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from services.console import session as sessions
from services.outreach.engagements import assignment, opening, service
from shared.auth import create_key
from shared.db import transaction
from tests.support.console import csrf_of, sign_in


def _closed(session_factory, settings, clock, account_id: str, goal: str, csm_id: str, close: str) -> str:
    """An engagement opened, given to ``csm_id`` and closed (``resolve`` or ``cancel``)."""
    now = clock.now()
    with transaction(session_factory) as s:
        e, _ = opening.open_engagement(
            s,
            account_id=account_id,
            goal=goal,
            actor="test",
            now=now,
            settings=settings,
            key=f"edges-{csm_id}-{close}",
            title=f"{close} {goal}",
        )
        e = assignment.reassign(s, e, csm_id, actor="test", now=now, settings=settings, reason="test")
        if close == "resolve":
            service.resolve(s, e, outcome="recovered", note="", actor="test", now=now, settings=settings)
        else:
            service.cancel(s, e, reason="test", actor="test", now=now, settings=settings)
        return e.id


async def test_the_inbox_lists_only_the_csms_own_closed_engagements(api, seeded, session_factory, settings, clock):
    account = seeded["churning"][2]
    clock.advance(timedelta(minutes=1))  # newer than the seeded ones: first in each closed list
    own = _closed(session_factory, settings, clock, account, "custom", "csm-2", "resolve")
    others = [
        _closed(session_factory, settings, clock, account, "onboarding_rescue", "csm-1", "resolve"),
        _closed(session_factory, settings, clock, account, "discover_expansion", "csm-1", "cancel"),
    ]
    with transaction(session_factory) as s:
        _row, key = create_key(s, role="csm", name="inbox of csm-2", now=clock.now(), csm_id="csm-2")
    await sign_in(api, key)
    inbox = await api.get("/console/inbox")
    assert inbox.status_code == 200 and "Recently closed" in inbox.text
    assert f'href="/console/engagements/{own}"' in inbox.text
    assert [eid for eid in others if eid in inbox.text] == []


async def test_a_csrf_token_works_only_in_the_session_it_was_made_for(settings, clock, session_factory, keys):
    """Two browsers signed in: each form's token names its own session. A token from the
    other session, or the one from before sign-in (its pre-sign-in cookie kept), is
    refused with 403 and changes nothing; the session's own token works."""
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)

    def browser() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchline.test")

    try:
        async with browser() as a, browser() as b:
            assert (await sign_in(a, keys["ops"])).status_code == 303
            token_a = csrf_of((await a.get("/console/")).text)

            page = await b.get("/console/sign-in")
            pre_cookie, token_pre = b.cookies.get(sessions.PRE_COOKIE), csrf_of(page.text)
            r = await b.post("/console/sign-in", data={"csrf": token_pre, "api_key": keys["ops"]})
            assert r.status_code == 303 and r.headers["location"] == "/console/"
            token_b = csrf_of((await b.get("/console/")).text)
            assert len({token_a, token_pre, token_b}) == 3

            b.cookies.set(sessions.PRE_COOKIE, pre_cookie, domain="touchline.test", path=sessions.COOKIE_PATH)
            for stolen in (token_a, token_pre):
                r = await b.post("/console/sign-out", data={"csrf": stolen})
                assert r.status_code == 403 and "security token" in r.text
                assert (await b.get("/console/")).status_code == 200  # still signed in: the refused form did nothing
            r = await a.post("/console/sign-out", data={"csrf": token_b})
            assert r.status_code == 403 and (await a.get("/console/")).status_code == 200

            assert (await b.post("/console/sign-out", data={"csrf": token_b})).status_code == 303
            assert (await b.get("/console/")).status_code == 303  # signed out
            assert (await a.get("/console/")).status_code == 200  # the other session is its own
    finally:
        app.state.ctx.close()
