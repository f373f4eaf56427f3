"""A pooled CSM's day in a real browser (issue 23, item 3): Debian's chromium driven by
Playwright against the app served by uvicorn, over the seeded console world (SQLite and
PostgreSQL). The CSM signs in through the form, lands on the inbox, opens an engagement,
logs a touch by picking a contact, refuses nothing typed when a pick is wrong, sends an
email that the outbox's sender delivers to the real SMTP sink, reads automation's email
as rendered (sandboxed), resolves; and the pages hold at 390 px without sideways scroll.

The server here runs with the caps and quiet hours off (``contact_cap_messages=0``,
``account_cap_touches=0``, ``quiet_hours_start == quiet_hours_end``): the seeded world's
automation has already written to most contacts, and the gate's refusals are the
integration tests' (tests/integration/services/outreach/test_csm_console.py)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.outreach.devmail.sink import MailSink
from services.outreach.interface import Message
from shared.broker import free_port
from shared.clock import SimulatedClock
from shared.db import transaction
from tests.e2e.test_console_browser import Walker, chromium, sign_in_with_key  # noqa: F401 (the fixture)
from tests.support.server import serving


@pytest.fixture
def relaxed(console_world):
    """The world's settings with the caps and quiet hours off, and a mail sink of its own."""
    return console_world.settings.model_copy(
        update={
            "contact_cap_messages": 0,
            "account_cap_touches": 0,
            "quiet_hours_start": 0,
            "quiet_hours_end": 0,
            "mail_sink_port": free_port(),
            "smtp_url": "",
        }
    )


@pytest.fixture
def csm_server(console_world, relaxed):
    from services.wiring.app import create_app

    app = create_app(relaxed, SimulatedClock(console_world.now), console_world.session_factory)
    with serving(app, relaxed) as base:  # a real uvicorn with the API's limits (tests/support/server.py)
        yield base


def _an_open_engagement_for_csm_1(server: str, keys: dict[str, str]) -> str:
    """An engagement of csm-1 on an account with contacts: opened by CS Ops through the
    API on an account without an open one (the shared world's other tests resolve and
    move the seed's), assigned to csm-1."""
    ops = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {keys['ops']}"}, timeout=30)  # a loaded CI machine
    try:
        busy = {
            e["account_id"]
            for e in ops.get("/v1/engagements", params={"limit": 200}).json()["items"]
            if e["status"] in ("queued", "assigned", "active")
        }
        accounts = [a["id"] for a in ops.get("/v1/accounts", params={"limit": 200}).json()["items"]]
        for account in sorted(set(accounts) - busy):
            users = ops.get(f"/v1/accounts/{account}/users", params={"limit": 50})
            if users.status_code != 200 or sum(1 for u in users.json()["items"] if u.get("email")) < 2:
                continue
            opened = ops.post("/v1/engagements", json={"account_id": account, "title": f"Day one with {account}"})
            assert opened.status_code == 201, opened.text
            eid = opened.json()["id"]
            moved = ops.post(f"/v1/engagements/{eid}/reassign", json={"csm_id": "csm-1", "reason": "the browser test"})
            assert moved.status_code == 200, moved.text
            return eid
    finally:
        ops.close()
    raise AssertionError("no account without an open engagement has two contacts with an address")


