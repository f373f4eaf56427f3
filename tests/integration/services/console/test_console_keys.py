"""Issue 23 item 1, API keys in the console (SQLite and PostgreSQL): an admin creates a
key and sees its secret once, lists keys, revokes one (the API refuses it at once);
CS Ops get 403; CSRF is refused; each change is audited."""

from __future__ import annotations

import re
import uuid
from html import unescape

from sqlalchemy import select

from shared.models import ApiKey, AuditRecord
from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth as bearer


async def test_admin_creates_a_key_shown_once_lists_and_revokes_it(api, keys, session_factory):
    await sign_in(api, keys["admin"])
    page = await api.get("/console/keys")
    assert page.status_code == 200 and 'href="/console/keys"' in page.text  # in the admin's menu
    csrf = csrf_of(page.text)
    name = f"reporting <b>{uuid.uuid4().hex[:6]}</b>"
    r = await api.post("/console/keys", data={"csrf": csrf, "name": name, "role": "csm", "csm_id": ""})
    assert r.status_code == 422 and "choose them" in r.text  # a csm key needs a CSM of the roster
    r = await api.post("/console/keys", data={"csrf": csrf, "name": name, "role": "ops"})
    assert r.status_code == 200
    key = unescape(re.search(r'id="new-key">([^<]+)<', r.text).group(1))
    assert key.startswith("tl_") and (await api.get("/v1/rules", headers=bearer(key))).status_code == 200
    listed = await api.get("/console/keys")
    assert key not in listed.text and key.split("_")[1] in listed.text  # never shown again; its prefix is
    assert "reporting &lt;b&gt;" in listed.text
    key_id = int(
        re.search(r'<tr id="key-(\d+)"><td>\d+</td><td>' + re.escape(name.replace("<", "&lt;").replace(">", "&gt;")), listed.text).group(1)
    )

    r = await api.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf})
    assert r.status_code == 303
    assert (await api.get("/v1/rules", headers=bearer(key))).status_code == 401
    assert (
        f'id="key-{key_id}"' in (page := (await api.get("/console/keys")).text)
        and "revoked" in page.split(f'id="key-{key_id}"', 1)[1][:600]
    )
    with session_factory() as s:
        actions = [
            a.action
            for a in s.scalars(select(AuditRecord).where(AuditRecord.object_type == "api_key", AuditRecord.object_id == str(key_id)))
        ]
    assert actions == ["create", "revoke"]


async def test_keys_refuse_ops_and_a_missing_csrf(api, keys, session_factory):
    await sign_in(api, keys["admin"])
    r = await api.post("/console/keys", data={"name": "no csrf", "role": "admin"})
    assert r.status_code == 403 and "tl_" not in r.text
    api.cookies.clear()
    await sign_in(api, keys["ops"])
    page = await api.get("/console/")
    assert 'href="/console/keys"' not in page.text
    assert (await api.get("/console/keys")).status_code == 403
    r = await api.post("/console/keys", data={"csrf": csrf_of(page.text), "name": "ops-made", "role": "admin"})
    assert r.status_code == 403 and "tl_" not in r.text.split("</header>")[-1]
    with session_factory() as s:
        assert not list(s.scalars(select(ApiKey).where(ApiKey.name.in_(["no csrf", "ops-made"]))))
