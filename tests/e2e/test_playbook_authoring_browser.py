"""Issue 23 item 1 in a real browser (Debian's chromium, Playwright; SQLite and
PostgreSQL): CS Ops creates a playbook in the console, dry-runs it for an account picked
from a search, and enables it; at 390 px the editor, the dry-run and the versions
pages do not scroll sideways; no console error (a CSP violation would be one)."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.test_console_browser import Walker, chromium, server, sign_in_with_key  # noqa: F401 (fixtures)


def test_ops_creates_a_playbook_dry_runs_it_for_a_picked_account_and_enables_it(chromium, server, console_world):  # noqa: F811
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    pid = f"browser-{uuid.uuid4().hex[:8]}"
    account = world.seeded["churning"][0]
    for width in (1280, 390):
        w = Walker(chromium, server, world.kind, f"ops-author-{width}", width=width)
        try:
            sign_in_with_key(w, world.keys["ops"])
            if width == 1280:
                w.goto("/console/playbooks")
                w.page.click("text=New playbook")
                w.page.wait_for_load_state()
                assert w.page.url.endswith("/console/playbooks/new")
                assert w.page.locator("ol.flow li.step.send").count() == 1  # the example's steps, beside the text
                w.page.fill("#playbook-id", pid)
                text = w.page.input_value("#definition")
                # A mistake first: the API's error under its line, nothing saved.
                w.page.fill("#definition", text.replace("duration: 3d", "duration: soon"))
                w.page.click('button:has-text("Save")')
                w.page.wait_for_load_state()
                assert "nothing was saved" in w.page.inner_text("main")
                assert w.page.locator("li.bad .problem").first.inner_text().startswith("↑ line 7: /steps/1/duration")
                assert api.get(f"/v1/playbooks/{pid}").status_code == 404
                w.shot("playbook-new-error")
                assert w.errors and all("422" in e for e in w.errors), w.errors  # the page answered 422, as it should
                w.errors.clear()
                w.page.fill("#definition", text.replace("name: My playbook", "name: Browser <b>playbook</b>"))
                w.page.click('button:has-text("Save")')
                w.page.wait_for_load_state()
                assert w.page.url.endswith(f"/console/playbooks/{pid}?saved=1")
                assert w.page.locator("h1").inner_text().startswith("Browser <b>playbook</b>")  # escaped, as text
                assert api.get(f"/v1/playbooks/{pid}").json()["enabled"] is False

                # Dry-run for an account picked from a search.
                w.page.click("text=Dry-run for an account")
                w.page.wait_for_load_state()
                w.page.fill("#pick-q", account)
                w.page.click("#pick-find")
                w.page.wait_for_load_state()
                before = api.get("/v1/messages", params={"account_id": account, "limit": 500}).json()["items"]
                w.page.click(f'button[name=account_id][value="{account}"]')
                w.page.wait_for_load_state()
                steps = w.page.locator("#dry-run-steps").inner_text()
                assert "nudge" in steps and "pause" in steps, steps
                gate = w.page.locator("#dry-run-messages").inner_text()
                assert "in_engagement" in gate and "a pooled CSM holds the account" in gate, gate
                assert api.get("/v1/messages", params={"account_id": account, "limit": 500}).json()["items"] == before
                w.shot("playbook-dry-run")

                # Enable it.
                w.goto(f"/console/playbooks/{pid}")
                w.page.click('#playbook-actions button:has-text("Enable")')
                w.page.wait_for_load_state()
                got = api.get(f"/v1/playbooks/{pid}").json()
                assert got["enabled"] is True and got["version"] == 2
                assert w.page.locator("#playbook-actions button").inner_text() == "Disable"
                w.goto(f"/console/playbooks/{pid}/versions")
                assert "+enabled: true" in w.page.locator("#diff").inner_text()
                w.shot("playbook-versions")
            else:
                for name, path in [
                    ("edit", f"/console/playbooks/{pid}/edit"),
                    ("dry-run", f"/console/playbooks/{pid}/dry-run?q={account}"),
                    ("versions", f"/console/playbooks/{pid}/versions"),
                    ("playbook", f"/console/playbooks/{pid}"),
                ]:
                    w.goto(path)
                    width_px = w.page.evaluate("document.documentElement.scrollWidth")
                    assert width_px <= 400, (path, width_px)
                    w.shot(f"playbook-{name}")
            assert not w.errors, w.errors
        finally:
            w.close()
    # Leave the shared console world's playbooks as they were: disabled again.
    r = api.put(
        f"/v1/playbooks/{pid}",
        json={**api.get(f"/v1/playbooks/{pid}").json()["definition"], "enabled": False},
    )
    assert r.status_code == 200


def test_roster_and_keys_pages_at_390_px(chromium, server, console_world):  # noqa: F811
    """The roster (CS Ops) and the API keys (admin) read at 390 px without sideways
    scroll and log no console error; the away preview shows the moves, changing nothing."""
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    for role, path in (("ops", "/console/roster"), ("admin", "/console/keys")):
        w = Walker(chromium, server, world.kind, f"{role}-390-authoring", width=390)
        try:
            sign_in_with_key(w, world.keys[role])
            w.goto(path)
            assert w.page.evaluate("document.documentElement.scrollWidth") <= 400, path
            if role == "ops":
                before = api.get("/v1/csms/csm-1").json()
                w.page.locator("#csm-csm-1 button:has-text('Show the effect')").click()
                w.page.wait_for_load_state()
                assert w.page.locator("#away-moves tbody tr").count() == before["open_engagements"]
                assert w.page.evaluate("document.documentElement.scrollWidth") <= 400
                assert api.get("/v1/csms/csm-1").json()["open_engagements"] == before["open_engagements"]
            w.shot(path.rsplit("/", 1)[1])
            assert not w.errors, w.errors
        finally:
            w.close()
