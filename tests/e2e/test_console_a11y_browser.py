"""Issue 23, item 4 ("usable by everyone") in a real browser (Debian's chromium, Playwright;
SQLite and PostgreSQL), over the seeded console world:

- **axe-core** (the version pinned in tools/a11y/package.json, installed by
  tools/install-system-deps.sh into var/a11y) is loaded into every page under test and
  run there; any serious or critical violation fails the test, naming the rule, the page
  and the element. The pages: every console page CS Ops, an admin and a pooled CSM can
  reach by links (a few of each route: filters, sorts and pages included), the pages a
  form answers (validation errors, previews, dry-runs, the key shown once), the error
  pages (403, 404, CSRF), the sign-in and one-time link pages, and the unsubscribe and
  survey pages a customer opens from an email.
- **390 px**: the same pages in a 390 px wide window neither scroll sideways nor break
  a word between two letters or digits (a break after a hyphen or a slash is the
  language's own; code, YAML and URLs in `pre`, `code` and `textarea` may wrap anywhere).
- **The keyboard**: signing in and filtering the accounts list with the keyboard alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qsl, urljoin, urlparse

import pytest

from services.console import session as sessions
from services.outreach.links import tokens
from services.outreach.policy.tokens import make_token
from shared.clock import SimulatedClock
from shared.db import transaction
from tests.e2e.test_console_browser import Walker, chromium, sign_in_with_key  # noqa: F401 (the fixture)
from tests.support.helpers import ROOT
from tests.support.server import serving

AXE_DIR = ROOT / "var" / "a11y" / "node_modules" / "axe-core"
INSTALL = "tools/install-system-deps.sh axe-core"

# axe.run over the document (the sandboxed e-mail frames are the customer's HTML, not ours,
# and run no script: left out), serious and critical violations only, each node's selector
# and the start of its HTML.
RUN_AXE = """async () => {
  const result = await window.axe.run(document, {resultTypes: ['violations'], iframes: false});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({rule: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + '  ' + n.html.slice(0, 160))}));
}"""

# The words the page breaks between two letters or digits (a line change inside a word),
# and how far the page scrolls sideways.
LAYOUT = r"""() => {
  const broken = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const skip = n => n.parentElement.closest('pre, code, textarea, script, style, svg, .visually-hidden');
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (skip(node)) continue;
    const text = node.data;
    for (const m of text.matchAll(/\S{2,}/g)) {
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const rects = Array.from(range.getClientRects()).filter(r => r.width > 0);
      if (rects.length < 2) continue;
      let top = null;
      for (let i = 0; i < m[0].length; i++) {
        range.setStart(node, m.index + i);
        range.setEnd(node, m.index + i + 1);
        const r = range.getClientRects()[0];
        if (!r) continue;
        if (top !== null && r.top > top + 2 && /[\p{L}\p{N}]/u.test(m[0][i - 1] || '') && /[\p{L}\p{N}]/u.test(m[0][i])) {
          broken.push(m[0] + ' (in <' + node.parentElement.tagName.toLowerCase() + '>)');
          break;
        }
        top = r.top;
      }
    }
  }
  const root = document.documentElement;
  return {broken: broken.slice(0, 10), overflow: root.scrollWidth - root.clientWidth};
}"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    """The pinned axe-core's script. Missing or another version is a machine to fix, never a skip."""
    pinned = json.loads((ROOT / "tools" / "a11y" / "package.json").read_text())["dependencies"]["axe-core"]
    try:
        installed = json.loads((AXE_DIR / "package.json").read_text())["version"]
        source = (AXE_DIR / "axe.min.js").read_text()
    except (OSError, ValueError, KeyError):
        installed, source = None, ""
    if installed != pinned:
        pytest.fail(f"axe-core {pinned} is not installed in var/a11y (found {installed}): run {INSTALL}, as `make test` does")
    return source


@pytest.fixture
def app_server(console_world) -> Iterator[tuple[str, object]]:
    from services.wiring.app import create_app

    app = create_app(console_world.settings, SimulatedClock(console_world.now), console_world.session_factory)
    with serving(app, console_world.settings) as base:
        yield base, app


