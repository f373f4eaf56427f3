"""Issue 23 item 1: CS Ops author segments and the content library in the console
(SQLite and PostgreSQL). Segments: create and edit in YAML with the rule language's 422s
under their lines (nothing saved), a preview of the members count that equals the
accounts the API lists for the same filter (and writes nothing), versions with a diff,
delete. The library: create, edit and delete a resource with the API's 422 beside its
field, and import YAML and CSV text all or nothing, each problem with its row. CSRF is
refused; a CSM gets 403 on every authoring route."""

from __future__ import annotations

import uuid
from html import unescape

from sqlalchemy import func, select

from services.rules.models import Segment, SegmentMember
from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth as bearer

SEGMENT = """id: {sid}
name: Console segment {sid}
audience: {{plan: [{plan}]}}
condition:
  all:
    - {{field: account.id, op: exists}}
"""


async def _all_accounts(api, h, **params) -> list[dict]:
    out, cursor = [], None
    while True:
        page = (await api.get("/v1/accounts", headers=h, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})})).json()
        out += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def _members(session_factory, sid: str) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(SegmentMember).where(SegmentMember.segment_id == sid)) or 0


async def test_ops_creates_previews_edits_diffs_and_deletes_a_segment(api, keys, session_factory):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/segments/new")
    assert page.status_code == 200 and "POST /v1/segments" in page.text
    csrf = csrf_of(page.text)
    accounts = await _all_accounts(api, h)
    plans = sorted({a["plan"] for a in accounts if a.get("plan")})
    assert len(plans) >= 2, plans
    sid = f"console-{uuid.uuid4().hex[:8]}"
    text = SEGMENT.format(sid=sid, plan=plans[0])

    # The rule language's 422, under the line its pointer names; nothing saved.
    bad = text.replace("op: exists", "op: sometimes")
    r = await api.post("/console/segments/new", data={"csrf": csrf, "action": "save", "definition": bad})
    assert r.status_code == 422 and "nothing was saved" in r.text
    assert "line 6: /condition/all/0/op" in unescape(r.text), r.text[-3000:]
    assert (await api.get(f"/v1/segments/{sid}", headers=h)).status_code == 404
    r = await api.post("/console/segments/new", data={"csrf": csrf, "action": "preview", "definition": "id: [unclosed"})
    assert r.status_code == 422 and "not valid YAML or JSON at line 1" in unescape(r.text)

    # The preview: the accounts of the plan, as the API lists them; nothing written.
    for plan in plans[:2]:
        want = len(await _all_accounts(api, h, plan=plan))
        r = await api.post(
            "/console/segments/new", data={"csrf": csrf, "action": "preview", "definition": SEGMENT.format(sid=sid, plan=plan)}
        )
        assert r.status_code == 200 and "Nothing was saved" in r.text
        assert f'<strong id="preview-count">{want:,}</strong>' in r.text, (plan, want, r.text.split('id="preview"', 1)[1][:300])
    with session_factory() as s:
        assert s.get(Segment, sid) is None

    r = await api.post("/console/segments/new", data={"csrf": csrf, "action": "save", "definition": text})
    assert r.status_code == 303 and r.headers["location"] == f"/console/segments/{sid}?saved=1"
    got = (await api.get(f"/v1/segments/{sid}", headers=h)).json()
    assert got["current_version"] == 1 and got["definition"]["audience"] == {"plan": [plans[0]]}
    r = await api.post("/console/segments/new", data={"csrf": csrf, "action": "save", "definition": text})
    assert r.status_code == 409 and "exists" in r.text

    # Edit: a new version; the id cannot change; the diff shows the change.
    page = await api.get(f"/console/segments/{sid}/edit")
    assert page.status_code == 200 and f"id: {sid}" in page.text
    r = await api.post(f"/console/segments/{sid}/edit", data={"csrf": csrf, "definition": text.replace(f"id: {sid}", "id: other")})
    assert r.status_code == 422 and "differs from the URL" in unescape(r.text)
    r = await api.post(f"/console/segments/{sid}/edit", data={"csrf": csrf, "definition": text.replace(plans[0], plans[1])})
    assert r.status_code == 303
    assert (await api.get(f"/v1/segments/{sid}", headers=h)).json()["current_version"] == 2
    diff = unescape((await api.get(f"/console/segments/{sid}/versions")).text.split('id="diff"', 1)[1].split("</pre>", 1)[0])
    assert f"-  - {plans[0]}" in diff and f"+  - {plans[1]}" in diff, diff
    # The preview on the edit page also says what the saved version holds now (nobody: no refresh ran).
    r = await api.post(f"/console/segments/{sid}/edit", data={"csrf": csrf, "action": "preview", "definition": text})
    assert r.status_code == 200 and "the saved version holds 0" in r.text
    assert (await api.get(f"/v1/segments/{sid}", headers=h)).json()["current_version"] == 2

    # Delete, as the API's DELETE: gone from the list, versions stay.
    r = await api.post(f"/console/segments/{sid}/delete", data={"csrf": csrf, "confirm": "on"})
    assert r.status_code == 303
    assert (await api.get(f"/v1/segments/{sid}", headers=h)).json()["deleted_at"] is not None
    assert sid not in (await api.get("/console/segments")).text
    assert (await api.get(f"/console/segments/{sid}")).status_code == 404
    assert (await api.get(f"/console/segments/{sid}/edit")).status_code == 404
    assert _members(session_factory, sid) == 0


