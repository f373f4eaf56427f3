"""The segment pages in a real browser (Debian's chromium, Playwright), over a world of
their own (the test's empty database, not the shared console world, whose signal
counts other tests compare): the list, a segment's page with its chart, its data table
and its members in pages, at 1280 and 390 px, with no console error and no broken link."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.rules.evaluation.segments import run_segments
from services.rules.segments import service as segments
from shared.db import transaction
from tests.e2e.test_console_browser import Walker, chromium, crawl, sign_in_with_key  # noqa: F401 (chromium: a fixture)
from tests.support.rules import group, ingest
from tests.support.server import serving

FINTECH = {
    "id": "fintech",
    "name": "Fintech <b>customers</b>",
    "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"},
}


@pytest.fixture
def own_server(settings, session_factory, clock):
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    with serving(app, settings) as base:  # a real uvicorn with the API's limits (tests/support/server.py)
        yield base


def test_segment_pages_in_a_browser_at_1280_and_390_px(chromium, own_server, keys, db_kind, session_factory, settings, clock):  # noqa: F811
    now = clock.now()
    ingest(
        session_factory,
        [group(f"acct-{i:03d}", now - timedelta(days=5), industry="fintech" if i % 4 else "retail") for i in range(80)],
        now,
    )
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", now)
    run_segments(session_factory, settings, now)  # 60 members: two pages of 50
    clock.advance(timedelta(days=1))
    run_segments(session_factory, settings, clock.now())

    w = Walker(chromium, own_server, db_kind, "ops")
    try:
        w.goto("/console/segments")
        sign_in_with_key(w, keys["ops"])
        assert w.page.url.endswith("/console/segments")
        assert w.page.evaluate("document.querySelectorAll('b').length") == 0  # the name is text
        assert "Segments" in w.page.locator("header nav").inner_text()
        w.shot("segments")
        w.page.click("#segments a[href='/console/segments/fintech']")
        w.page.wait_for_load_state()
        assert w.page.locator("#count").inner_text() == "60"
        assert w.page.locator("#member-list tbody tr").count() == 50
        w.page.click("summary:has-text('data table')")
        assert w.page.locator("details.chart-data tbody tr").count() == 2
        w.shot("segment")
        w.page.click("a[rel=next]")
        w.page.wait_for_load_state()
        assert w.page.locator("#member-list tbody tr").count() == 10
        assert crawl(w, w.links() | {f"{own_server}/console/segments"}, limit=30) >= 5
        assert not w.errors, w.errors
    finally:
        w.close()

    narrow = Walker(chromium, own_server, db_kind, "ops-390", width=390)
    try:
        narrow.goto("/console/sign-in")
        sign_in_with_key(narrow, keys["ops"])
        for name, path in [("segments", "/console/segments"), ("segment", "/console/segments/fintech")]:
            narrow.goto(path)
            width = narrow.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 400, (path, width)
            narrow.shot(name)
        assert not narrow.errors, narrow.errors
    finally:
        narrow.close()
