"""Issue 23 items 1 and 5 in a real browser (Debian's chromium, Playwright; SQLite and
PostgreSQL): CS Ops defines a segment in the console (a mistake first, shown under its
line), previews its members count, saves it, edits it and reads the diff, then deletes
it; adds a library resource (the API's message beside the URL first), imports two from
CSV and deletes them; edits a CSM's skills, segments and working hours (a bad time zone
first, beside its field). At 390 px the editors do not scroll sideways; no console error
(a CSP violation would be one)."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.test_console_browser import Walker, chromium, server, sign_in_with_key  # noqa: F401 (fixtures)


def _count(api: httpx.Client, **params: str) -> int:
    n, cursor = 0, None
    while True:
        page = api.get("/v1/accounts", params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        n += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return n


def test_ops_defines_previews_edits_and_deletes_a_segment(chromium, server, console_world):  # noqa: F811
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    plans = sorted({a["plan"] for a in api.get("/v1/accounts", params={"limit": 500}).json()["items"] if a.get("plan")})
    sid = f"browser-{uuid.uuid4().hex[:8]}"
    text = f"id: {sid}\nname: Browser <b>segment</b>\naudience: {{plan: [{plans[0]}]}}\ncondition:\n  all:\n    - {{field: account.id, op: exists}}\n"
    w = Walker(chromium, server, world.kind, "ops-segments", width=1280)
    try:
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/segments")
        w.page.click("text=New segment")
        w.page.wait_for_load_state()
        assert w.page.url.endswith("/console/segments/new")
        w.page.fill("#definition", text.replace("op: exists", "op: maybe"))
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert "nothing was saved" in w.page.inner_text("main")
        assert w.page.locator("li.bad .problem").first.inner_text().startswith("↑ line 6: /condition/all/0/op")
        assert w.errors and all("422" in e for e in w.errors), w.errors  # the page answered 422, as it should
        w.errors.clear()
        w.page.fill("#definition", text)
        w.page.click("#preview-button")
        w.page.wait_for_load_state()
        assert w.page.inner_text("#preview-count") == f"{_count(api, plan=plans[0]):,}"
        assert api.get(f"/v1/segments/{sid}").status_code == 404
        w.shot("segment-preview")
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert w.page.url.endswith(f"/console/segments/{sid}?saved=1")
        assert w.page.locator("h1").inner_text().startswith("Browser <b>segment</b>")  # escaped, as text

        w.page.click('#segment-actions a:has-text("Edit")')
        w.page.wait_for_load_state()
        w.page.fill("#definition", w.page.input_value("#definition").replace(f"- {plans[0]}", f"- {plans[1]}"))
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert api.get(f"/v1/segments/{sid}").json()["current_version"] == 2
        w.page.click('#segment-actions a:has-text("Versions")')
        w.page.wait_for_load_state()
        diff = w.page.inner_text("#diff")
        assert f"-  - {plans[0]}" in diff and f"+  - {plans[1]}" in diff, diff
        w.shot("segment-versions")

        w.goto(f"/console/segments/{sid}")
        w.page.check("#delete-confirm")
        w.page.click('button:has-text("Delete the segment")')
        w.page.wait_for_load_state()
        assert f"Deleted {sid}" in w.page.inner_text("main")
        assert api.get(f"/v1/segments/{sid}").json()["deleted_at"] is not None
        assert not w.errors, w.errors
    finally:
        w.close()
    w = Walker(chromium, server, world.kind, "ops-segments-390", width=390)
    try:
        sign_in_with_key(w, world.keys["ops"])
        for path in ("/console/segments/new", f"/console/segments/{sid}/versions", "/console/resources/new", "/console/resources/import"):
            w.goto(path)
            assert w.page.evaluate("document.documentElement.scrollWidth") <= 400, path
        assert not w.errors, w.errors
    finally:
        w.close()


def test_ops_adds_imports_and_deletes_library_resources(chromium, server, console_world):  # noqa: F811
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    rid = f"browser-{uuid.uuid4().hex[:8]}"
    w = Walker(chromium, server, world.kind, "ops-library", width=1280)
    try:
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/resources")
        w.page.click("text=New resource")
        w.page.wait_for_load_state()
        w.page.fill("#f-id", rid)
        w.page.select_option("#f-kind", "video")
        w.page.fill("#f-title", "Browser guide")
        w.page.fill("#f-url", "docs.example.com/guide")
        w.page.check('input[name="goal-adoption"]')
        w.page.fill("#f-use_cases", "analytics, finance")
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert "must start with https://" in w.page.inner_text("#e-url")
        assert w.page.get_attribute("#f-url", "aria-invalid") == "true"
        assert api.get(f"/v1/resources/{rid}").status_code == 404
        w.errors.clear()  # the 422
        w.page.fill("#f-url", "https://docs.example.com/guide")
        w.page.click('button:has-text("Save")')
        w.page.wait_for_load_state()
        assert w.page.url.endswith(f"/console/resources/{rid}?saved=1")
        got = api.get(f"/v1/resources/{rid}").json()
        assert got["kind"] == "video" and got["goals"] == ["adoption"] and got["use_cases"] == ["analytics", "finance"]

        w.goto("/console/resources")
        w.page.click("text=Import YAML or CSV")
        w.page.wait_for_load_state()
        w.page.check('input[name="format"][value="csv"]')
        w.page.fill(
            "#import-text",
            f"id,kind,title,url,goals\n{rid}-a,article,A,https://x.example/a,renewal\n{rid}-b,course,B,https://x.example/b,adoption; renewal\n",
        )
        w.page.click('button:has-text("Import")')
        w.page.wait_for_load_state()
        assert "Imported 2 resources" in w.page.inner_text("#import-result")
        assert api.get(f"/v1/resources/{rid}-b").json()["goals"] == ["adoption", "renewal"]
        w.shot("library-import")

        for victim in (rid, f"{rid}-a", f"{rid}-b"):
            w.goto(f"/console/resources/{victim}")
            w.page.click("text=Edit or delete")
            w.page.wait_for_load_state()
            w.page.check("#delete-confirm")
            w.page.click('button:has-text("Delete the resource")')
            w.page.wait_for_load_state()
            assert f"Deleted {victim}" in w.page.inner_text("main")
            assert api.get(f"/v1/resources/{victim}").status_code == 404
        assert not w.errors, w.errors
    finally:
        w.close()


def test_ops_edits_a_csms_skills_segments_and_working_hours(chromium, server, console_world):  # noqa: F811
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    cid = f"csm-browser-{uuid.uuid4().hex[:6]}"
    assert api.put(f"/v1/csms/{cid}", json={"name": "Grace", "email": "grace@touchline.example"}).status_code in (200, 201)
    for width in (1280, 390):
        w = Walker(chromium, server, world.kind, f"ops-roster-edit-{width}", width=width)
        try:
            sign_in_with_key(w, world.keys["ops"])
            w.goto("/console/roster")
            w.page.click(f'#csm-{cid} a:has-text("Edit")')
            w.page.wait_for_load_state()
            assert w.page.url.endswith(f"/console/roster/{cid}/edit")
            if width == 390:
                assert w.page.evaluate("document.documentElement.scrollWidth") <= 400
                w.shot("roster-edit-390")
                assert not w.errors, w.errors
                continue
            w.page.fill("#f-timezone", "Atlantis/Capital")
            w.page.fill("#f-skills", "recover_usage, discover_expansion")
            w.page.fill("#f-segments", "smb")
            w.page.uncheck('input[name="day-4"]')
            w.page.check('input[name="day-5"]')
            w.page.fill("#f-start", "07:30")
            w.page.click('button:has-text("Save")')
            w.page.wait_for_load_state()
            assert "unknown time zone" in w.page.inner_text("#e-timezone")
            assert w.page.input_value("#f-skills") == "recover_usage, discover_expansion"  # kept as typed
            assert api.get(f"/v1/csms/{cid}").json()["timezone"] == "UTC"
            w.errors.clear()  # the 422
            w.page.fill("#f-timezone", "America/New_York")
            w.page.click('button:has-text("Save")')
            w.page.wait_for_load_state()
            assert w.page.url.endswith(f"/console/roster#csm-{cid}")
            got = api.get(f"/v1/csms/{cid}").json()
            assert got["timezone"] == "America/New_York" and got["segments"] == ["smb"]
            assert got["skills"] == ["recover_usage", "discover_expansion"]
            assert got["working_hours"]["days"] == [0, 1, 2, 3, 5] and got["working_hours"]["start"] == "07:30"
            assert "07:30–17:00 Mon Tue Wed Thu Sat" in w.page.inner_text(f"#csm-{cid}")
            assert not w.errors, w.errors
        finally:
            w.close()


def test_ops_finds_enrolments_sorts_them_and_pages(chromium, server, console_world):  # noqa: F811
    world = console_world
    w = Walker(chromium, server, world.kind, "ops-enrolments", width=1280)
    try:
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/playbooks")
        figure = w.page.locator('a[href^="/console/enrolments?playbook_id="]').first
        want = figure.get_attribute("data-count")
        figure.click()
        w.page.wait_for_load_state()
        assert w.page.inner_text("#count") == f"{int(want or 0):,}"
        w.goto("/console/enrolments?limit=5")
        total = int(w.page.inner_text("#count").replace(",", ""))
        w.page.click('a.sort[data-sort="account"]')
        w.page.wait_for_load_state()
        assert w.page.get_attribute('th:has(a[data-sort="account"])', "aria-sort") == "ascending"
        seen: list[str] = []
        while True:
            seen += [r.get_attribute("data-enrolment") or "" for r in w.page.locator("tr[data-enrolment]").all()]
            accounts = [r.inner_text() for r in w.page.locator("tr[data-enrolment] td:nth-child(3) a").all()]
            assert accounts == sorted(accounts)
            if w.page.locator("#next").count() == 0:
                break
            w.page.click("#next")
            w.page.wait_for_load_state()
        assert len(seen) == len(set(seen)) == total
        w.page.click('a.sort[data-sort="account"]')  # again: the other way
        w.page.wait_for_load_state()
        assert w.page.get_attribute('th:has(a[data-sort="account"])', "aria-sort") == "descending"
        w.shot("enrolments")
        assert not w.errors, w.errors
    finally:
        w.close()
    w = Walker(chromium, server, world.kind, "ops-enrolments-390", width=390)
    try:
        sign_in_with_key(w, world.keys["ops"])
        w.goto("/console/enrolments")
        assert w.page.evaluate("document.documentElement.scrollWidth") <= 400
        assert not w.errors, w.errors
    finally:
        w.close()


def test_a_csm_reads_the_reminders_due_first_in_the_inbox(chromium, server, console_world):  # noqa: F811
    """Issue 23 item 3: the inbox opens with the reminders due (each linking to its
    engagement, which the CSM can open), then the open engagements; at 390 px too."""
    world = console_world
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {world.keys['ops']}"}, timeout=60)
    mine = {e["id"]: e for e in api.get("/v1/engagements", params={"limit": 500}).json()["items"]}
    for width in (1280, 390):
        w = Walker(chromium, server, world.kind, f"csm-reminders-{width}", width=width)
        try:
            sign_in_with_key(w, world.keys["csm"])
            assert w.page.url.endswith("/console/inbox")
            headings = [h.inner_text() for h in w.page.locator("main h2").all()]
            assert headings[:2] == ["Reminders due", "Open engagements"], headings
            listed = [r.get_attribute("data-reminder") for r in w.page.locator("#reminders li[data-reminder]").all()]
            assert all(eid in mine and mine[eid]["status"] in ("assigned", "active") for eid in listed), listed
            if listed:
                w.page.click(f'#reminders li[data-reminder="{listed[0]}"] a')
                w.page.wait_for_load_state()
                assert w.page.url.endswith(f"/console/engagements/{listed[0]}")
            else:
                assert "No reminder has come due" in w.page.inner_text("#reminders")
            assert w.page.evaluate("document.documentElement.scrollWidth") <= (400 if width == 390 else 1300)
            assert not w.errors, w.errors
        finally:
            w.close()
