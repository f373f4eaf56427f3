"""Console helpers shared by the console tests (HTTP and browser tiers): the CSRF field of a
page and a sign-in through the real form."""

from __future__ import annotations

import re


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "the page has no CSRF field"
    return m.group(1)


async def sign_in(api, key: str, next_path: str | None = None):
    page = await api.get("/console/sign-in")
    assert page.status_code == 200
    data = {"csrf": csrf_of(page.text), "api_key": key}
    if next_path:
        data["next"] = next_path
    return await api.post("/console/sign-in", data=data)


def ops_link(session_factory, settings, clock, *, minutes: float | None = None, key_minutes: float | None = None) -> str:
    """A one-time console sign-in link for CS Ops, minted as `touchline console-link`
    does (the link's and its key's lifetimes default to the settings')."""
    from services.console import session as sessions
    from shared.db import transaction

    with transaction(session_factory) as s:
        return sessions.create_link(
            s,
            secret=settings.secret,
            base_url="http://touchline.test",
            role="ops",
            csm_id=None,
            now=clock.now(),
            minutes=settings.console_link_minutes if minutes is None else minutes,
            key_minutes=settings.console_link_key_minutes if key_minutes is None else key_minutes,
        )
