"""The recommend step end to end on the real broker, the SMTP sink, the simulated clock
and both databases: churning accounts of different use cases receive different
resources, each message saying why; a resource a contact received is never sent again
(the next best, then the step's fallback, then a skip with the reason); the contact gate
and the holdout apply as to any send; bad step definitions are a 422 naming the path.
(The scoring itself, case by case: tests/unit/services/outreach/test_routing.py.)"""

from __future__ import annotations

import re

from sqlalchemy import select

from services.ingest.models import AccountEventSeen
from services.outreach.content.schemas import ResourceIn
from services.outreach.content.service import save as save_resource
from services.outreach.models import Enrollment
from shared.db import transaction
from tests.support.helpers import T0, auth, drain
from tests.support.outreach import add_account, days, messages, save_playbook, save_template, send_signals, signal, simple_playbook

PICK = {
    "name": "A resource for you",
    "subject": "{{ recipient.first_name }}, {{ resource.title }}",
    "html_body": '<p><a href="{{ resource.url }}">{{ resource.title }}</a></p><p>{{ resource.summary }}</p>'
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text_body": "{{ resource.title }}: {{ resource.url }}\n{{ resource.summary }}\nUnsubscribe: {{ unsubscribe_url }}",
}
LIBRARY = {
    "first-reports": {"kind": "article", "title": "Your first reports", "url": "https://help.example.com/reports",
                      "goals": ["win-back", "adoption"], "use_cases": ["analytics"], "features": ["report_created"]},
    "alerts-video": {"kind": "video", "title": "Alerts in four minutes", "url": "https://help.example.com/alerts",
                     "goals": ["win-back"], "use_cases": ["monitoring"], "features": ["alert_configured"]},
    "welcome-back": {"kind": "article", "title": "What is new", "url": "https://help.example.com/new", "goals": ["win-back"]},
    "grow-guide": {"kind": "course", "title": "Roll out to everyone", "url": "https://help.example.com/grow",
                   "goals": ["expansion"], "use_cases": ["analytics"]},
    "first-week": {"kind": "checklist", "title": "The first-week checklist", "url": "https://help.example.com/first-week",
                   "goals": ["adoption"]},
}  # fmt: skip
RECOMMEND = {"id": "recommend", "type": "recommend", "channel": "email", "template": "resource-pick", "to": ["champion"]}


def _world(session_factory, settings, step: dict | None = None, **playbook) -> None:
    with transaction(session_factory) as s:
        for rid, body in LIBRARY.items():
            save_resource(s, rid, ResourceIn(**body), actor="test", now=T0)
    save_template(session_factory, settings, "resource-pick", PICK)
    save_playbook(session_factory, "route", simple_playbook(steps=[step or RECOMMEND], **playbook))


def _by_account(session_factory) -> dict[str, list]:
    out: dict[str, list] = {}
    for m in messages(session_factory, playbook_id="route"):
        out.setdefault(m.account_id, []).append(m)
    return out


