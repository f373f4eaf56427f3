"""Issue 23 item 1: CS Ops authors playbooks in the console (SQLite and PostgreSQL):
create and edit through the YAML form with the API's 422s under their lines, enable and
disable (a new version each), a diff between versions, and a dry-run for an account
picked from a search, which writes nothing. CSRF is refused; a CSM gets 403."""

from __future__ import annotations

import uuid
from html import unescape

from sqlalchemy import func, select

from services.outreach.models import Engagement, Enrollment, Message
from tests.support.console import csrf_of, sign_in
from tests.support.helpers import auth as bearer

DEFINITION = """name: Console playbook {tag}
enabled: false
trigger: {{kinds: [churn_risk]}}
holdout_percent: 0
steps:
  - {{id: nudge, type: send, channel: email, template: usage-drop-check-in, to: [champion, admin]}}
  - {{id: pause, type: wait, duration: 3d}}
  - {{id: check, type: branch, if: {{metric: count, event: login, window: 7d, op: ">=", value: 1}}, then: convert}}
  - {{id: done, type: end, outcome: completed}}
"""


def _counts(session_factory) -> tuple[int, ...]:
    with session_factory() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) or 0 for m in (Message, Enrollment, Engagement))


async def test_ops_creates_edits_enables_and_diffs_a_playbook(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    page = await api.get("/console/playbooks/new")
    assert page.status_code == 200 and "Step by step" in page.text
    csrf = csrf_of(page.text)
    pid = f"console-{uuid.uuid4().hex[:8]}"
    text = DEFINITION.format(tag=pid)

    # The API's validation, under the line its pointer names: a step of an unknown type at line 7.
    bad = text.replace("type: wait", "type: wiat")
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid, "definition": bad})
    assert r.status_code == 422 and "nothing was saved" in r.text
    assert "line 7: /steps/1" in unescape(r.text), r.text[-3000:]
    assert (await api.get(f"/v1/playbooks/{pid}", headers=h)).status_code == 404
    # A template that does not exist: the service's 422, the text kept.
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid, "definition": text.replace("usage-drop-check-in", "nope")})
    assert r.status_code == 422 and "templates that do not exist: nope" in unescape(r.text) and pid in r.text
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": "Bad Id", "definition": text})
    assert r.status_code == 422 and "id: 1 to 128" in unescape(r.text)

    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid, "definition": text})
    assert r.status_code == 303 and r.headers["location"] == f"/console/playbooks/{pid}?saved=1"
    got = (await api.get(f"/v1/playbooks/{pid}", headers=h)).json()
    assert got["version"] == 1 and got["enabled"] is False and got["definition"]["steps"][1]["duration"] == "3d"
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid, "definition": text})
    assert r.status_code == 422 and "exists already" in r.text

    # Edit: the editor shows the steps; a change is version 2.
    page = await api.get(f"/console/playbooks/{pid}/edit")
    assert page.status_code == 200 and "wait 3d" in page.text and "if count of login in 7d &gt;= 1" in page.text
    r = await api.post(f"/console/playbooks/{pid}/edit", data={"csrf": csrf, "definition": text.replace("duration: 3d", "duration: 5d")})
    assert r.status_code == 303
    assert (await api.get(f"/v1/playbooks/{pid}", headers=h)).json()["version"] == 2

    # Enable: version 3, enabled; the page offers Disable.
    r = await api.post(f"/console/playbooks/{pid}/enable", data={"csrf": csrf})
    assert r.status_code == 303
    got = (await api.get(f"/v1/playbooks/{pid}", headers=h)).json()
    assert got["enabled"] is True and got["version"] == 3
    page = await api.get(f"/console/playbooks/{pid}")
    assert f'action="/console/playbooks/{pid}/disable"' in page.text
    r = await api.post(f"/console/playbooks/{pid}/disable", data={"csrf": csrf})
    assert (await api.get(f"/v1/playbooks/{pid}", headers=h)).json()["enabled"] is False

    # The diff between versions 1 and 2: the wait changed.
    page = await api.get(f"/console/playbooks/{pid}/versions?a=1&b=2")
    assert page.status_code == 200
    diff = unescape(page.text.split('id="diff"', 1)[1])
    assert '<span class="del">-  duration: 3d</span>' in diff and '<span class="add">+  duration: 5d</span>' in diff
    assert "enabled" not in diff.split("</pre>", 1)[0]


