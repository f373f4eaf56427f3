"""CS Ops open an engagement by hand from an account's page in the console (issue 23:
the README tour's "open one by hand" without curl), on both databases, each test on an
empty database of its own: the same OpenIn and service as POST /v1/engagements; queued
for the pool or assigned to a picked CSM; the account's open one for the goal gets the
note instead of a second; refusals beside the field; CSRF and the CSM role refused."""

from __future__ import annotations

from html import unescape

from tests.support.console import csrf_of, sign_in
from tests.support.engagements import add_csm
from tests.support.helpers import auth
from tests.support.outreach import add_account


async def test_ops_open_an_engagement_from_the_account_page(api, keys, session_factory):
    add_account(session_factory, "acme")
    await add_csm(api, keys["ops"], "ann", capacity=1)
    ops = auth(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/accounts/acme")
    assert 'href="/console/accounts/acme/open-engagement"' in page.text
    form = await api.get("/console/accounts/acme/open-engagement")
    assert form.status_code == 200 and 'value="recover_usage" selected' in form.text and 'value="ann"' in form.text
    csrf = csrf_of(form.text)

    # Queued for the pool, with the note as its first note.
    r = await api.post(
        "/console/accounts/acme/open-engagement",
        data={"csrf": csrf, "goal": "recover_usage", "title": "Renewal <at risk>", "note": "renewal at risk", "csm_id": ""},
    )
    assert r.status_code == 303, r.text[-800:]
    eid = r.headers["location"].rsplit("/", 1)[1]
    got = (await api.get(f"/v1/engagements/{eid}", headers=ops)).json()
    assert (got["account_id"], got["goal"], got["status"], got["csm_id"]) == ("acme", "recover_usage", "queued", None)
    opened = (await api.get(r.headers["location"])).text
    assert "Renewal &lt;at risk&gt;" in opened and 'id="already-open"' not in opened
    # Again for the same goal: the open one gets the note, no second engagement, and its page says so.
    r = await api.post(
        "/console/accounts/acme/open-engagement", data={"csrf": csrf, "goal": "recover_usage", "note": "and a second thought"}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/console/engagements/{eid}?already=1"
    assert "Already open: the account had this open recover usage engagement" in (await api.get(r.headers["location"])).text
    listed = (await api.get("/v1/engagements?account_id=acme", headers=ops)).json()["items"]
    assert [e["id"] for e in listed] == [eid]
    notes = [x for x in (await api.get(f"/v1/engagements/{eid}/events", headers=ops)).json()["items"] if x["kind"] == "note"]
    assert "and a second thought" in str(notes[-1]["details"]), notes

    # Another goal, assigned to ann now; then ann is full: the refusal beside the CSM picker.
    r = await api.post("/console/accounts/acme/open-engagement", data={"csrf": csrf, "goal": "discover_expansion", "csm_id": "ann"})
    assert r.status_code == 303, r.text[-800:]
    assigned = (await api.get(f"/v1/engagements/{r.headers['location'].rsplit('/', 1)[1]}", headers=ops)).json()
    assert (assigned["goal"], assigned["csm_id"], assigned["status"]) == ("discover_expansion", "ann", "assigned")
    r = await api.post("/console/accounts/acme/open-engagement", data={"csrf": csrf, "goal": "onboarding_rescue", "csm_id": "ann"})
    assert r.status_code == 422 and "is at capacity (1 of 1 open)" in unescape(r.text.split('id="e-csm_id"', 1)[1][:300])
    assert len((await api.get("/v1/engagements?account_id=acme", headers=ops)).json()["items"]) == 2  # nothing opened
    r = await api.post("/console/accounts/acme/open-engagement", data={"csrf": csrf, "goal": "recover_usage", "csm_id": "nobody"})
    assert r.status_code == 422 and "no CSM 'nobody'" in unescape(r.text.split('id="e-csm_id"', 1)[1][:300])
    r = await api.post("/console/accounts/acme/open-engagement", data={"csrf": csrf, "goal": "world_peace"})
    assert r.status_code == 422 and 'id="e-goal"' in r.text and 'value="world_peace"' not in r.text
    assert (await api.get("/console/accounts/nope/open-engagement")).status_code == 404


async def test_opening_by_hand_refuses_a_missing_csrf_and_a_csm(api, keys, session_factory):
    add_account(session_factory, "acme")
    ops = auth(keys["ops"])
    await sign_in(api, keys["ops"])
    r = await api.post("/console/accounts/acme/open-engagement", data={"goal": "recover_usage"})
    assert r.status_code == 403
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get("/console/accounts/acme/open-engagement")).status_code == 403
    assert "open-engagement" not in (await api.get("/console/accounts/acme")).text
    assert (await api.get("/v1/engagements?account_id=acme", headers=ops)).json()["items"] == []
