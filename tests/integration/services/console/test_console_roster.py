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
