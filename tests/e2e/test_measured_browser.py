"""The library, a resource's report, the surveys and a survey's results in a real
browser (Debian's chromium, Playwright), over the hand-counted world of
tests/integration/services/outreach/test_measured.py: the figures the API gives, the
survey's chart with its data table beside it, at 1280 and 390 px (no sideways scroll),
no console error and no broken link."""

from __future__ import annotations

from tests.e2e.test_console_browser import Walker, chromium, sign_in_with_key  # noqa: F401 (chromium: a fixture)
from tests.e2e.test_segments_browser import own_server  # noqa: F401 (a fixture)
from tests.integration.services.outreach.test_measured import build_world

PAGES = [
    ("library", "/console/resources"),
    ("resource", "/console/resources/guide"),
    ("surveys", "/console/surveys"),
    ("survey", "/console/surveys/nps-q1"),
]


def test_report_pages_in_a_browser_at_1280_and_390_px(chromium, own_server, keys, db_kind, session_factory, settings, clock):  # noqa: F811
    build_world(session_factory, settings, clock)
    w = Walker(chromium, own_server, db_kind, "ops")
    try:
        w.goto("/console/resources")
        sign_in_with_key(w, keys["ops"])
        assert w.page.url.endswith("/console/resources")
        assert "Library" in w.page.locator("header nav").inner_text()
        w.page.click("#resources a[href='/console/resources/guide']")
        w.page.wait_for_load_state()
        assert w.page.locator("#sent .figure").inner_text() == "7"
        assert w.page.locator("#clicked .figure").inner_text() == "3"
        assert "<every>" in w.page.locator("h1").inner_text()  # the title is text, not markup
        assert w.page.locator("#by-segment tbody tr").count() == 2
        w.shot("resource")
        w.page.click("#sent")
        w.page.wait_for_load_state()
        assert w.page.locator("#count").inner_text() == "7"
        w.goto("/console/surveys/nps-q1")
        assert w.page.locator("#answered .figure").inner_text() == "2"
        assert w.page.locator("#by-day tbody tr").count() == 1
        assert w.page.locator("figure.chart svg").count() >= 1
        w.shot("survey")
        links: set[str] = set()
        for _name, path in PAGES:  # every link of these pages answers (one level: the world has no rules to link on to)
            w.goto(path)
            links |= {u for u in w.links() if "/console/static/" not in u and "/sign-out" not in u}
        for url in sorted(links):
            assert w.page.request.get(url).status == 200, url
        assert not w.errors, w.errors
    finally:
        w.close()

    narrow = Walker(chromium, own_server, db_kind, "ops-390", width=390)
    try:
        narrow.goto("/console/sign-in")
        sign_in_with_key(narrow, keys["csm"])
        for name, path in PAGES:
            narrow.goto(path)
            width = narrow.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 400, (path, width)
            narrow.shot(name)
        assert not narrow.errors, narrow.errors
    finally:
        narrow.close()