class Audit:
    """Runs axe-core in a page and records serious and critical violations by page; checks
    the same URL at 390 px in a second window signed in as the same role."""

    def __init__(self, browser, base: str, kind: str, role: str, axe: str, app):
        self.axe, self.app, self.base = axe, app, base
        self.wide = Walker(browser, base, kind, f"a11y-{role}")
        self.narrow = Walker(browser, base, kind, f"a11y-{role}-390", width=390)
        self.violations: list[str] = []
        self.layout: list[str] = []
        self.pages: list[str] = []

    def close(self) -> None:
        self.wide.close()
        self.narrow.close()

    def sign_in(self, key: str) -> None:
        for w in (self.wide, self.narrow):
            sign_in_with_key(w, key)

    def check(self, label: str | None = None, narrow: bool = True) -> None:
        """axe on the wide window's current page; the layout of the same URL (when a GET
        gives it) in the narrow one."""
        page = self.wide.page
        name = label or urlparse(page.url).path + (f"?{urlparse(page.url).query}" if urlparse(page.url).query else "")
        self.pages.append(name)
        if page.evaluate("typeof window.axe") == "undefined":
            page.evaluate(self.axe)  # loaded into the page under test (CDP, so the page's CSP allows it)
        for v in page.evaluate(RUN_AXE):
            self.violations.append(f"{name}: {v['rule']} ({v['impact']}: {v['help']})\n      " + "\n      ".join(v["nodes"]))
        if narrow:
            if label is None:
                self.narrow.page.goto(page.url)
            self.narrow_check(name)

    def narrow_check(self, name: str) -> None:
        got = self.narrow.page.evaluate(LAYOUT)
        if got["overflow"] > 0:
            self.layout.append(f"{name}: scrolls sideways by {got['overflow']} px at 390 px")
        if got["broken"]:
            self.layout.append(f"{name}: breaks words at 390 px: {got['broken']}")

    def route_of(self, url: str) -> str:
        path = urlparse(url).path
        for route in self.app.routes:  # type: ignore[attr-defined]
            if getattr(route, "path", "").startswith("/console") and "GET" in (getattr(route, "methods", None) or ()):
                if route.path_regex.match(path):
                    return route.path
        return path

    def crawl(self, start: set[str], per_route: int = 3, limit: int = 150) -> None:
        """Every page reachable by links from ``start``: a few of each route (one per set of
        query parameters, ``per_route`` at most), each checked."""
        seen: set[str] = set()
        taken: dict[str, set[frozenset[str]]] = {}
        todo = sorted(start)
        while todo and len(seen) < limit:
            url = todo.pop(0).split("#")[0]
            if url in seen or "/console/static/" in url or "/sign-out" in url or urlparse(url).netloc != urlparse(self.base).netloc:
                continue
            seen.add(url)
            route = self.route_of(url)
            keys = frozenset(k for k, _v in parse_qsl(urlparse(url).query))
            kinds = taken.setdefault(route, set())
            if keys in kinds or len(kinds) >= per_route:
                continue
            kinds.add(keys)
            response = self.wide.page.goto(url)
            assert response is not None and response.status == 200, (url, response and response.status)
            self.check()
            todo.extend(sorted(self.wide.links() - seen))

    def assert_clean(self, role: str) -> None:
        problems = self.violations + self.layout
        assert not problems, f"{role}: {len(problems)} problems on {len(self.pages)} pages:\n" + "\n".join(problems)


def _submit(w: Walker, selector: str) -> None:
    w.page.click(selector)
    w.page.wait_for_load_state()