async def test_churning_accounts_of_different_use_cases_get_different_explained_resources(
    topics, session_factory, workers, sink, api, keys
):
    add_account(session_factory, "analytics-co", traits={"use_case": "analytics"})
    add_account(session_factory, "monitor-co", traits={"use_case": "Monitoring"})  # tags match whatever the case
    add_account(session_factory, "reporting-co", traits={"use_case": "analytics"})
    with transaction(session_factory) as s:  # reporting-co already creates reports: it needs no guide to them
        s.add(AccountEventSeen(account_id="reporting-co", event_name="report_created", first_seen_at=T0, last_seen_at=T0))
    _world(session_factory, topics)
    w = workers()
    send_signals(topics, [signal("analytics-co"), signal("monitor-co"), signal("reporting-co")])
    drain(w["signals"], lambda: len(messages(session_factory)) == 3)

    got = {a: (m.resource_id, m.state, m.recipient) for a, [m] in _by_account(session_factory).items()}
    assert got == {
        "analytics-co": ("first-reports", "queued", "ada@analytics-co.test"),
        "monitor-co": ("alerts-video", "queued", "ada@monitor-co.test"),
        "reporting-co": ("welcome-back", "queued", "ada@reporting-co.test"),
    }
    [analytics] = messages(session_factory, account_id="analytics-co")
    why = analytics.payload["recommendation"]
    assert why["score"] == 9 and why["matched"] == {"goal": "win-back", "use_case": "analytics"}
    assert why["features_not_adopted"] == ["report_created"] and why["fallback"] is False
    assert why["goal"] == "win-back" and why["considered"] == 5 and why["eligible"] == 2
    assert why["runner_up"] == {"resource_id": "welcome-back", "score": 4}
    assert why["why"] == ("first-reports scored 9: goal win-back (+4), use case analytics (+3), feature report_created not used yet (+2)")
    [reporting] = messages(session_factory, account_id="reporting-co")
    assert reporting.payload["recommendation"]["score"] == 4 and reporting.payload["recommendation"]["eligible"] == 1
    with session_factory() as s:
        [e] = s.scalars(select(Enrollment).where(Enrollment.account_id == "monitor-co")).all()
    assert e.history[0]["resources"] == ["alerts-video"]

    # The message API shows the choice and its reasons; ?resource_id= lists who got one.
    ops = auth(keys["ops"])
    r = await api.get("/v1/messages", params={"account_id": "monitor-co"}, headers=ops)
    [item] = r.json()["items"]
    assert item["resource_id"] == "alerts-video" and item["recommendation"]["matched"] == {"goal": "win-back", "use_case": "Monitoring"}
    assert "unsubscribe_url" not in item["recommendation"] and "payload" not in item
    r = await api.get("/v1/messages", params={"resource_id": "first-reports"}, headers=ops)
    assert [m["account_id"] for m in r.json()["items"]] == ["analytics-co"]

    # The email names the chosen resource.
    w["sender"].poll_once()
    mail = {str(m["To"]): m for m in sink.messages}
    assert mail["ada@analytics-co.test"]["Subject"] == "Ada, Your first reports"
    assert mail["ada@monitor-co.test"]["Subject"] == "Ada, Alerts in four minutes"
    text = mail["ada@monitor-co.test"].get_body(("plain",)).get_content()
    # Through the signed redirect (docs/content.md, "Every link answers back"), which leads to it.
    link = re.search(r"Alerts in four minutes: http://touchline\.test(/r/[A-Za-z0-9_-]+)\n", text)
    assert link and "help.example.com" not in text
    assert (await api.get(link[1])).headers["location"] == "https://help.example.com/alerts"


def test_a_resource_is_never_sent_twice_then_the_fallback_then_a_skip_with_the_reason(topics, session_factory, workers, clock):
    add_account(session_factory, "analytics-co", traits={"use_case": "analytics"})
    _world(session_factory, topics, step={**RECOMMEND, "fallback": "first-week"})
    w = workers()

    def enrol(n: int) -> list:
        send_signals(topics, [signal("analytics-co", fired_at=clock.now())])
        drain(w["signals"], lambda: len(messages(session_factory)) == n)
        return messages(session_factory)

    first = enrol(1)[-1]
    assert (first.resource_id, first.state) == ("first-reports", "queued")
    first_id = first.id

    # A day later the contact gate holds (one message per contact in three days): no resource is spent.
    clock.advance(days(1))
    capped = enrol(2)[-1]
    assert (capped.state, capped.skip_reason, capped.resource_id) == ("skipped", "contact_cap", None)

    clock.advance(days(3))
    second = enrol(3)[-1]
    why = second.payload["recommendation"]
    assert (second.resource_id, second.state) == ("welcome-back", "queued")  # the next best, not first-reports again
    assert why["already_received"] == ["first-reports"] and why["eligible"] == 1

    clock.advance(days(4))
    third = enrol(4)[-1]
    why = third.payload["recommendation"]
    assert (third.resource_id, third.state) == ("first-week", "queued")  # nothing else matches a win-back: the fallback
    assert why["fallback"] is True and why["already_received"] == ["first-reports", "welcome-back"]
    assert why["why"] == "no resource scored 1 or more for this recipient: the step's fallback"

    clock.advance(days(4))
    fourth = enrol(5)[-1]
    assert (fourth.state, fourth.skip_reason, fourth.resource_id) == ("skipped", "no_resource", None)
    assert fourth.payload["recommendation"]["why"] == (
        "no resource scored 1 or more for this recipient; the fallback first-week was already received"
    )
    assert [m.resource_id for m in messages(session_factory) if m.state == "queued"] == ["first-reports", "welcome-back", "first-week"]
    assert messages(session_factory)[0].id == first_id


