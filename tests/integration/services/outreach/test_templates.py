"""Templates through the API: validation on save (422 with line and sentence), preview
against a real contact, the rendering budget at save, preview and send (the sandbox,
autoescape and the starter set: tests/unit/services/outreach/test_templates.py)."""

from __future__ import annotations

import pytest

from tests.support.helpers import auth
from tests.support.outreach import WIN_BACK, add_account


async def test_save_list_get_and_audit(api, keys, session_factory):
    ops = auth(keys["ops"])
    r = await api.put("/v1/templates/win-back", json=WIN_BACK, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    r = await api.put("/v1/templates/win-back", json={**WIN_BACK, "subject": "Hello {{ recipient.name }}"}, headers=ops)
    assert r.json()["version"] == 2
    assert [t["id"] for t in (await api.get("/v1/templates", headers=ops)).json()["items"]] == ["win-back"]
    assert (await api.get("/v1/templates/nope", headers=ops)).status_code == 404
    from sqlalchemy import select

    from shared.models import AuditRecord

    with session_factory() as s:
        audit = list(s.scalars(select(AuditRecord).where(AuditRecord.object_type == "template")))
    assert [(a.action, a.version, a.actor) for a in audit] == [("create", 1, "ops:test ops"), ("update", 2, "ops:test ops")]
    assert (await api.put("/v1/templates/Bad Id", json=WIN_BACK, headers=ops)).status_code == 422


@pytest.mark.parametrize(
    "part,source,line,words",
    [
        ("html_body", "<p>Hi</p>\n<p>{% if recipient.name %}</p>", 2, "syntax error"),
        ("text_body", "Hi\n\n{{ recipient.nickname }}", 3, "undefined variable"),
        ("subject", "{{ acount.name }}", 1, "undefined variable"),
        ("subject", "Hi {{ '\\n' }}Bcc: victim@example.com", None, "single line"),
        ("text_body", "{{ ''.__class__.__mro__[1].__subclasses__() }}", 1, "not allowed in a template"),
    ],
)
async def test_invalid_templates_are_422_with_line_and_sentence(api, keys, part, source, line, words):
    r = await api.put("/v1/templates/t1", json={**WIN_BACK, part: source}, headers=auth(keys["ops"]))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "template_invalid"
    assert body["detail"]["part"] == part and body["detail"]["line"] == line
    assert words in body["detail"]["message"]


async def test_preview_renders_for_a_real_account_and_contact(api, keys, session_factory):
    ops = auth(keys["ops"])
    add_account(session_factory)
    await api.put("/v1/templates/win-back", json=WIN_BACK, headers=ops)
    r = await api.post("/v1/templates/win-back/preview", json={"account_id": "acme", "user_id": "ada"}, headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["subject"] == "Ada, Acme Inc misses you"
    assert "/unsubscribe/" in r.json()["text_body"] and r.json()["context"]["recipient"]["email"] == "ada@acme.test"
    r = await api.post("/v1/templates/win-back/preview", json={"account_id": "acme"}, headers=ops)
    assert r.status_code == 200 and r.json()["subject"] == "there, Acme Inc misses you"
    r = await api.post("/v1/templates/win-back/preview", json={"account_id": "nope"}, headers=ops)
    assert r.status_code == 404


# ---- the rendering budget ---------------------------------------------------------

LOOPS_WHEN_NOT_SAMPLE = (
    "Hi {{ recipient.first_name }}{% if account.id != 'acme' %}{% for i in range(100000) %}"
    "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}\nUnsubscribe: {{ unsubscribe_url }}"
)


@pytest.mark.parametrize(
    "source,limit",
    [
        ("{{ ('x' * 10**9)|length }}", "max_output_chars"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "max_loop_iterations"),
        ("{{ range(100000)|join('x' * 100000) }}", "max_output_chars"),
        ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "max_output_chars"),
        ("{{ 'x'|center(10**9) }}", "max_output_chars"),
        ("{{ '{:>1000000000}'.format(1) }}", "max_output_chars"),
        ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "cpu_seconds"),
    ],
)
async def test_a_template_over_the_rendering_budget_is_refused_at_save_naming_the_limit(api, keys, source, limit):
    r = await api.put("/v1/templates/greedy", json={**WIN_BACK, "text_body": source}, headers=auth(keys["ops"]))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["limit"] == limit and detail["part"] == "text_body"
    assert f"TOUCHLINE_TEMPLATE_{limit.upper()}" in detail["message"]


async def test_preview_enforces_the_budget_on_branches_the_sample_does_not_enter(api, keys, session_factory):
    ops = auth(keys["ops"])
    add_account(session_factory, "globex")
    r = await api.put("/v1/templates/sneaky", json={**WIN_BACK, "text_body": LOOPS_WHEN_NOT_SAMPLE}, headers=ops)
    assert r.status_code == 200, r.text  # the sample account is acme: the loops are not entered at save
    r = await api.post("/v1/templates/sneaky/preview", json={"account_id": "globex"}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"]["limit"] == "max_loop_iterations"


def test_a_send_over_the_budget_is_skipped_as_render_error_and_the_worker_goes_on(topics, session_factory, workers):
    from tests.support.helpers import drain
    from tests.support.outreach import messages, save_playbook, save_template, send_signals, signal, simple_playbook

    add_account(session_factory, "acme")
    add_account(session_factory, "globex")
    save_template(session_factory, topics, body={**WIN_BACK, "text_body": LOOPS_WHEN_NOT_SAMPLE})
    save_playbook(session_factory, "win-back", simple_playbook())
    w = workers()
    send_signals(topics, [signal("globex"), signal("acme")])
    drain(w["signals"], lambda: len(messages(session_factory)) == 4)
    by_account = {(m.account_id, m.state, m.skip_reason) for m in messages(session_factory)}
    assert by_account == {("globex", "skipped", "render_error"), ("acme", "queued", None)}
    assert all("TOUCHLINE_TEMPLATE_MAX_LOOP_ITERATIONS" in m.last_error for m in messages(session_factory, account_id="globex"))
