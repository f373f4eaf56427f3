"""Issue 23 item 1: CS Ops create a template in the console and preview it for an
account and a contact picked in the form (SQLite and PostgreSQL); the API's validation
beside its field; editing an internal template keeps it internal; CSRF and the CSM's
403 hold."""

from __future__ import annotations

import uuid
from html import unescape

from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth as bearer

FIELDS = {
    "name": "Console <b>template</b>",
    "description": "",
    "subject": "Hello {{ recipient.first_name }} at {{ account.name }}",
    "html_body": '<p>Hi {{ recipient.first_name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text_body": "Hi {{ recipient.first_name }}\nUnsubscribe: {{ unsubscribe_url }}",
}


async def test_ops_creates_a_template_and_previews_it_for_a_picked_contact(api, keys, seeded):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/templates/new")
    assert page.status_code == 200 and 'name="audience"' in page.text
    csrf = csrf_of(page.text)
    tid = f"console-{uuid.uuid4().hex[:8]}"

    # The API's validation beside its field: a subject that does not compile; nothing saved.
    r = await api.post("/console/templates/new", data={"csrf": csrf, "id": tid, "action": "save", **FIELDS, "subject": "{{ oops"})
    assert r.status_code == 422 and 'aria-describedby="e-subject"' in r.text
    assert (await api.get(f"/v1/templates/{tid}", headers=h)).status_code == 404
    r = await api.post("/console/templates/new", data={"csrf": csrf, "id": "win-back", "action": "save", **FIELDS})
    assert r.status_code == 422 and "exists already" in unescape(r.text.split('id="e-id"', 1)[1][:200])
    r = await api.post("/console/templates/new", data={"csrf": csrf, "id": "Not An Id", "action": "save", **FIELDS})
    assert r.status_code == 422 and 'id="e-id"' in r.text

    # Pickers: find the account, pick it, then pick a contact from its contacts; the draft renders for them.
    account = seeded["churning"][0]
    r = await api.post("/console/templates/new", data={"csrf": csrf, "id": tid, "action": "find", "q": account, **FIELDS})
    assert r.status_code == 200 and f'type="radio" name="account_id" value="{account}"' in r.text
    assert "Console <b>template</b>" in unescape(r.text)  # the unsaved text comes back
    r = await api.post(
        "/console/templates/new", data={"csrf": csrf, "id": tid, "action": "preview", "q": account, "account_id": account, **FIELDS}
    )
    assert r.status_code == 200, r.text[-1500:]
    users = (await api.get(f"/v1/accounts/{account}/users", headers=h)).json()["items"]
    contact = next(u for u in users if u.get("email"))
    assert f'<option value="{contact["id"]}"' in r.text  # the account's contacts, offered in the select
    r = await api.post(
        "/console/templates/new",
        data={"csrf": csrf, "id": tid, "action": "preview", "q": account, "account_id": account, "user_id": contact["id"], **FIELDS},
    )
    first = (contact.get("name") or "").split(" ")[0]
    subject = unescape(r.text.split('id="preview-subject">', 1)[1].split("</span>", 1)[0])
    assert r.status_code == 200 and subject.startswith(f"Hello {first} at "), subject
    assert (await api.get(f"/v1/templates/{tid}", headers=h)).status_code == 404  # preview saves nothing

    r = await api.post("/console/templates/new", data={"csrf": csrf, "id": tid, "action": "save", "audience": "customer", **FIELDS})
    assert r.status_code == 303 and r.headers["location"] == f"/console/templates/{tid}?saved=1"
    got = (await api.get(f"/v1/templates/{tid}", headers=h)).json()
    assert got["version"] == 1 and got["subject"] == FIELDS["subject"] and got["audience"] == "customer"


async def test_editing_an_internal_template_keeps_it_internal(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    before = (await api.get("/v1/templates/win-back-owner-brief", headers=h)).json()
    assert before["audience"] == "internal"
    page = await api.get("/console/templates/win-back-owner-brief")
    fields = {f: before[f] or "" for f in ("name", "description", "subject", "html_body", "text_body")}
    r = await api.post(
        "/console/templates/win-back-owner-brief",
        data={"csrf": csrf_of(page.text), "action": "save", **fields, "name": before["name"] + " (edited)"},
    )
    assert r.status_code == 303, r.text[-1500:]
    after = (await api.get("/v1/templates/win-back-owner-brief", headers=h)).json()
    assert after["version"] == before["version"] + 1 and after["audience"] == "internal"


async def test_template_creation_refuses_a_missing_csrf_and_a_csm(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    tid = f"csrf-{uuid.uuid4().hex[:8]}"
    r = await api.post("/console/templates/new", data={"id": tid, "action": "save", **FIELDS})
    assert r.status_code == 403
    assert (await api.get(f"/v1/templates/{tid}", headers=h)).status_code == 404
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get("/console/templates/new")).status_code == 403
    csrf = csrf_of((await api.get("/console/inbox")).text)
    assert (await api.post("/console/templates/new", data={"csrf": csrf, "id": tid, "action": "save", **FIELDS})).status_code == 403
    assert (await api.get(f"/v1/templates/{tid}", headers=h)).status_code == 404