def test_every_ops_and_admin_page_passes_axe_and_holds_at_390_px(chromium, app_server, console_world, axe_source):  # noqa: F811
    base, app = app_server
    world = console_world
    churning = world.seeded["churning"][0]
    a = Audit(chromium, base, world.kind, "ops", axe_source, app)
    try:
        a.wide.goto("/console/sign-in")
        a.narrow.goto("/console/sign-in")
        a.check("sign-in", narrow=False)
        a.narrow_check("sign-in")
        a.wide.page.fill("#api_key", "tl_wrong_key")
        _submit(a.wide, "button[type=submit]")
        a.check("sign-in (wrong key)", narrow=False)
        a.sign_in(world.keys["ops"])
        start = {
            urljoin(base, p)
            for p in (
                "/console/",
                "/console/accounts",
                "/console/accounts?label=at_risk&sort=health",
                f"/console/accounts/{churning}",
                "/console/signals",
                "/console/messages",
                "/console/engagements",
                "/console/engagements?status=open&sort=priority",
                "/console/pool",
                "/console/roster",
                "/console/playbooks",
                "/console/playbooks/new",
                "/console/playbooks/win-back/versions",
                "/console/playbooks/win-back/dry-run",
                f"/console/playbooks/win-back/dry-run?q={churning}",
                "/console/templates",
                "/console/templates/new",
                "/console/rules",
                "/console/rules/new",
                f"/console/rules/no-login-14d/dry-run?account_id={churning}",
                "/console/health",
                "/console/health/edit",
                "/console/segments",
                "/console/resources",
                "/console/surveys",
                "/console/dead-letters",
                "/console/enrolments",
                "/console/broadcasts",
                "/console/segments/new",
                "/console/resources/new",
                "/console/search?q=a",
                "/console/search?q=example.com",
            )
        }
        a.crawl(start)

        # The pages forms answer: a validation error beside its field, a preview, a dry-run.
        a.wide.goto("/console/rules/wau-down-40/edit")
        a.wide.page.fill("#definition", a.wide.page.input_value("#definition").replace("kind: churn_risk", "kind: 42"))
        _submit(a.wide, 'button:has-text("Save")')
        a.check("rule editor (422)", narrow=False)
        a.wide.goto("/console/playbooks/new")
        a.wide.page.fill("#playbook-id", "a11y-check")
        a.wide.page.fill("#definition", a.wide.page.input_value("#definition").replace("duration: 3d", "duration: soon"))
        _submit(a.wide, 'button:has-text("Save")')
        a.check("playbook editor (422)", narrow=False)
        a.wide.goto("/console/playbooks/win-back/dry-run")
        a.wide.page.fill("#pick-q", churning)
        _submit(a.wide, "#pick-find")
        _submit(a.wide, f'button[name=account_id][value="{churning}"]')
        a.check("playbook dry-run (result)", narrow=False)
        a.wide.goto("/console/templates/win-back")
        a.wide.page.fill("#pick-q", churning)
        _submit(a.wide, "#pick-find")
        a.wide.page.check(f"input[name=account_id][value='{churning}']")
        _submit(a.wide, "button[value=preview]")
        a.check("template preview", narrow=False)
        a.wide.goto("/console/templates/new")
        a.wide.page.fill("#f-id", "Not An Id!")
        _submit(a.wide, "#save")
        a.check("template editor (422)", narrow=False)
        a.wide.goto("/console/roster")
        a.wide.page.locator("#csm-csm-1 button:has-text('Show the effect')").click()
        a.wide.page.wait_for_load_state()
        a.check("roster (away preview)", narrow=False)
        a.wide.goto("/console/health/edit")
        a.wide.page.fill("#definition", "components: 42")
        _submit(a.wide, 'button:has-text("Save")')
        a.check("health model editor (422)", narrow=False)
        # Error pages: 404, and a form posted without its CSRF token (403).
        a.wide.goto("/console/accounts/no-such-account", expect=404)
        a.check("404")
        a.wide.goto("/console/rules/no-login-14d")
        a.wide.page.eval_on_selector_all("input[name=csrf]", "els => els.forEach(e => e.remove())")
        a.wide.page.locator("#main form[method=post] button[type=submit]").first.click()
        a.wide.page.wait_for_load_state()
        a.check("CSRF refused (403)", narrow=False)
        a.assert_clean("ops")
    finally:
        a.close()

    admin = Audit(chromium, base, world.kind, "admin", axe_source, app)
    try:
        admin.sign_in(world.keys["admin"])
        admin.crawl({urljoin(base, "/console/keys")}, limit=1)
        admin.wide.page.fill("#key-name", "a11y check")
        _submit(admin.wide, "#create-key")
        admin.check("API key created (shown once)", narrow=False)
        admin.assert_clean("admin")
    finally:
        admin.close()


