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
