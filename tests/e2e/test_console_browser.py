"""The console in a real browser: Debian's chromium driven by Playwright against the app
served by uvicorn on a free port, over the seeded demo-like database (SQLite and
PostgreSQL). Signs in as each role, walks every page, performs the actions, compares
what pages show with the API, checks escaping, CSRF, broken links and console errors,
and saves a screenshot per page under var/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from services.console import session as sessions
from shared.clock import SimulatedClock
from shared.db import transaction
from shared.jobs.runner import JobWorker
from tests.support.console_seed import HOSTILE
from tests.support.helpers import ROOT
from tests.support.server import serving

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "var" / "screenshots"


@pytest.fixture(scope="module")
def chromium():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMIUM)):
        # Not a skip: `make test` installs it, so a missing chromium is a machine to fix.
        pytest.fail(f"{CHROMIUM} is missing: run tools/install-system-deps.sh (Debian's chromium), as `make test` does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(console_world):
    from services.wiring.app import create_app

    app = create_app(console_world.settings, SimulatedClock(console_world.now), console_world.session_factory)
    with serving(app, console_world.settings) as base:  # a real uvicorn with the API's limits (tests/support/server.py)
        yield base


class Walker:
    """One browser context signed in as a role; records console errors and screenshots."""

    def __init__(self, browser, base: str, kind: str, role: str, width: int = 1280):
        self.base, self.kind, self.role = base, kind, role
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def goto(self, path: str, expect: int = 200):
        response = self.page.goto(urljoin(self.base, path))
        assert response is not None and response.status == expect, (path, response and response.status)
        return response

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{self.kind}-{self.role}-{name}.png"), full_page=True)

    def links(self) -> set[str]:
        # in-page anchors ("Skip to the content": #main) are not other pages
        hrefs = self.page.eval_on_selector_all("a[href]:not([href^='#'])", "els => els.map(e => e.href)")
        return {h.split("#")[0] for h in hrefs if urlparse(h).netloc == urlparse(self.base).netloc}

    def close(self):
        self.context.close()


def sign_in_with_key(w: Walker, key: str) -> None:
    if "/console/sign-in" not in w.page.url:
        w.goto("/console/sign-in")
    w.page.fill("#api_key", key)
    w.page.click("button[type=submit]")
    w.page.wait_for_load_state()


def crawl(w: Walker, start: set[str], limit: int = 400) -> int:
    """Visit every same-origin link once; each answers 200 (a 403 is a bug: the menu and
    links follow the role) and logs no console error."""
    seen: set[str] = set()
    todo = sorted(start)
    while todo and len(seen) < limit:
        url = todo.pop()
        if url in seen or "/console/static/" in url:
            continue
        seen.add(url)
        response = w.page.goto(url)
        assert response is not None and response.status == 200, (url, response and response.status)
        todo.extend(sorted(w.links() - seen))
    assert not w.errors, w.errors
    return len(seen)


PAGES = [
    ("overview", "/console/"),
    ("accounts", "/console/accounts"),
    ("accounts-signalled", "/console/accounts?signalled=1"),
    ("accounts-at-risk", "/console/accounts?label=at_risk&sort=health"),
    ("health-model", "/console/health"),
    ("rules", "/console/rules"),
    ("rule", "/console/rules/no-login-14d"),
    ("rule-edit", "/console/rules/no-login-14d/edit"),
    ("rule-new", "/console/rules/new"),
    ("playbooks", "/console/playbooks"),
    ("playbook", "/console/playbooks/win-back"),
    ("templates", "/console/templates"),
    ("template", "/console/templates/win-back"),
    ("dead-letters", "/console/dead-letters"),
    ("pool", "/console/pool"),
]


def test_ops_walks_every_page_acts_and_sees_what_the_api_says(chromium, server, console_world):
    world = console_world
    ops = {"Authorization": f"Bearer {world.keys['ops']}"}
    api = httpx.Client(base_url=server, headers=ops, timeout=60)
    w = Walker(chromium, server, world.kind, "ops")
    try:
        w.goto("/console/rules", expect=200)  # redirected to sign-in
        assert "/console/sign-in" in w.page.url
        w.shot("sign-in")
        sign_in_with_key(w, world.keys["ops"])
        assert w.page.url.endswith("/console/rules")
        churning = world.seeded["churning"][0]
        for name, path in PAGES + [
            ("account", f"/console/accounts/{churning}"),
            ("account-hostile", f"/console/accounts/{HOSTILE}"),
            ("dry-run", f"/console/rules/no-login-14d/dry-run?account_id={churning}"),
        ]:
            w.goto(path)
            assert w.page.locator("h1").count() == 1, path
            w.shot(name)
        # escaping: the hostile strings are text on the page, and no script of theirs ran
        w.goto(f"/console/accounts/{HOSTILE}")
        assert w.page.locator("h1").inner_text().startswith("<script>window.__pwned = 1</script>")
        assert w.page.get_by_text('"><img src=x onerror="window.__pwned = 2">').count() >= 1
        assert w.page.locator("img").count() == 0
        assert w.page.evaluate("window.__pwned") is None

        # what the pages show against the API
        w.goto("/console/accounts")
        total = len(api.get("/v1/accounts", params={"limit": 500}).json()["items"])
        assert w.page.locator("#count").inner_text().startswith(f"{total} accounts")
        w.goto(f"/console/accounts/{churning}")
        for s in api.get(f"/v1/accounts/{churning}/signals").json()["items"]:
            assert w.page.get_by_text(s["rule_name"]).count() >= 1
        report = api.get("/v1/playbooks/win-back/report").json()
        w.goto("/console/playbooks/win-back")
        holdout = w.page.locator("#holdout").inner_text()
        assert f"treated\t{report['treated']['enrolled']}" in holdout.replace("  ", "\t")
        assert w.page.locator("svg.chart").count() == 3  # enrolments, messages per send step, intervals

        # action: edit and save a rule
        before = api.get("/v1/rules/wau-down-40").json()
        w.goto("/console/rules/wau-down-40/edit")
        text = w.page.input_value("#definition")
        w.page.fill("#definition", text.replace("name: " + before["definition"]["name"], "name: WAU down 40% (edited in a browser)"))
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert "Saved." in w.page.inner_text("main")
        after = api.get("/v1/rules/wau-down-40").json()
        assert after["current_version"] == before["current_version"] + 1
        assert after["definition"]["name"] == "WAU down 40% (edited in a browser)"
        w.shot("rule-saved")

        # action: a validation error is shown next to its line
        w.goto("/console/rules/wau-down-40/edit")
        w.page.fill("#definition", w.page.input_value("#definition").replace("kind: churn_risk", "kind: 42"))
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert w.page.locator("li.bad .problem").count() >= 1
        assert all("422" in e for e in w.errors), w.errors  # the page answered 422, as it should
        w.errors.clear()
        w.shot("rule-error")

        # action: backtest an edit and read the diff
        end = world.now.date()
        start = end - timedelta(days=20)
        w.goto("/console/rules/no-login-14d/edit")
        edited = w.page.input_value("#definition").replace("value: 14", "value: 7")
        w.page.fill("#definition", edited)
        w.page.fill("input[name=start]", start.isoformat())
        w.page.fill("input[name=end]", end.isoformat())
        w.page.click("text=Backtest the edit")
        w.page.wait_for_load_state()
        assert "/backtests/" in w.page.url and w.page.locator("#job-state").count() == 1
        w.shot("backtest-queued")
        worker = JobWorker(world.settings, world.session_factory, SimulatedClock(world.now))
        assert worker.run_job(int(w.page.url.rsplit("/", 1)[1])).state == "succeeded"
        w.page.wait_for_selector("#total-firings", timeout=30_000)  # the page's own meta refresh brings the result
        import yaml

        queued = api.post(
            "/v1/rules/backtest",
            json={
                "rule_id": "no-login-14d",
                "rule": yaml.safe_load(edited),
                "start": start.isoformat(),
                "end": end.isoformat(),
                "compare_with_current": True,
            },
        ).json()
        worker.run_job(queued["id"])
        expected = api.get(f"/v1/jobs/{queued['id']}").json()["result"]
        assert w.page.locator("#total-firings").inner_text() == f"{expected['total_firings']:,}"
        shown = set(w.page.locator("#newly-firing a").all_inner_texts())
        assert shown == set(expected["diff"]["newly_firing"])
        w.shot("backtest")

        # action: dry-run through the form
        w.goto("/console/rules/no-login-14d/dry-run")
        w.page.fill("input[name=account_id]", churning)
        w.page.click('button:has-text("Dry-run")')
        w.page.wait_for_load_state()
        assert "fire" in w.page.locator("#verdict").inner_text()

        # action: preview a template for an account picked in the form (the owner: no contact chosen)
        w.goto("/console/templates/win-back")
        w.page.fill("#pick-q", churning)
        w.page.click("#pick-find")
        w.page.wait_for_load_state()
        w.page.check(f"input[name=account_id][value='{churning}']")
        w.page.click("button[value=preview]")
        w.page.wait_for_load_state()
        name = api.get(f"/v1/accounts/{churning}").json()["name"]
        assert name in w.page.locator("#preview-text").inner_text()
        w.shot("template-preview")

        # action: reassign an engagement from the pool
        eid = world.seeded["engagements"][HOSTILE]
        w.goto("/console/pool")
        w.page.click(f"#engagements a[href='/console/engagements/{eid}']")
        w.page.wait_for_load_state()
        assert w.page.evaluate("window.__pwned") is None  # the hostile note is text
        w.page.select_option("select[name=csm_id]", "csm-2")
        w.page.click("button:has-text('Reassign')")
        w.page.wait_for_load_state()
        assert api.get(f"/v1/engagements/{eid}").json()["csm_id"] == "csm-2"
        w.shot("engagement-ops")

        # CSRF: a POST with the session cookie but without the token is refused
        r = w.page.request.post(urljoin(server, "/console/rules/no-login-14d/disable"), form={"x": "1"})
        assert r.status == 403
        assert api.get("/v1/rules/no-login-14d").json()["enabled"] is True

        # narrow screens: the main pages at 390 px
        narrow = Walker(chromium, server, world.kind, "ops-390", width=390)
        try:
            sign_in_with_key(narrow, world.keys["ops"])
            for name, path in [
                ("overview", "/console/"),
                ("accounts", "/console/accounts"),
                ("account", f"/console/accounts/{churning}"),
                ("playbook", "/console/playbooks/win-back"),
            ]:
                narrow.goto(path)
                width = narrow.page.evaluate("document.documentElement.scrollWidth")
                assert width <= 400, (path, width)
                narrow.shot(name)
            assert not narrow.errors, narrow.errors
        finally:
            narrow.close()

        # every link once
        w.goto("/console/")
        start_links = w.links()
        for _name, path in PAGES:
            w.goto(path)
            start_links |= w.links()
        assert crawl(w, start_links) > 30
        assert not w.errors, w.errors
    finally:
        w.close()
        api.close()


def test_csm_signs_in_with_a_one_time_link_resolves_an_engagement_and_meets_403_pages(chromium, server, console_world):
    world = console_world
    with transaction(world.session_factory) as s:
        url = sessions.create_link(
            s, secret=world.settings.secret, base_url=server, role="csm", csm_id="csm-1", now=world.now, minutes=15, key_minutes=720
        )
    w = Walker(chromium, server, world.kind, "csm")
    try:
        w.goto(url[len(server) :])
        w.shot("link")
        w.page.click("text=Continue")
        w.page.wait_for_load_state()
        assert w.page.url.endswith("/console/inbox")
        menu = w.page.locator("header nav").inner_text()
        assert "Inbox" in menu and "Accounts" in menu and "Rules" not in menu and "Overview" not in menu and "Pool" not in menu
        w.shot("inbox")
        account = world.seeded["churning"][1]
        eid = world.seeded["engagements"][account]
        w.page.click(f"a[href='/console/engagements/{eid}']")
        w.page.wait_for_load_state()
        w.shot("engagement")
        if w.page.locator("button:has-text('Accept')").count():
            w.page.click("button:has-text('Accept')")
            w.page.wait_for_load_state()
        w.page.fill("textarea[name=text]", "Called the champion; they are back next week.")
        w.page.click("button:has-text('Add note')")
        w.page.wait_for_load_state()
        assert "Called the champion" in w.page.locator("#timeline").inner_text()
        w.page.select_option("select[name=outcome]", "recovered")
        w.page.click("button:has-text('Resolve')")
        w.page.wait_for_load_state()
        assert w.page.locator("#status").inner_text() == "resolved"
        api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['csm']}"})
        got = api.get(f"/v1/engagements/{eid}").json()
        api.close()
        assert got["status"] == "resolved" and got["outcome"] == "recovered"
        w.shot("engagement-resolved")
        w.goto("/console/accounts")
        w.shot("accounts")
        w.goto(f"/console/accounts/{world.seeded['churning'][0]}")
        w.shot("account")
        w.goto("/console/rules", expect=403)
        assert w.page.locator("h1").inner_text() == "Not allowed"
        w.shot("forbidden")
        assert all("403" in e for e in w.errors), w.errors  # the browser logs the 403 we asked for
        w.errors.clear()
        assert crawl(w, w.links() | {urljoin(server, "/console/accounts"), urljoin(server, "/console/inbox")}) >= 3
        # the link worked once
        other = Walker(chromium, server, world.kind, "csm-again")
        try:
            other.goto(url[len(server) :], expect=400)
        finally:
            other.close()
        w.page.click("text=Sign out")
        w.page.wait_for_load_state()
        assert "/console/sign-in" in w.page.url
        w.goto("/console/accounts")
        assert "/console/sign-in" in w.page.url
        assert not w.errors, w.errors
    finally:
        w.close()


def test_ops_sorts_the_accounts_page_by_health(chromium, server, console_world):
    """Issue 21's "the accounts page sorts by health": CS Ops click the health column's
    header, the rows come lowest score first as the API ranks them, and a second click
    turns the order round; the label filter keeps the order."""
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"})
    w = Walker(chromium, server, world.kind, "ops-health")
    try:
        ranked = api.get("/v1/health/accounts", params={"limit": 500}).json()["items"]  # lowest first
        assert len(ranked) == world.seeded["accounts"]
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/accounts")

        def shown() -> list[tuple[str, float]]:
            return [
                (r.get_attribute("data-account") or "", float(r.get_attribute("data-health") or "nan"))
                for r in w.page.locator("tr[data-health]").all()
            ]

        assert [h for _a, h in shown()] != sorted(h for _a, h in shown())  # by id, not already by health
        w.page.get_by_role("link", name="health", exact=True).click()
        w.page.wait_for_load_state()
        assert "sort=health" in w.page.url
        assert w.page.locator("th[aria-sort=ascending]").inner_text().startswith("health")
        assert [h for _a, h in shown()] == [i["score"] for i in ranked]
        w.page.get_by_role("link", name="health ↑").click()
        w.page.wait_for_load_state()
        assert [h for _a, h in shown()] == sorted((i["score"] for i in ranked), reverse=True)
        assert w.page.locator("th[aria-sort=descending]").count() == 1
        w.page.select_option("select[name=label]", "at_risk")
        w.page.get_by_role("button", name="Filter").click()
        w.page.wait_for_load_state()
        at_risk = sorted((i["score"] for i in ranked if i["label"] == "at_risk"), reverse=True)
        assert at_risk and [h for _a, h in shown()] == at_risk
        w.shot("accounts-by-health")
        assert not w.errors, w.errors
    finally:
        w.close()
        api.close()


def test_a_wrong_key_is_refused_in_the_browser(chromium, server, console_world):
    w = Walker(chromium, server, console_world.kind, "anonymous")
    try:
        sign_in_with_key(w, "tl_wrong_key")
        assert re.search("not valid", w.page.inner_text("main"))
        assert not w.errors or all("401" in e for e in w.errors), w.errors
    finally:
        w.close()


def test_ops_validates_the_health_model_and_reads_the_chart_at_390_px(chromium, server, console_world):
    """Issue 21's "the console draws it", on a narrow screen: CS Ops press Validate on the
    health model page, the job page waits for the jobs worker and then shows the churn rate
    per band with its 95% interval, the AUC and the data table beside the chart (numbers
    the API's job result has), and neither page is wider than the screen."""
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"})
    w = Walker(chromium, server, world.kind, "ops-390-validation", width=390)
    try:
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/health")
        w.page.get_by_role("button", name=re.compile("^Validate")).click()
        w.page.wait_for_load_state()
        assert "/console/health/validations/" in w.page.url and w.page.locator("#job-state").count() == 1
        job_id = int(w.page.url.rsplit("/", 1)[1])
        worker = JobWorker(world.settings, world.session_factory, SimulatedClock(world.now))
        assert worker.run_job(job_id).state == "succeeded"
        w.page.wait_for_selector("#auc", timeout=30_000)  # the page's own meta refresh brings the result
        result = api.get(f"/v1/jobs/{job_id}").json()["result"]
        assert result["scored"] > 0
        assert w.page.inner_text("#auc") == ("n/a" if result["auc"] is None else str(result["auc"]))
        rows = w.page.locator("#validation-bands tbody tr").all()
        assert [int(r.get_attribute("data-outcomes") or -1) for r in rows] == [b["outcomes"] for b in result["by_band"]]
        assert w.page.locator("svg.chart circle").count() == sum(1 for b in result["by_band"] if b["outcomes"])
        for path in (w.page.url, "/console/health"):
            if path.startswith("/"):
                w.goto(path)
            assert w.page.evaluate("document.documentElement.scrollWidth") <= 400, path
        w.shot("health-validation")
        assert not w.errors, w.errors
    finally:
        w.close()
        api.close()