def test_no_match_without_a_fallback_is_a_skip_and_the_holdout_records_what_it_would_have_got(topics, session_factory, workers):
    add_account(session_factory, "nobody-co", traits={"use_case": "knitting"})
    add_account(session_factory, "held-co", traits={"use_case": "analytics"})
    _world(session_factory, topics, step={**RECOMMEND, "kinds": ["video", "course"]})
    save_playbook(session_factory, "held", simple_playbook(steps=[RECOMMEND], trigger={"rules": ["held-rule"]}, holdout_percent=100))
    w = workers()
    send_signals(topics, [signal("nobody-co"), signal("held-co", rule_id="held-rule")])
    drain(w["signals"], lambda: len(messages(session_factory)) == 2)
    [nobody] = messages(session_factory, account_id="nobody-co")
    assert (nobody.state, nobody.skip_reason, nobody.resource_id) == ("skipped", "no_resource", None)
    assert nobody.payload["recommendation"] == {
        "goal": "win-back",
        "considered": 5,
        "eligible": 0,
        "why": "no resource scored 1 or more for this recipient",
    }
    [held] = messages(session_factory, account_id="held-co")
    assert (held.state, held.skip_reason, held.resource_id) == ("skipped", "held_out", "first-reports")
    assert held.payload["recommendation"]["score"] == 9