async def test_dry_run_shows_steps_messages_and_gate_decisions_and_writes_nothing(api, keys, seeded, session_factory):
    await sign_in(api, keys["ops"])
    csrf = csrf_of((await api.get("/console/playbooks/new")).text)
    pid = f"dry-{uuid.uuid4().hex[:8]}"
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid, "definition": DEFINITION.format(tag=pid)})
    assert r.status_code == 303
    # The picker: a search by name lists accounts, each a link to its dry-run.
    account = seeded["churning"][0]
    # A pooled CSM holds it: tests before this one on the shared world may have resolved
    # the seed's engagement on it, so one is opened by hand if none is open now.
    with session_factory() as s:
        held = s.scalar(
            select(func.count())
            .select_from(Engagement)
            .where(Engagement.account_id == account, Engagement.status.in_(("assigned", "active")))
        )
    if not held:
        opened = await api.post("/v1/engagements", json={"account_id": account}, headers=bearer(keys["ops"]))
        assert opened.status_code == 201, opened.text
    page = await api.get(f"/console/playbooks/{pid}/dry-run", params={"q": account})
    assert page.status_code == 200
    assert f'name="account_id" value="{account}"' in page.text
    before = _counts(session_factory)
    page = await api.post(f"/console/playbooks/{pid}/dry-run", data={"csrf": csrf, "account_id": account})
    assert page.status_code == 200, page.text[-2000:]
    html = unescape(page.text)
    steps = html.split('id="dry-run-steps"', 1)[1].split("</ol>", 1)[0]
    # Every step ran in order, the wait taken as elapsed, the branch with its evidence.
    assert steps.index("<strong>nudge") < steps.index("<strong>pause") < steps.index("<strong>check"), steps
    # The account logged in again after the seed's churn: the branch converts, with the count it read.
    assert "taken as elapsed" in steps and "condition held" in steps and "count(login, 7d)" in steps
    assert "<strong>done" not in steps and 'id="dry-run-status">converted' in html
    messages = html.split('id="dry-run-messages"', 1)[1].split("</table>", 1)[0]
    assert "nudge" in messages and ("would be queued" in messages or "would be skipped" in messages)
    # The seeded churning account has an open engagement: the contact gate steps back, and says why.
    assert "in_engagement" in messages and "a pooled CSM holds the account" in messages
    assert _counts(session_factory) == before  # nothing stored

    # A step that writes through the session (open_engagement inserts the enrolment and
    # opens an engagement) runs in the savepoint too, rolled back: still nothing stored.
    escalate = (
        DEFINITION.format(tag=pid)
        .replace("  - {id: done, type: end, outcome: completed}", "  - {id: escalate, type: open_engagement, goal: recover_usage}")
        .replace("then: convert}", "then: escalate}")
    )
    pid2 = pid + "-esc"
    r = await api.post("/console/playbooks/new", data={"csrf": csrf, "id": pid2, "definition": escalate})
    assert r.status_code == 303, r.text[-2000:]
    quiet = next(a for a in (f"acct-{i:05d}" for i in range(1, 21)) if a not in seeded["engagements"])
    page = await api.post(f"/console/playbooks/{pid2}/dry-run", data={"csrf": csrf, "account_id": quiet})
    assert page.status_code == 200, page.text[-2000:]
    assert "<strong>escalate</strong>" in page.text, unescape(page.text.split('id="dry-run-steps"', 1)[1])[:1500]
    assert _counts(session_factory) == before

    r = await api.post(f"/console/playbooks/{pid}/dry-run", data={"csrf": csrf, "account_id": "no-such-account"})
    assert r.status_code == 404
    r = await api.post(f"/console/playbooks/{pid}/dry-run", data={"account_id": account})
    assert r.status_code == 403  # no CSRF token


async def test_authoring_refuses_a_missing_csrf_and_a_csm(api, keys):
    h = bearer(keys["ops"])
    await sign_in(api, keys["ops"])
    pid = f"csrf-{uuid.uuid4().hex[:8]}"
    r = await api.post("/console/playbooks/new", data={"id": pid, "definition": DEFINITION.format(tag=pid)})
    assert r.status_code == 403
    r = await api.post("/console/playbooks/win-back/disable", data={"csrf": "forged"})
    assert r.status_code == 403
    assert (await api.get("/v1/playbooks/win-back", headers=h)).json()["enabled"] is True
    assert (await api.get(f"/v1/playbooks/{pid}", headers=h)).status_code == 404

    api.cookies.clear()
    await sign_in(api, keys["csm"])
    for path in (
        "/console/playbooks/new",
        "/console/playbooks/win-back/edit",
        "/console/playbooks/win-back/versions",
        "/console/playbooks/win-back/dry-run",
    ):
        assert (await api.get(path)).status_code == 403, path
    csrf = csrf_of((await api.get("/console/inbox")).text)
    for path in (
        "/console/playbooks/new",
        "/console/playbooks/win-back/edit",
        "/console/playbooks/win-back/enable",
        "/console/playbooks/win-back/dry-run",
    ):
        assert (await api.post(path, data={"csrf": csrf, "id": "x", "definition": "name: x"})).status_code == 403, path