def test_every_csm_page_and_the_customers_pages_pass_axe_and_hold_at_390_px(chromium, app_server, console_world, axe_source):  # noqa: F811
    base, app = app_server
    world = console_world
    with transaction(world.session_factory) as s:
        link = sessions.create_link(
            s, secret=world.settings.secret, base_url=base, role="csm", csm_id="csm-1", now=world.now, minutes=15, key_minutes=720
        )
    a = Audit(chromium, base, world.kind, "csm", axe_source, app)
    try:
        a.wide.page.goto(link)
        a.check("one-time link", narrow=False)
        a.wide.goto("/console/link?token=damaged", expect=400)
        a.check("one-time link (damaged)", narrow=False)
        a.sign_in(world.keys["csm"])
        a.crawl({urljoin(base, p) for p in ("/console/inbox", "/console/accounts", "/console/search?q=a", "/console/resources")})
        a.wide.goto("/console/rules", expect=403)
        a.check("403")
        # A customer's pages: unsubscribe (confirm, done, damaged) and a survey (form, off-scale, expired).
        unsubscribe = make_token(world.settings.secret, email="ada@example.com", account_id=world.seeded["churning"][0])
        survey = {"s": "nps-a11y", "k": "nps", "a": world.seeded["churning"][0], "u": "ada", "m": "m-a11y"}
        good = tokens.mint(world.settings.secret, tokens.SURVEY, survey, now=world.now, valid_for=timedelta(days=30))
        expired = tokens.mint(
            world.settings.secret, tokens.SURVEY, survey, now=world.now - timedelta(days=60), valid_for=timedelta(days=30)
        )
        for name, path, status in (
            ("unsubscribe", f"/unsubscribe/{unsubscribe}", 200),
            ("unsubscribe (damaged)", "/unsubscribe/damaged", 400),
            ("survey", f"/s/{good}", 200),
            ("survey (expired)", f"/s/{expired}", 410),
        ):
            a.wide.goto(path, expect=status)
            a.check(name)
        a.assert_clean("csm and customers")
    finally:
        a.close()


def _tab_to(w: Walker, selector: str, most: int = 40) -> list[str]:
    """Press Tab until the element ``selector`` names has the focus; the stops on the way."""
    stops: list[str] = []
    for _ in range(most):
        w.page.keyboard.press("Tab")
        if w.page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return stops
        stops.append(
            w.page.evaluate(
                "() => { const e = document.activeElement; return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.name ? '[name=' + e.name + ']' : '') + ' ' + (e.innerText || '').slice(0, 30); }"
            )
        )
    raise AssertionError(f"{selector} never got the focus after {most} Tabs: {stops}")


def test_signing_in_and_filtering_the_accounts_work_from_the_keyboard(chromium, app_server, console_world):  # noqa: F811
    """No mouse: Tab to the key, type it, Enter signs in; on the accounts page the first
    Tab stop skips the menu to the content, then the filter form is filled (text, a
    select by arrow keys, a checkbox by Space) and sent with Enter."""
    base, _app = app_server
    world = console_world
    w = Walker(chromium, base, world.kind, "keyboard")
    try:
        w.goto("/console/sign-in")
        _tab_to(w, "#api_key", most=3)
        w.page.keyboard.type(world.keys["ops"])
        with w.page.expect_navigation():
            w.page.keyboard.press("Enter")
        assert w.page.url.endswith("/console/"), w.page.url
        w.goto("/console/accounts")
        w.page.keyboard.press("Tab")
        assert w.page.evaluate("document.activeElement.className") == "skip"
        w.page.keyboard.press("Enter")  # skip the menu and the header's search
        assert w.page.evaluate("document.activeElement.id") == "main"
        w.page.keyboard.press("Tab")
        assert w.page.evaluate("document.activeElement.name") == "q"  # the first field of the content
        w.page.keyboard.type("acct-0001")
        assert _tab_to(w, "select[name=segment]", most=1) == []
        _tab_to(w, "select[name=lifecycle_stage]", most=2)
        w.page.keyboard.press("ArrowDown")  # "any" -> the first stage
        stage = w.page.evaluate("document.activeElement.value")
        assert stage
        _tab_to(w, "input[name=signalled]", most=3)
        w.page.keyboard.press("Space")
        assert w.page.is_checked("input[name=signalled]")
        with w.page.expect_navigation():
            w.page.keyboard.press("Enter")  # Enter in a form's field sends it
        query = dict(parse_qsl(urlparse(w.page.url).query))
        assert (query.get("q"), query.get("lifecycle_stage"), query.get("signalled")) == ("acct-0001", stage, "1"), w.page.url
        rows = w.page.locator("table.accounts tbody tr[data-account]").all()
        assert all((r.get_attribute("data-account") or "").startswith("acct-0001") for r in rows)
        assert not w.errors, w.errors
    finally:
        w.close()