async def test_bad_recommend_steps_are_422_naming_the_path(api, keys, session_factory, topics):
    ops = auth(keys["ops"])
    with transaction(session_factory) as s:
        save_resource(s, "first-week", ResourceIn(**LIBRARY["first-week"]), actor="test", now=T0)
    save_template(session_factory, topics, "resource-pick", PICK)
    cases = [
        ({**RECOMMEND, "goal": "world-peace"}, "/steps/0/goal"),
        ({**RECOMMEND, "kinds": ["podcast"]}, "/steps/0/kinds/0"),
        ({**RECOMMEND, "min_score": 0}, "/steps/0/min_score"),
        ({**RECOMMEND, "channel": "webhook"}, "/steps/0/channel"),
        ({**RECOMMEND, "to": ["owner"]}, "/steps/0/to"),
        ({**RECOMMEND, "template": None}, "/steps/0"),
    ]
    for step, path in cases:
        r = await api.put("/v1/playbooks/route", json=simple_playbook(steps=[step]), headers=ops)
        assert r.status_code == 422, (step, r.text)
        [problem] = r.json()["detail"]
        assert r.json()["error"] == "playbook_invalid" and problem["pointer"] == path and problem["message"], (step, r.json())
    r = await api.put("/v1/playbooks/route", json=simple_playbook(steps=[{**RECOMMEND, "fallback": "gone"}]), headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "unknown_resource"
    assert r.json()["detail"] == [
        {"pointer": "/steps/0/fallback", "message": "no resource 'gone' in the content library; add it with PUT /v1/resources/gone first"}
    ]
    r = await api.put("/v1/playbooks/route", json=simple_playbook(steps=[{**RECOMMEND, "fallback": "first-week"}]), headers=ops)
    assert r.status_code == 200, r.text


def test_a_batch_of_recommendations_costs_the_same_statements_whatever_its_size(topics, engine, session_factory, clock, monkeypatch):
    """The step reads the library, the resources the batch's contacts received and the
    feature events its accounts sent once per batch: 40 signals cost what 4 do."""
    import json

    from kafka.consumer.fetcher import ConsumerRecord
    from sqlalchemy import event

    from services.outreach.playbooks.worker import SignalWorker
    from shared import db

    monkeypatch.setattr(db, "COPY_THRESHOLD", 1)  # PostgreSQL's COPY path at every size (as test_playbooks.py does)
    _world(session_factory, topics, step={**RECOMMEND, "to": ["champion", "admin"]})
    small, large = [f"s{i:02d}" for i in range(4)], [f"l{i:02d}" for i in range(40)]
    for i, a in enumerate(small + large):
        add_account(session_factory, a, traits={"use_case": ["analytics", "monitoring"][i % 2]})
    worker = SignalWorker(topics, session_factory, clock)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def run(accounts: list[str]) -> int:
        records = [
            ConsumerRecord("cs.signals", 0, None, i, 0, 0, a.encode(), json.dumps(signal(a)).encode(), [], None, 0, 0, 0)
            for i, a in enumerate(accounts)
        ]
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            with transaction(session_factory) as s:
                worker.handle_batch(s, records)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    assert run(small) == run(large), "\n".join(statements)
    routed = {(m.account_id, m.user_id): m.resource_id for m in messages(session_factory)}
    assert len(routed) == 88 and routed[("l01", "ada")] == "alerts-video" and routed[("l00", "bob")] == "first-reports"


async def test_a_csm_sends_a_resource_through_the_same_gate_and_it_counts_as_a_touch(
    api, keys, session_factory, topics, clock, workers, sink
):
    from services.outreach.models import Suppression
    from services.outreach.policy.tokens import email_hash
    from services.outreach.starter import seed_starter_content
    from tests.support.engagements import add_csm, csm_key, open_engagement, timeline
    from tests.support.engagements import worker as engagement_worker

    await add_csm(api, keys["ops"], "ann", name="Ann Smith")
    await add_csm(api, keys["ops"], "bo", name="Bo Diddley")
    mine, theirs = auth(csm_key(session_factory, clock, "ann")), auth(csm_key(session_factory, clock, "bo"))
    add_account(session_factory)
    with transaction(session_factory) as s:
        seed_starter_content(s, topics, clock.now())  # the resource-pick template and the starter library
    eid = open_engagement(session_factory, topics, clock)
    engagement_worker(topics, session_factory, clock).poll_once()
    who = "mine" if (await api.post(f"/v1/engagements/{eid}/accept", headers=mine)).status_code == 200 else "theirs"
    csm, other = (mine, theirs) if who == "mine" else (theirs, mine)
    url = f"/v1/engagements/{eid}/resources"

    r = await api.post(url, json={"resource_id": "welcome-back-guide", "user_id": "ada"}, headers=csm)
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["state"] == "queued" and sent["resource_id"] == "welcome-back-guide"
    [m] = messages(session_factory, step_id="engagement.resource")
    assert (m.channel, m.audience, m.recipient, m.resource_id) == ("email", "customer", "ada@acme.test", "welcome-back-guide")
    assert m.payload["recommendation"]["engagement_id"] == eid and m.payload["recommendation"]["sent_by"].startswith("csm:")
    assert [(t.kind, t.details.get("resource_id")) for t in timeline(session_factory, eid) if t.kind == "touch"] == [
        ("touch", "welcome-back-guide")
    ]

    # The gate: it counts as a touch (ada's contact cap), nobody gets a resource twice, suppressions hold.
    r = await api.post(url, json={"resource_id": "first-reports-guide", "user_id": "ada"}, headers=csm)
    assert r.status_code == 409 and r.json() == {
        "error": "contact_policy",
        "detail": {
            "reason": "contact_cap",
            "message": "the contact gate holds ada back: this contact has had as many messages as the contact cap allows for now",
        },
    }
    clock.advance(days(4))
    r = await api.post(url, json={"resource_id": "welcome-back-guide", "user_id": "ada"}, headers=csm)
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "already_received"
    with transaction(session_factory) as s:
        s.add(Suppression(email_hash=email_hash("bob@acme.test"), email=None, reason="manual", detail="", created_at=T0))
    r = await api.post(url, json={"resource_id": "welcome-back-guide", "user_id": "bob"}, headers=csm)
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "suppressed"
    assert (await api.post(url, json={"resource_id": "nope", "user_id": "ada"}, headers=csm)).status_code == 404
    assert (await api.post(url, json={"resource_id": "welcome-back-guide", "user_id": "zed"}, headers=csm)).status_code == 422
    assert (await api.post(url, json={"resource_id": "welcome-back-guide", "user_id": "cy"}, headers=other)).status_code == 403
    assert len(messages(session_factory, step_id="engagement.resource")) == 1  # refusals write nothing

    workers()["sender"].poll_once()
    [mail] = [x for x in sink.messages if str(x["To"]) == "ada@acme.test"]
    assert "What is new since you last looked" in mail["Subject"]
    link = re.search(r"http://touchline\.test(/r/[A-Za-z0-9_-]+)", mail.get_body(("plain",)).get_content())
    assert link and (await api.get(link[1])).headers["location"] == "https://help.example.com/guides/whats-new"