async def test_ops_creates_edits_imports_and_deletes_library_resources(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/resources/new")
    assert page.status_code == 200
    csrf = csrf_of(page.text)
    rid = f"console-{uuid.uuid4().hex[:8]}"
    form = {
        "csrf": csrf,
        "id": rid,
        "kind": "article",
        "title": "Console <b>guide</b>",
        "url": "ftp://docs.example.com/guide",
        "summary": "",
        "language": "en",
        "goal-adoption": "on",
        "role-admin": "on",
        "use_cases": "analytics, finance",
        "features": "report_created",
        "enabled": "on",
    }
    # The API's validation beside the field: the URL's message under the URL.
    r = await api.post("/console/resources/new", data=form)
    assert r.status_code == 422
    assert "must start with https://" in unescape(r.text.split('id="e-url"', 1)[1][:300])
    assert (await api.get(f"/v1/resources/{rid}", headers=h)).status_code == 404
    r = await api.post("/console/resources/new", data={**form, "id": "Bad Id", "url": "https://docs.example.com/guide"})
    assert r.status_code == 422 and "lower-case slug" in unescape(r.text.split('id="e-id"', 1)[1][:300])

    r = await api.post("/console/resources/new", data={**form, "url": "https://docs.example.com/guide"})
    assert r.status_code == 303 and r.headers["location"] == f"/console/resources/{rid}?saved=1"
    got = (await api.get(f"/v1/resources/{rid}", headers=h)).json()
    assert got["goals"] == ["adoption"] and got["roles"] == ["admin"] and got["use_cases"] == ["analytics", "finance"]
    assert got["version"] == 1 and got["enabled"] is True and got["title"] == "Console <b>guide</b>"
    assert "Console &lt;b&gt;guide&lt;/b&gt;" in (await api.get(f"/console/resources/{rid}")).text
    r = await api.post("/console/resources/new", data={**form, "url": "https://docs.example.com/guide"})
    assert r.status_code == 422 and "exists already" in r.text

    page = await api.get(f"/console/resources/{rid}/edit")
    assert page.status_code == 200 and 'value="analytics, finance"' in page.text
    edit = {k: v for k, v in form.items() if k not in ("id", "enabled", "goal-adoption")}
    r = await api.post(f"/console/resources/{rid}/edit", data={**edit, "url": "https://docs.example.com/v2", "use_cases": "x" * 65})
    assert r.status_code == 422 and "1 to 64 printable" in unescape(r.text.split('id="e-use_cases"', 1)[1][:300])
    r = await api.post(f"/console/resources/{rid}/edit", data={**edit, "url": "https://docs.example.com/v2"})
    assert r.status_code == 303
    got = (await api.get(f"/v1/resources/{rid}", headers=h)).json()
    assert got["version"] == 2 and got["url"] == "https://docs.example.com/v2" and got["enabled"] is False and got["goals"] == []

    # Import: all or nothing, each problem with its row.
    a, b = f"{rid}-a", f"{rid}-b"
    yaml_text = f"- {{id: {a}, kind: video, title: A, url: 'https://x.example/a'}}\n- {{id: {b}, kind: nope, title: B, url: 'https://x.example/b'}}\n"
    r = await api.post("/console/resources/import", data={"csrf": csrf, "format": "yaml", "text": yaml_text})
    assert r.status_code == 422 and "nothing was saved" in r.text
    rows = unescape(r.text.split('id="import-outcomes"', 1)[1])
    assert "pasted.yaml#1" in rows and "/kind" in rows
    assert (await api.get(f"/v1/resources/{a}", headers=h)).status_code == 404
    r = await api.post("/console/resources/import", data={"csrf": csrf, "format": "yaml", "text": yaml_text.replace("nope", "course")})
    assert r.status_code == 200 and "Imported 2 resources" in r.text
    assert (await api.get(f"/v1/resources/{b}", headers=h)).json()["kind"] == "course"
    csv_text = f"id,kind,title,url,use_cases\n{a},video,A again,https://x.example/a,ops; finance\n"
    r = await api.post("/console/resources/import", data={"csrf": csrf, "format": "csv", "text": csv_text})
    assert r.status_code == 200 and 'data-outcome="updated"' in r.text
    assert (await api.get(f"/v1/resources/{a}", headers=h)).json()["use_cases"] == ["ops", "finance"]
    r = await api.post("/console/resources/import", data={"csrf": csrf, "format": "xml", "text": csv_text})
    assert r.status_code == 422 and "yaml or csv" in r.text

    for victim in (rid, a, b):
        r = await api.post(f"/console/resources/{victim}/delete", data={"csrf": csrf, "confirm": "on"})
        assert r.status_code == 303
        assert (await api.get(f"/v1/resources/{victim}", headers=h)).status_code == 404
    assert (await api.post(f"/console/resources/{rid}/delete", data={"csrf": csrf})).status_code == 404


async def test_authoring_refuses_a_missing_csrf_and_a_csm(api, keys, seeded):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    posts = [
        ("/console/segments/new", {"action": "save", "definition": SEGMENT.format(sid="csrf-less", plan="pro")}),
        ("/console/resources/new", {"id": "csrf-less", "kind": "article", "title": "T", "url": "https://x.example/"}),
        ("/console/resources/import", {"format": "yaml", "text": "- {id: csrf-less, kind: article, title: T, url: 'https://x.example/'}"}),
    ]
    for path, data in posts:
        assert (await api.post(path, data=data)).status_code == 403, path
    assert (await api.get("/v1/segments/csrf-less", headers=h)).status_code == 404
    assert (await api.get("/v1/resources/csrf-less", headers=h)).status_code == 404
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    csrf = csrf_of((await api.get("/console/inbox")).text)
    for path in ("/console/segments/new", "/console/resources/new", "/console/resources/import"):
        assert (await api.get(path)).status_code == 403, path
    for path, data in posts:
        assert (await api.post(path, data={**data, "csrf": csrf})).status_code == 403, path
    assert (await api.get("/v1/resources/csrf-less", headers=h)).status_code == 404
    # A CSM still reads the library, without the authoring links.
    page = await api.get("/console/resources")
    assert page.status_code == 200 and "/console/resources/new" not in page.text
