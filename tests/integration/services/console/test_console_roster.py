"""Issue 23 item 1, the CSM roster in the console (SQLite and PostgreSQL): CS Ops add a
CSM (the API's validation shown), change a capacity (not below the open load), and set
a CSM away after seeing what happens to their open engagements; the preview changes
nothing. CSRF is refused; a CSM gets 403."""

from __future__ import annotations

import uuid
from html import unescape

from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth as bearer


async def test_ops_adds_a_csm_changes_capacity_and_sets_away_after_the_preview(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/roster")
    assert page.status_code == 200 and 'id="csm-csm-1"' in page.text
    csrf = csrf_of(page.text)
    cid = f"csm-new-{uuid.uuid4().hex[:6]}"
    add = {
        "csrf": csrf,
        "id": cid,
        "name": "Grace <b>Hopper</b>",
        "email": "grace@touchline.example",
        "timezone": "UTC",
        "capacity": "5",
        "skills": "recover_usage",
        "segments": "",
    }
    r = await api.post("/console/roster", data={**add, "email": "not-an-email"})
    assert r.status_code == 422 and "email" in unescape(r.text.split('id="e-add">', 1)[1][:300])
    assert (await api.get(f"/v1/csms/{cid}", headers=h)).status_code == 404
    r = await api.post("/console/roster", data=add)
    assert r.status_code == 303
    got = (await api.get(f"/v1/csms/{cid}", headers=h)).json()
    assert got["capacity"] == 5 and got["skills"] == ["recover_usage"] and got["available"] is True
    assert "Grace &lt;b&gt;Hopper&lt;/b&gt;" in (await api.get("/console/roster")).text

    r = await api.post(f"/console/roster/{cid}/capacity", data={"csrf": csrf, "capacity": "8"})
    assert r.status_code == 303 and (await api.get(f"/v1/csms/{cid}", headers=h)).json()["capacity"] == 8

    # csm-1 holds open engagements: capacity below the load is the API's 422, beside the form.
    load = (await api.get("/v1/csms/csm-1", headers=h)).json()["open_engagements"]
    assert load > 0
    r = await api.post("/console/roster/csm-1/capacity", data={"csrf": csrf, "capacity": str(load - 1)})
    assert r.status_code == 422 and "below csm-1" in unescape(r.text.split('id="e-cap-csm-1"', 1)[1][:300])

    # The preview for csm-1: each open engagement and where it would go; nothing changes.
    before = (await api.get("/v1/csms/csm-1", headers=h)).json()
    r = await api.post("/console/roster/csm-1/away", data={"csrf": csrf, "action": "preview", "away_from": "", "away_until": ""})
    assert r.status_code == 200, r.text[-1500:]
    moves = unescape(r.text.split('id="away-moves"', 1)[1].split("</table>", 1)[0])
    assert moves.count("<tr>") == load + 1  # the header row and one per open engagement
    assert "reassigned to" in moves or "back in the queue" in moves
    after = (await api.get("/v1/csms/csm-1", headers=h)).json()
    assert after["open_engagements"] == before["open_engagements"] and after["available"] is True and after["away_from"] is None

    # Confirm on the new CSM (none of the shared world's engagements move).
    r = await api.post(f"/console/roster/{cid}/away", data={"csrf": csrf, "action": "preview", "away_from": "", "away_until": ""})
    assert r.status_code == 200 and "they hold no open engagement" in r.text
    r = await api.post(f"/console/roster/{cid}/away", data={"csrf": csrf, "action": "confirm", "away_from": "", "away_until": ""})
    assert r.status_code == 303
    got = (await api.get(f"/v1/csms/{cid}", headers=h)).json()
    assert got["available"] is False and got["away_from"] is not None


async def test_ops_deactivates_a_csm_after_the_preview_and_reactivates_them(api, keys):
    """Issue 23: deactivating a CSM from the console, as PATCH /v1/csms/{id} with active:
    false does; the preview shows where each open engagement would go and changes nothing;
    a value other than true or false is a 422 beside the CSM; CSRF and a CSM are refused."""
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    csrf = csrf_of((await api.get("/console/roster")).text)
    load = (await api.get("/v1/csms/csm-1", headers=h)).json()["open_engagements"]
    assert load > 0
    r = await api.post("/console/roster/csm-1/active", data={"csrf": csrf, "active": "false", "action": "preview"})
    assert r.status_code == 200 and "Deactivating <strong>csm-1</strong>" in r.text and 'id="confirm-deactivate"' in r.text
    moves = unescape(r.text.split('id="away-moves"', 1)[1].split("</table>", 1)[0])
    assert moves.count("<tr>") == load + 1  # the header row and one per open engagement
    got = (await api.get("/v1/csms/csm-1", headers=h)).json()
    assert got["active"] is True and got["open_engagements"] == load  # the preview changed nothing
    r = await api.post("/console/roster/csm-1/active", data={"csrf": csrf, "active": "maybe", "action": "confirm"})
    assert r.status_code == 422 and "active: true or false" in unescape(r.text)
    assert (await api.get("/v1/csms/csm-1", headers=h)).json()["active"] is True

    # Confirm on a CSM of this test's own (none of the shared world's engagements move), then back.
    cid = f"csm-off-{uuid.uuid4().hex[:6]}"
    r = await api.put(f"/v1/csms/{cid}", headers=h, json={"name": "Lin", "email": "lin@touchline.example"})
    assert r.status_code in (200, 201), r.text
    r = await api.post(f"/console/roster/{cid}/active", data={"csrf": csrf, "active": "false", "action": "preview"})
    assert r.status_code == 200 and "they hold no open engagement" in r.text
    assert (await api.get(f"/v1/csms/{cid}", headers=h)).json()["active"] is True
    r = await api.post(f"/console/roster/{cid}/active", data={"csrf": csrf, "active": "false", "action": "confirm"})
    assert r.status_code == 303
    got = (await api.get(f"/v1/csms/{cid}", headers=h)).json()
    assert got["active"] is False and got["available"] is False
    row = (await api.get("/console/roster")).text.split(f'id="csm-{cid}"', 1)[1].split("</tr>", 1)[0]
    assert "inactive" in row and f'aria-label="Reactivate {cid}"' in row
    r = await api.post(f"/console/roster/{cid}/active", data={"csrf": csrf, "active": "true", "action": "confirm"})
    assert r.status_code == 303 and (await api.get(f"/v1/csms/{cid}", headers=h)).json()["available"] is True

    assert (await api.post(f"/console/roster/{cid}/active", data={"active": "false", "action": "confirm"})).status_code == 403
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    csrf = csrf_of((await api.get("/console/inbox")).text)
    r = await api.post(f"/console/roster/{cid}/active", data={"csrf": csrf, "active": "false", "action": "confirm"})
    assert r.status_code == 403 and (await api.get(f"/v1/csms/{cid}", headers=h)).json()["active"] is True


async def test_roster_refuses_a_missing_csrf_and_a_csm(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    r = await api.post("/console/roster/csm-1/away", data={"action": "confirm", "away_from": "", "away_until": ""})
    assert r.status_code == 403
    assert (await api.get("/v1/csms/csm-1", headers=h)).json()["available"] is True
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get("/console/roster")).status_code == 403
    csrf = csrf_of((await api.get("/console/inbox")).text)
    r = await api.post("/console/roster/csm-1/away", data={"csrf": csrf, "action": "confirm", "away_from": "", "away_until": ""})
    assert r.status_code == 403
    assert (await api.get("/v1/csms/csm-1", headers=h)).json()["available"] is True


async def test_ops_edits_a_csms_skills_segments_and_working_hours(api, keys):
    """Issue 23 item 1: the edit form patches as PATCH /v1/csms/{id}; the API's 422 beside
    each field it concerns and nothing changed; CSRF, a CSM and an unknown CSM refused."""
    h = bearer(keys["ops"])
    cid = f"csm-edit-{uuid.uuid4().hex[:6]}"
    r = await api.put(f"/v1/csms/{cid}", headers=h, json={"name": "Ada", "email": "ada@touchline.example", "skills": ["recover_usage"]})
    assert r.status_code in (200, 201), r.text
    await sign_in(api, keys["ops"])
    roster_page = await api.get("/console/roster")
    assert f'href="/console/roster/{cid}/edit"' in roster_page.text
    page = await api.get(f"/console/roster/{cid}/edit")
    assert page.status_code == 200 and 'value="recover_usage"' in page.text and 'name="day-0" checked' in page.text
    csrf = csrf_of(page.text)
    form = {
        "csrf": csrf,
        "name": "Ada Lovelace",
        "email": "ada@touchline.example",
        "timezone": "Mars/Olympus",
        "skills": "recover_usage, discover_expansion",
        "segments": "smb, mid_market",
        "day-0": "on",
        "day-2": "on",
        "start": "8.30",
        "end": "16:00",
        "hours_per_week": "12",
    }
    before = (await api.get(f"/v1/csms/{cid}", headers=h)).json()
    r = await api.post(f"/console/roster/{cid}/edit", data=form)
    assert r.status_code == 422
    assert "unknown time zone" in unescape(r.text.split('id="e-timezone"', 1)[1][:300])
    assert "a time looks like 09:00" in unescape(r.text.split('id="e-start"', 1)[1][:300])
    assert 'value="smb, mid_market"' in r.text  # what was typed, kept
    assert (await api.get(f"/v1/csms/{cid}", headers=h)).json() == before
    r = await api.post(f"/console/roster/{cid}/edit", data={**form, "timezone": "Europe/London", "start": "08:30", "hours_per_week": "200"})
    assert r.status_code == 422 and "168" in unescape(r.text.split('id="e-hours_per_week"', 1)[1][:300])

    r = await api.post(f"/console/roster/{cid}/edit", data={**form, "timezone": "Europe/London", "start": "08:30"})
    assert r.status_code == 303
    got = (await api.get(f"/v1/csms/{cid}", headers=h)).json()
    assert got["name"] == "Ada Lovelace" and got["timezone"] == "Europe/London"
    assert got["skills"] == ["recover_usage", "discover_expansion"] and got["segments"] == ["smb", "mid_market"]
    assert got["working_hours"] == {"days": [0, 2], "start": "08:30", "end": "16:00", "hours_per_week": 12.0}
    assert "08:30–16:00 Mon Wed" in (await api.get("/console/roster")).text

    assert (await api.post(f"/console/roster/{cid}/edit", data={k: v for k, v in form.items() if k != "csrf"})).status_code == 403
    assert (await api.get("/console/roster/nobody/edit")).status_code == 404
    assert (await api.post("/console/roster/nobody/edit", data={**form, "timezone": "UTC"})).status_code == 404
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get(f"/console/roster/{cid}/edit")).status_code == 403
    csrf = csrf_of((await api.get("/console/inbox")).text)
    assert (await api.post(f"/console/roster/{cid}/edit", data={**form, "csrf": csrf, "timezone": "UTC"})).status_code == 403
    assert (await api.get(f"/v1/csms/{cid}", headers=h)).json()["timezone"] == "Europe/London"