def test_a_pooled_csm_works_an_engagement_from_sign_in_to_resolution(chromium, csm_server, console_world, relaxed):  # noqa: F811
    world = console_world
    eid = _an_open_engagement_for_csm_1(csm_server, world.keys)
    # Automation's email about this account, with markup that must never run in the console.
    mid = f"auto-{uuid.uuid4().hex[:8]}"
    with transaction(world.session_factory) as s:
        e = s.get(__import__("services.outreach.models", fromlist=["Engagement"]).Engagement, eid)
        s.add(
            Message(
                id=mid, playbook_id="win-back", step_id="s1", touch_key=f"{mid}-t", account_id=e.account_id, user_id=None,
                channel="email", recipient="someone@example.test", subject="We miss you",
                html_body='<h1 id="inside">We miss you</h1><script>window.parent.__pwned = 1</script>', text_body="We miss you",
                payload={}, state="sent", attempts=1, created_at=world.now, updated_at=world.now, sent_at=world.now,
            )
        )  # fmt: skip
    sink = MailSink(None, relaxed.mail_sink_host, relaxed.mail_sink_port).start()
    w = Walker(chromium, csm_server, world.kind, "csm-day")
    try:
        # Sign in through the form (it posts next=/console/): the inbox, not a 403.
        w.goto("/console/sign-in")
        sign_in_with_key(w, world.keys["csm"])
        assert w.page.url.endswith("/console/inbox"), w.page.url
        headers = [h.strip() for h in w.page.locator("#inbox thead th").all_inner_texts()]
        assert {"priority", "ARR", "renewal", "health", "time left"} <= set(headers)
        priorities = [float(p) for p in w.page.locator("#inbox td.priority").all_inner_texts()]
        assert priorities == sorted(priorities, reverse=True)
        w.shot("inbox")
        w.page.click(f"a[href='/console/engagements/{eid}']")
        w.page.wait_for_load_state()
        # A touch with a contact picked by name: no user id to type.
        options = w.page.locator("#touch-contact option").all()
        picked = next(o for o in options if o.get_attribute("value"))
        contact_id = picked.get_attribute("value")
        w.page.select_option("#touch-contact", contact_id)
        w.page.select_option("select[name=kind]", "call")
        w.page.fill("#touch-form input[name=summary]", "Walked the champion through the new reports")
        w.page.click("#touch-form button[type=submit]")
        w.page.wait_for_load_state()
        assert "Done: touch." in w.page.inner_text("main")
        assert "Walked the champion through the new reports" in w.page.locator("#timeline").inner_text()
        # An email in the CSM's words to another contact, through the gate and the outbox.
        emails = [o for o in w.page.locator("#email-contact option").all() if o.get_attribute("value")]
        to = next(o for o in emails if o.get_attribute("value") != contact_id)
        address, to_id = to.inner_text().rsplit(", ", 1)[1], to.get_attribute("value")
        w.page.select_option("#email-contact", to_id)
        w.page.fill("#email-subject", "Your reports, one click away")
        w.page.fill("#email-text", "Hi, shall we look at them together on Thursday?")
        w.page.click("#email-form button[type=submit]")
        w.page.wait_for_load_state()
        assert "Done: email." in w.page.inner_text("main"), w.page.inner_text("main")[:600]
        assert f"email to {address}" in w.page.locator("#touches").inner_text()
        from services.outreach.delivery.worker import SenderWorker

        sender = SenderWorker(relaxed, world.session_factory, SimulatedClock(world.now), worker_id=f"e2e-{uuid.uuid4().hex[:6]}")
        try:
            sender.poll_once()
        finally:
            sender.close()
        arrived = [m for m in sink.messages if m["To"] == address and m["Subject"] == "Your reports, one click away"]
        assert len(arrived) == 1 and "Thursday" in arrived[0].get_body(("plain",)).get_content()
        # Automation's email, as rendered, in a sandbox: its script never runs here.
        w.page.click(f"#automation-sent a[href='/console/engagements/{eid}/messages/{mid}']")
        w.page.wait_for_load_state()
        frame = w.page.frame_locator("iframe[sandbox]")
        assert frame.locator("#inside").inner_text() == "We miss you"
        assert w.page.evaluate("window.__pwned") is None
        # The browser says why: the sandbox (no allow-scripts) blocked the email's script.
        assert [e for e in w.errors if "sandboxed" in e and "allow-scripts" in e], w.errors
        w.errors.clear()
        w.shot("message")
        w.goto(f"/console/engagements/{eid}")
        # Resolve.
        w.page.select_option("select[name=outcome]", "recovered")
        w.page.click("button:has-text('Resolve')")
        w.page.wait_for_load_state()
        assert w.page.locator("#status").inner_text() == "resolved"
        api = httpx.Client(base_url=csm_server, headers={"Authorization": f"Bearer {world.keys['csm']}"}, timeout=30)
        got = api.get(f"/v1/engagements/{eid}").json()
        api.close()
        assert got["status"] == "resolved" and got["outcome"] == "recovered"
        assert [t["details"].get("touch") for t in got["timeline"] if t["kind"] == "touch"] == ["call", "email"]
        touches = [t["details"] for t in got["timeline"] if t["kind"] == "touch"]
        assert touches[0]["user_id"] == contact_id and touches[1]["user_id"] == to_id  # the picked contacts, by id
        assert not w.errors, w.errors
    finally:
        w.close()
        sink.stop()


def test_a_wrong_contact_is_a_readable_error_that_keeps_the_summary(chromium, csm_server, console_world):  # noqa: F811
    """The page offers only the account's contacts; a forged or stale pick (a contact gone
    since the page was drawn) answers the reason and keeps what was typed."""
    world = console_world
    eid = _an_open_engagement_for_csm_1(csm_server, world.keys)
    w = Walker(chromium, csm_server, world.kind, "csm-wrong-contact")
    try:
        sign_in_with_key(w, world.keys["csm"])
        w.goto(f"/console/engagements/{eid}")
        w.page.eval_on_selector(
            "#touch-contact", "s => { const o = document.createElement('option'); o.value = 'nobody'; o.text = 'nobody'; s.add(o); }"
        )
        w.page.select_option("#touch-contact", "nobody")
        w.page.fill("#touch-form input[name=summary]", "Left a voicemail")
        w.page.click("#touch-form button[type=submit]")
        w.page.wait_for_load_state()
        assert "no contact 'nobody'" in w.page.locator(".notice.error").inner_text()
        assert w.page.input_value("#touch-form input[name=summary]") == "Left a voicemail"
        assert all("422" in e for e in w.errors), w.errors
    finally:
        w.close()


@pytest.mark.parametrize("path", ["/console/inbox", "/console/accounts", "/console/search?q=a", "engagement"])
def test_csm_pages_hold_at_390_px_without_breaking_words(chromium, csm_server, console_world, path):  # noqa: F811
    world = console_world
    eid = _an_open_engagement_for_csm_1(csm_server, world.keys) if path == "engagement" else None
    w = Walker(chromium, csm_server, world.kind, "csm-390", width=390)
    try:
        sign_in_with_key(w, world.keys["csm"])
        w.goto(f"/console/engagements/{eid}" if eid else path)
        overflow = w.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        # No cell of a table breaks a word in the middle: each cell is at least as wide as its
        # longest word (planted: the old `overflow-wrap: anywhere` on th/td fails this at once).
        broken = w.page.evaluate(
            """() => {
              const out = [];
              const canvas = document.createElement('canvas').getContext('2d');
              for (const cell of document.querySelectorAll('table.list td, table.list th')) {
                const style = getComputedStyle(cell);
                canvas.font = style.font;
                const width = cell.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
                // a break after a hyphen is the language's own ("acct-" / "00013"); inside a word it is the bug
                for (const word of cell.innerText.split(/\\s+|(?<=-)/)) {
                  if (word && canvas.measureText(word).width > width + 1) out.push(word);
                }
              }
              return out;
            }"""
        )
        assert not broken, (path, broken[:10])
        w.shot(f"390-{path.strip('/').replace('/', '-').replace('?', '-').replace('=', '-')}")
    finally:
        w.close()
