"""Playbooks end to end on the real broker and both databases: enrolment from
cs.signals, waits and branches on the simulated clock, conversion, versions, every
contact-policy rule, unsubscribe and erasure, holdouts and the report, in-app."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from services.ingest.models import User
from services.outreach.models import Enrollment, Suppression
from services.outreach.playbooks.holdouts import is_held_out
from services.outreach.policy.tokens import email_hash, make_token
from tests.support.helpers import T0, auth, drain, expected_held_out
from tests.support.outreach import (
    add_account,
    add_activity,
    days,
    enrol_in_win_back,
    jdump,
    messages,
    save_playbook,
    save_template,
    send_signals,
    signal,
    simple_playbook,
)

ACTIVE_AGAIN = {"metric": "active_users", "window": "7d", "op": ">=", "value": 2}
BRANCHING = simple_playbook(
    steps=[
        {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
        {"id": "wait-3d", "type": "wait", "duration": "3d"},
        {"id": "back?", "type": "branch", "if": ACTIVE_AGAIN, "then": "convert", "else": "email-owner"},
        {"id": "email-owner", "type": "send", "channel": "email", "template": "owner-brief", "to": ["owner"]},
        {"id": "wait-1w", "type": "wait", "duration": "1w"},
        {"type": "end"},
    ]
)


def enrollments(session_factory, **where) -> list[Enrollment]:
    with session_factory() as s:
        q = select(Enrollment).order_by(Enrollment.account_id, Enrollment.enrolled_at)
        for k, v in where.items():
            q = q.where(getattr(Enrollment, k) == v)
        return list(s.scalars(q))


def test_waits_and_branches_run_on_the_simulated_clock(topics, session_factory, workers, clock, sink):
    add_account(session_factory, "silent")
    add_account(session_factory, "recovers")
    save_template(session_factory, topics)
    save_playbook(session_factory, "win-back", BRANCHING)
    w = workers()
    send_signals(topics, [signal("silent"), signal("recovers")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 2)
    assert sorted(m.recipient for m in messages(session_factory)) == ["ada@recovers.test", "ada@silent.test"]
    assert all(e.step_index == 2 and e.due_at == T0 + days(3) for e in enrollments(session_factory))

    clock.advance(days(2))
    add_activity(session_factory, "recovers", ["ada", "bob"], clock.now().date())
    assert w["timers"].poll_once() == 0  # nothing is due before three days
    clock.advance(days(1) + timedelta(minutes=1))
    assert w["timers"].poll_once() == 2
    recovers, silent = enrollments(session_factory)
    assert recovers.status == "converted" and recovers.converted_at == clock.now() and recovers.active_key is None
    assert recovers.outcome_detail["condition"] is True
    assert silent.status == "active" and silent.step_index == 5
    assert [m.recipient for m in messages(session_factory, account_id="silent")] == ["ada@silent.test", "owner@silent.test"]
    assert len(messages(session_factory, account_id="recovers")) == 1
    assert w["timers"].poll_once() == 0  # ran once

    clock.advance(days(7))
    w["timers"].poll_once()
    [_, silent] = enrollments(session_factory)
    assert silent.status == "completed" and [h["step"] for h in silent.history] == [
        "email-1",
        "wait-3d",
        "back?",
        "email-owner",
        "wait-1w",
        "step-6",
    ]
    w["sender"].poll_once()
    assert len(sink.messages) == 3


def test_an_account_is_enrolled_once_at_a_time_and_keeps_its_version(topics, session_factory, workers, clock):
    add_account(session_factory)
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            steps=[
                {"type": "wait", "duration": "2d"},
                {"id": "email", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
            ]
        ),
    )
    w = workers()
    send_signals(topics, [signal(signal_id="s1"), signal(signal_id="s2")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 1 and _receipts(session_factory) == 2)
    [e] = enrollments(session_factory)
    assert e.playbook_version == 1 and e.signal_id == "s1"

    # A new version: the running enrolment keeps v1 (it sends to the champion, not the admin).
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            steps=[
                {"type": "wait", "duration": "2d"},
                {"id": "email", "type": "send", "channel": "email", "template": "win-back", "to": ["admin"]},
            ]
        ),
    )
    clock.advance(days(2))
    w["timers"].poll_once()
    assert [m.recipient for m in messages(session_factory)] == ["ada@acme.test"]
    [e] = enrollments(session_factory)
    assert e.status == "completed"
    clock.advance(days(4))
    send_signals(topics, [signal(signal_id="s3")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 2)
    assert [x.playbook_version for x in enrollments(session_factory)] == [1, 2]


def _receipts(session_factory) -> int:
    from sqlalchemy import func

    from services.outreach.models import SignalReceipt

    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(SignalReceipt))


def test_trigger_and_audience_filter_enrolment(topics, session_factory, workers):
    add_account(session_factory, "smb1", segment="smb")
    add_account(session_factory, "ent1", segment="enterprise")
    save_template(session_factory, topics)
    save_playbook(session_factory, "smb-only", simple_playbook(audience={"segments": ["smb"]}))
    w = workers()
    send_signals(topics, [signal("smb1"), signal("ent1"), signal("smb1", rule_id="other-rule")])
    drain(w["signals"], lambda: _receipts(session_factory) == 3)
    assert [e.account_id for e in enrollments(session_factory)] == ["smb1"]


def test_invalid_signals_go_to_the_signals_dlq(topics, session_factory, workers):
    from tests.support.helpers import read_topic

    w = workers()
    send_signals(topics, [{"account_id": "acme", "nope": 1}, signal()])
    drain(w["signals"], lambda: _receipts(session_factory) == 1)
    [rec] = read_topic(topics, topics.topic_signals_dlq, 1)
    assert dict(rec.headers)["touchline.dlq.reason"] == b"invalid_signal"


def test_frequency_caps_global_and_per_playbook(topics, session_factory, workers, clock):
    add_account(session_factory)
    save_template(session_factory, topics)
    send_to = [{"type": "send", "channel": "email", "template": "win-back", "to": ["champion"]}]
    save_playbook(session_factory, "first", simple_playbook(steps=send_to))
    save_playbook(session_factory, "second", simple_playbook(steps=send_to))
    w = workers()
    send_signals(topics, [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 2)
    by_pb = {m.playbook_id: m for m in messages(session_factory)}
    assert by_pb["first"].state == "queued"
    assert (by_pb["second"].state, by_pb["second"].skip_reason) == ("skipped", "contact_cap")  # 1 per contact in 3 days

    # Per-playbook account cap: at most 1 touch per account in 7 days from this playbook,
    # even after the global contact cap has expired.
    save_playbook(
        session_factory,
        "capped",
        simple_playbook(
            trigger={"rules": ["usage-drop"]},
            caps={"account": {"max": 1, "days": 7}},
            steps=[
                {"type": "send", "channel": "email", "template": "win-back", "to": ["admin"]},
                {"type": "wait", "duration": "4d"},
                {"id": "again", "type": "send", "channel": "email", "template": "win-back", "to": ["member"]},
            ],
        ),
    )
    send_signals(topics, [signal(rule_id="usage-drop")])
    drain(w["signals"], lambda: len(messages(session_factory, playbook_id="capped")) == 1)
    clock.advance(days(4))
    w["timers"].poll_once()
    capped = {m.step_id: m for m in messages(session_factory, playbook_id="capped")}
    assert capped["step-1"].state == "queued"
    assert (capped["again"].state, capped["again"].skip_reason) == ("skipped", "playbook_account_cap")


def test_global_account_cap_counts_touches_not_recipients(topics, session_factory, workers):
    add_account(session_factory)
    save_template(session_factory, topics)
    for i in range(4):  # four playbooks, each a touch to every user: the fourth exceeds 3 touches in 7 days
        save_playbook(
            session_factory,
            f"pb{i}",
            simple_playbook(steps=[{"type": "send", "channel": "inapp", "template": "win-back", "to": ["all_users"]}]),
        )
    w = workers()
    # The contact cap would stop touches 2..4 first; lift it to see the account cap alone.
    w["signals"].settings = topics.model_copy(update={"contact_cap_messages": 0})
    send_signals(topics, [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 12)
    reasons = sorted({(m.playbook_id, m.skip_reason) for m in messages(session_factory)})
    assert reasons == [("pb0", None), ("pb1", None), ("pb2", None), ("pb3", "account_cap")]


def test_quiet_hours_defer_not_drop(topics, session_factory, workers, clock, sink):
    # 12:00 UTC is 21:00 in Tokyo: quiet until 08:00 Tokyo (23:00 UTC).
    add_account(
        session_factory,
        users={
            "kei": {"email": "kei@acme.test", "name": "Kei", "role": "champion", "timezone": "Asia/Tokyo"},
            "ada": {"email": "ada@acme.test", "name": "Ada", "role": "admin", "timezone": "Europe/London"},
        },
    )
    w = enrol_in_win_back(topics, session_factory, workers)
    rows = {m.recipient: m for m in messages(session_factory)}
    assert rows["kei@acme.test"].next_attempt_at == T0.replace(hour=23)
    assert rows["kei@acme.test"].payload["deferred"] == "quiet_hours"
    w["sender"].poll_once()
    assert [str(m["To"]) for m in sink.messages] == ["ada@acme.test"]
    clock.advance(timedelta(hours=11))
    w["sender"].poll_once()
    assert sorted(str(m["To"]) for m in sink.messages) == ["ada@acme.test", "kei@acme.test"]


async def test_unsubscribe_link_end_to_end_and_tokens_cannot_be_forged(topics, session_factory, workers, clock, sink, api, keys):
    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)
    w["sender"].poll_once()
    ada = next(m for m in sink.messages if str(m["To"]) == "ada@acme.test")
    url = ada["List-Unsubscribe"].strip("<>")
    path = url.removeprefix("http://touchline.test")

    page = await api.get(path)  # a GET (a link scanner) changes nothing
    assert page.status_code == 200 and "ada@acme.test" in page.text
    assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    with session_factory() as s:
        assert s.get(Suppression, email_hash("ada@acme.test")) is None
    token = path.rsplit("/", 1)[1]
    # Opaque (issue 18, finding 8): neither the address nor the account can be read from it.
    assert not any(word in _every_decoding(token) for word in ("ada@acme.test", "acme"))
    forged = make_token("not-the-secret-but-long-enough-to-be-one", email="bob@acme.test", account_id="acme")
    middle = len(token) // 2
    tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    for bad in (forged, tampered, "garbage", "x.y", token[:-4]):
        r = await api.post(f"/unsubscribe/{bad}", data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 400, bad
    r = await api.post(path, data={"List-Unsubscribe": "One-Click"})  # RFC 8058 one-click
    assert r.status_code == 200 and "unsubscribed" in r.text
    with session_factory() as s:
        assert s.get(Suppression, email_hash("ada@acme.test")).reason == "unsubscribed"
        assert s.get(Suppression, email_hash("bob@acme.test")) is None

    # Nothing goes to Ada again; Bob still receives mail.
    r = await api.get("/v1/suppressions", headers=auth(keys["ops"]))
    assert [x["email"] for x in r.json()["items"]] == ["ada@acme.test"] and r.json()["next_cursor"] is None
    clock.advance(days(8))
    save_playbook(session_factory, "other", simple_playbook(trigger={"rules": ["no-login-14d"]}))
    send_signals(topics, [signal(signal_id="again")])
    drain(w["signals"], lambda: len(messages(session_factory, playbook_id="other")) == 2)
    other = {m.recipient: m for m in messages(session_factory, playbook_id="other")}
    assert (other["ada@acme.test"].state, other["ada@acme.test"].skip_reason) == ("skipped", "suppressed")
    assert other["bob@acme.test"].state == "queued"


async def test_manual_suppression_and_send_time_recheck(topics, session_factory, workers, sink, api, keys):
    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)
    # Suppressed after the step ran, before the sender got to it: still not sent.
    r = await api.post("/v1/suppressions", json={"email": "Bob@Acme.test", "detail": "asked by phone"}, headers=auth(keys["ops"]))
    assert r.status_code == 201 and r.json()["reason"] == "manual"
    w["sender"].poll_once()
    rows = {m.recipient: m for m in messages(session_factory)}
    assert (rows["bob@acme.test"].state, rows["bob@acme.test"].skip_reason) == ("skipped", "suppressed")
    assert [str(m["To"]) for m in sink.messages] == ["ada@acme.test"]
    assert (await api.delete("/v1/suppressions/bob@acme.test", headers=auth(keys["ops"]))).status_code == 204
    assert (await api.delete("/v1/suppressions/bob@acme.test", headers=auth(keys["ops"]))).status_code == 404


async def test_erasure_scrubs_the_contact_and_keeps_them_uncontacted(topics, session_factory, workers, clock, api, keys):
    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)
    r = await api.post("/v1/accounts/acme/users/ada/erase", headers=auth(keys["ops"]))
    assert r.status_code == 200 and r.json() == {"account_id": "acme", "user_id": "ada", "suppressed": True, "messages_scrubbed": 1}
    with session_factory() as s:
        ada = s.get(User, ("acme", "ada"))
        assert (ada.email, ada.name) == (None, None)
        sup = s.get(Suppression, email_hash("ada@acme.test"))
        assert sup.reason == "erased" and sup.email is None
    [m] = messages(session_factory, user_id="ada")
    assert (m.recipient, m.subject, m.text_body) == ("erased", "", "")
    assert (m.state, m.skip_reason) == ("skipped", "erased")  # the queued message can no longer go
    w["sender"].poll_once()
    [m] = messages(session_factory, user_id="ada")
    assert (m.state, m.skip_reason, m.attempts) == ("skipped", "erased", 0)
    # Re-identified later with the same address: still never contacted.
    with session_factory.begin() as s:
        s.get(User, ("acme", "ada")).email = "ada@acme.test"
    clock.advance(days(10))
    save_playbook(session_factory, "later", simple_playbook())
    send_signals(topics, [signal(signal_id="later")])
    drain(w["signals"], lambda: len(messages(session_factory, playbook_id="later")) == 2)
    assert {m.recipient: m.skip_reason for m in messages(session_factory, playbook_id="later")}["ada@acme.test"] == "suppressed"


async def test_holdouts_receive_nothing_and_the_report_shows_lift(topics, session_factory, workers, clock, sink, api, keys):
    accounts = [f"a{i:02d}" for i in range(24)]
    for a in accounts:
        add_account(session_factory, a, users={"u": {"email": f"u@{a}.test", "name": "U", "role": "champion"}})
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            holdout_percent=30,
            exit_condition=ACTIVE_AGAIN,
            steps=[{"type": "send", "channel": "email", "template": "win-back", "to": ["champion"]}, {"type": "wait", "duration": "7d"}],
        ),
    )
    w = workers()
    send_signals(topics, [signal(a) for a in accounts])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 24)
    held = {e.account_id for e in enrollments(session_factory) if e.holdout}
    # 30%, not 50%: an inverted percentage (100 - p) would select other accounts and fail.
    assert held == {a for a in accounts if expected_held_out("win-back", a, 30)} and 0 < len(held) < 12
    treated = [a for a in accounts if a not in held]
    w["sender"].poll_once()
    assert sorted(str(m["To"]) for m in sink.messages) == sorted(f"u@{a}.test" for a in treated)
    assert {m.skip_reason for m in messages(session_factory) if m.account_id in held} == {"held_out"}

    # Most treated accounts come back, one held-out account does.
    for a in treated[:-1] + sorted(held)[:1]:
        add_activity(session_factory, a, ["u", "v"], (clock.now() + days(3)).date())
    clock.advance(days(7))
    w["timers"].poll_once()
    r = await api.get("/v1/playbooks/win-back/report", headers=auth(keys["ops"]))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["enrolled"] == 24 and rep["converted"] == len(treated) - 1 + 1
    assert rep["treated"] == {"enrolled": len(treated), "converted": len(treated) - 1, "conversion_rate": (len(treated) - 1) / len(treated)}
    assert rep["holdout"]["enrolled"] == len(held) and rep["holdout"]["converted"] == 1
    assert rep["sent"] == len(treated) and rep["skipped"] == {"held_out": len(held)}
    assert rep["lift"] == pytest.approx(rep["treated"]["conversion_rate"] - rep["holdout"]["conversion_rate"])
    lo, hi = rep["confidence_interval"]
    assert lo < rep["lift"] < hi and lo > 0  # a real effect with these numbers


async def test_inapp_messages_for_the_product(topics, session_factory, workers, api, keys):
    add_account(session_factory)
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "nudge",
        simple_playbook(steps=[{"type": "send", "channel": "inapp", "template": "win-back", "to": ["champion", "member"]}]),
    )
    w = workers()
    send_signals(topics, [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 2)
    product = auth(keys["ingest"])
    r = await api.get("/v1/accounts/acme/messages", params={"user_id": "ada"}, headers=product)
    assert r.status_code == 200, r.text
    [msg] = r.json()["items"]
    assert msg["subject"] == "Ada, Acme Inc misses you" and r.json()["unread"] == 1
    r = await api.post(f"/v1/accounts/acme/messages/{msg['id']}/read", headers=product)
    assert r.status_code == 200 and r.json()["read_at"]
    r = await api.get("/v1/accounts/acme/messages", params={"user_id": "ada", "unread": True}, headers=product)
    assert r.json()["items"] == []
    assert (await api.post(f"/v1/accounts/other/messages/{msg['id']}/read", headers=product)).status_code == 404


async def test_playbook_api_json_yaml_versions_and_errors(api, keys, session_factory, topics):
    ops = auth(keys["ops"])
    save_template(session_factory, topics)
    r = await api.put("/v1/playbooks/win-back", json=simple_playbook(), headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert (await api.put("/v1/playbooks/win-back", json=simple_playbook(), headers=ops)).json()["version"] == 1  # unchanged
    yaml_body = """
name: Win back (YAML)
trigger: {rules: [no-login-14d]}
holdout_percent: 10
steps:
  - {id: email, type: send, channel: email, template: win-back, to: [champion]}
  - {type: wait, duration: 3d}
  - {type: branch, if: {metric: active_users, window: 7d, op: ">=", value: 2}, then: convert, else: end}
"""
    r = await api.put("/v1/playbooks/win-back", content=yaml_body, headers={**ops, "content-type": "application/yaml"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["versions"] == [1, 2] and r.json()["definition"]["holdout_percent"] == 10
    assert (await api.get("/v1/playbooks/win-back", params={"version": 1}, headers=ops)).json()["definition"]["name"] == "Win back"
    for bad, words in [
        ({**simple_playbook(), "steps": [{"type": "teleport"}]}, "unknown step type"),
        ({**simple_playbook(), "steps": [{"type": "branch", "if": ACTIVE_AGAIN, "then": "nowhere"}]}, "nowhere"),
        ({**simple_playbook(), "steps": [{"type": "wait", "duration": "soon"}]}, "duration"),
        ({**simple_playbook(), "steps": [{"type": "send", "channel": "email", "template": "win-back", "to": ["ceo"]}]}, "ceo"),
        ({**simple_playbook(), "trigger": {}}, "at least one"),
        ({**simple_playbook(), "exit_condition": {"metric": "vibes"}}, "vibes"),
    ]:
        r = await api.put("/v1/playbooks/bad", json=bad, headers=ops)
        assert r.status_code == 422 and words in r.text, (bad, r.text)
    r = await api.put(
        "/v1/playbooks/bad",
        json=simple_playbook(steps=[{"type": "send", "channel": "email", "template": "missing", "to": ["champion"]}]),
        headers=ops,
    )
    assert r.status_code == 422 and r.json()["error"] == "unknown_template"
    r = await api.put("/v1/playbooks/bad", content=b"name: [unclosed", headers={**ops, "content-type": "application/yaml"})
    assert r.status_code == 422
    assert [p["id"] for p in (await api.get("/v1/playbooks", headers=ops)).json()["items"]] == ["win-back"]


def test_the_starter_content_seeds_once(session_factory, topics):
    from services.outreach.starter import seed_starter_content
    from shared.db import transaction

    with transaction(session_factory) as s:
        created = seed_starter_content(s, topics, T0)
    assert len([c for c in created if not c.startswith("resource ")]) == 17  # the library: test_content.py
    with transaction(session_factory) as s:
        assert seed_starter_content(s, topics, T0) == []


async def test_the_owner_gets_an_internal_brief_never_customer_copy(topics, session_factory, workers, clock, sink, api, keys):
    """Issue 19, finding 3: the starter win-back's owner-email step sent the customer's
    template ("there, your ... workspace is waiting") to the account owner. The owner now
    gets an internal brief: the evidence, what automation sent, what happens next; and no
    playbook may send customer copy to the owner, nor an internal template to a customer."""
    from services.outreach.starter import seed_starter_content
    from shared.db import transaction

    add_account(session_factory, "silent")
    with transaction(session_factory) as s:
        seed_starter_content(s, topics, T0)
    w = workers()
    sig = signal("silent")
    sig["evidence"] = {"days_since_last_login": {"value": 15, "op": ">=", "threshold": 14}}
    send_signals(topics, [sig])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 1)
    assert not enrollments(session_factory)[0].holdout  # the holdout bucket is a hash of playbook and account: fixed
    clock.advance(days(4) + timedelta(minutes=1))
    drain(w["timers"], lambda: any(m.step_id == "owner-email" for m in messages(session_factory)))
    [brief] = [m for m in messages(session_factory) if m.step_id == "owner-email"]
    customer = [m for m in messages(session_factory) if m.step_id == "win-back-email"]
    assert brief.recipient == "owner@silent.test" and brief.template_id == "win-back-owner-brief"
    assert brief.subject == "Silent Inc: still silent after the win-back email"
    assert "workspace is waiting" not in brief.subject and "reply to this email" not in brief.text_body  # no customer copy
    assert "days_since_last_login: 15 (the rule needs >= 14)" in brief.text_body
    assert customer
    for m in customer:  # what automation already sent, by address and subject
        assert f'email to {m.recipient}: "{m.subject}"' in brief.text_body
    assert "open a recover_usage engagement for a pooled CSM (30d, 10% held out)" in brief.text_body
    assert "/console/accounts/silent" in brief.text_body
    # Saving a playbook that sends customer copy to the owner (or a brief to a customer) is a 422 naming the step.
    ops = auth(keys["ops"])
    bad = {
        "name": "Bad",
        "trigger": {"rules": ["no-login-14d"]},
        "steps": [{"id": "oops", "type": "send", "channel": "email", "template": "win-back", "to": ["owner"]}],
    }
    r = await api.put("/v1/playbooks/bad", json=bad, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "wrong_audience" and "/steps/0" in r.json()["detail"], r.text
    bad["steps"][0].update(template="win-back-owner-brief", to=["champion"])
    r = await api.put("/v1/playbooks/bad", json=bad, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "wrong_audience" and "internal template" in r.json()["detail"]
    bad["steps"][0].update(to=["champion", "owner"])
    r = await api.put("/v1/playbooks/bad", json=bad, headers=ops)
    assert r.status_code == 422 and "a step of its own" in r.text


def test_a_customer_who_comes_back_converts_without_waiting_for_the_next_step(topics, session_factory, workers, clock, sink):
    """The conversion sweep checks exit conditions of running enrolments (treated and
    held out alike) between steps, set-based: no more win-back mail once they are back."""
    for account in ("returns", "stays-away"):
        add_account(session_factory, account)
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            exit_condition=ACTIVE_AGAIN,
            steps=[
                {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
                {"id": "wait-1w", "type": "wait", "duration": "1w"},
                {"id": "email-2", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
            ],
        ),
    )
    w = workers()
    send_signals(topics, [signal("returns"), signal("stays-away")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 2)
    w["timers"].poll_once()  # first sweep: nobody has come back yet
    assert {e.status for e in enrollments(session_factory)} == {"active"}

    clock.advance(days(2))
    add_activity(session_factory, "returns", ["ada", "bob"], clock.now().date())
    w["timers"].poll_once()
    returns, stays = enrollments(session_factory, account_id="returns") + enrollments(session_factory, account_id="stays-away")
    assert returns.status == "converted" and returns.converted_at == clock.now()
    assert returns.history[-1]["step"] == "exit_condition"
    assert stays.status == "active"

    clock.advance(days(6))
    w["timers"].poll_once()
    assert [m.recipient for m in messages(session_factory, account_id="returns")] == ["ada@returns.test"]
    assert [m.recipient for m in messages(session_factory, account_id="stays-away")] == ["ada@stays-away.test"] * 2


def test_a_held_out_enrolment_waiting_in_a_step_converts_at_the_sweep(topics, session_factory, workers, clock):
    """Issue 25, gap 9: the holdout's conversions are the baseline of the lift, so a
    held-out enrolment must convert when its account comes back, between steps (by the
    sweep), not only when its next step is due a week later."""
    for account in ("returns", "stays-away"):
        add_account(session_factory, account)
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            holdout_percent=100,
            exit_condition=ACTIVE_AGAIN,
            steps=[
                {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
                {"id": "wait-1w", "type": "wait", "duration": "1w"},
            ],
        ),
    )
    w = workers()
    send_signals(topics, [signal("returns"), signal("stays-away")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 2)
    assert w["timers"].poll_once() == 0  # nothing due; the first sweep finds nobody back
    waiting = enrollments(session_factory)
    assert [(e.holdout, e.status, e.step_index, e.due_at) for e in waiting] == [(True, "active", 2, T0 + days(7))] * 2

    clock.advance(days(2))
    add_activity(session_factory, "returns", ["ada", "bob"], clock.now().date())
    assert w["timers"].poll_once() == 0  # no step is due: only the sweep can convert it
    returns, stays = enrollments(session_factory)
    assert (returns.account_id, returns.status, returns.converted_at) == ("returns", "converted", clock.now())
    assert returns.outcome_detail == {"reason": "exit_condition", "checked_by": "conversion sweep"}
    assert (stays.account_id, stays.status) == ("stays-away", "active")
    assert {m.skip_reason for m in messages(session_factory)} == {"held_out"}


# ---- a batch of signals costs a fixed number of statements -----------------------

SET_BASED = simple_playbook(
    exit_condition=ACTIVE_AGAIN,
    holdout_percent=30,
    caps={"contact": {"max": 2, "days": 5}, "account": {"max": 4, "days": 5}},
    steps=[
        {"id": "back?", "type": "branch", "if": ACTIVE_AGAIN, "then": "convert", "else": "email"},
        {"id": "email", "type": "send", "channel": "email", "template": "win-back", "to": ["champion", "admin"]},
        {"id": "brief", "type": "send", "channel": "email", "template": "owner-brief", "to": ["owner"]},
        {"id": "in-app", "type": "send", "channel": "inapp", "template": "win-back", "to": ["all_users"]},
        {"id": "hook", "type": "send", "channel": "webhook", "url": "https://cs.example/hook"},
        {"id": "actives", "type": "send", "channel": "email", "template": "win-back", "to": ["active_users:7d"]},
        {"id": "wait", "type": "wait", "duration": "3d"},
    ],
)


def _records(signals: list[dict]) -> list:
    from kafka.consumer.fetcher import ConsumerRecord

    return [
        ConsumerRecord("cs.signals", 0, None, i, 0, 0, s["account_id"].encode(), jdump(s).encode(), [], None, 0, 0, 0)
        for i, s in enumerate(signals)
    ]


def test_a_batch_of_signals_costs_the_same_statements_whatever_its_size(topics, engine, session_factory, clock, monkeypatch):
    """Enrolment is set-based: audience, holdout, the active-enrolment check, every read
    of the send steps (contacts, caps, suppressions, open engagements, conditions) and
    the inserts are one statement each per batch, so 40 signals cost what 4 do."""
    from sqlalchemy import event

    from services.outreach.models import OutreachDecision
    from services.outreach.playbooks.worker import SignalWorker
    from shared import db
    from shared.db import transaction

    # PostgreSQL inserts from 200 rows up through COPY (a few statements instead of one):
    # take that path at every size, so both batches are compared on the same path.
    monkeypatch.setattr(db, "COPY_THRESHOLD", 1)

    save_template(session_factory, topics)
    save_playbook(session_factory, "win-back", SET_BASED)
    save_playbook(session_factory, "second", simple_playbook(trigger={"kinds": ["churn_risk"]}, caps={"account": {"max": 1, "days": 5}}))
    small, large = [f"s{i:02d}" for i in range(4)], [f"l{i:02d}" for i in range(40)]
    for a in small + large:
        add_account(session_factory, a)
        add_activity(session_factory, a, ["ada"], (T0 - days(1)).date())
    with transaction(session_factory) as s:  # one of them suppressed, to be refused
        s.add(Suppression(email_hash=email_hash("bob@l03.test"), email=None, reason="manual", detail="", created_at=T0))
    worker = SignalWorker(topics.model_copy(update={"account_cap_touches": 2}), session_factory, clock)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def run(signals: list[dict]) -> int:
        statements.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            with transaction(session_factory) as s:
                worker.handle_batch(s, _records(signals))
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    per_small = run([signal(a) for a in small])
    large_signals = [signal(a) for a in large]
    per_large = run(large_signals)
    assert per_large == per_small, "\n".join(statements)
    with session_factory() as s:
        decided = {d.signal_id: d for d in s.scalars(select(OutreachDecision))}
    assert len(decided) == 44 and {d.decision for d in decided.values()} <= {"enrolled", "held_out"}
    assert len(enrollments(session_factory, playbook_id="win-back")) == 44
    held = {e.account_id for e in enrollments(session_factory, playbook_id="win-back", holdout=True)}
    assert held == {a for a in small + large if is_held_out("win-back", a, 30)}
    sent = messages(session_factory, playbook_id="win-back")
    treated = [a for a in large if a not in held]
    # Playbooks run in id order, "second" first. The caps count the rows the batch itself wrote: ada and bob
    # had second's email (contact cap: 1 in 3 days), and second's email and the in-app message are the
    # account's two touches (account cap: 2 in 7 days here), so the last step is refused. The owner's brief is
    # an internal message, like the webhook: no customer touch, never capped, never counted.
    reasons = {
        step: sorted((m.recipient, m.skip_reason) for m in sent if m.account_id == treated[0] and m.step_id == step)
        for step in ("email", "brief", "in-app", "hook", "actives")
    }
    a = treated[0]
    assert reasons == {
        "email": [(f"ada@{a}.test", "contact_cap"), (f"bob@{a}.test", "contact_cap")],
        "brief": [(f"owner@{a}.test", None)],
        "in-app": [("ada", "contact_cap"), ("bob", "contact_cap"), ("cy", None)],
        "hook": [("https://cs.example/hook", None)],
        "actives": [(f"ada@{a}.test", "account_cap")],
    }
    assert {m.state for m in messages(session_factory, playbook_id="second", account_id=a)} == {"queued"}
    assert [m.skip_reason for m in messages(session_factory, playbook_id="second", account_id="l03")] in (
        [None, "suppressed"],
        ["suppressed", None],
    )
    # A redelivered batch changes nothing.
    before = len(messages(session_factory))
    run(large_signals)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(OutreachDecision)) == 44
    assert len(messages(session_factory)) == before and len(enrollments(session_factory)) == 88


def test_rows_known_to_be_new_keep_the_first_of_a_key_and_never_overwrite(session_factory, monkeypatch):
    """The decisions (and the messages of new enrolments) are loaded straight into their
    table (COPY on PostgreSQL, executemany on SQLite): two rows of one key insert the
    first, as the keyed insert does, and a key that exists after all fails the statement
    instead of being overwritten."""
    import sqlite3

    from psycopg.errors import UniqueViolation  # the load runs on the driver's cursor

    from services.outreach.models import OutreachDecision
    from services.outreach.playbooks import repository as repo
    from shared import db
    from shared.db import transaction

    monkeypatch.setattr(db, "COPY_THRESHOLD", 1)  # the COPY path at any size

    def row(signal_id: str, decision: str) -> dict:
        return {
            "signal_id": signal_id,
            "account_id": "acme",
            "rule_id": "r",
            "kind": "churn_risk",
            "decision": decision,
            "reason": None,
            "playbooks": [],
            "decided_at": T0,
        }

    with transaction(session_factory) as s:
        assert repo.record_new_decisions(s, [row("a", "enrolled"), row("b", "held_out"), row("a", "skipped")]) == {"a", "b"}
    with session_factory() as s:
        assert {d.signal_id: d.decision for d in s.scalars(select(OutreachDecision))} == {"a": "enrolled", "b": "held_out"}
    with pytest.raises((UniqueViolation, sqlite3.IntegrityError)), transaction(session_factory) as s:
        repo.record_new_decisions(s, [row("a", "no_matching_playbook")])
    with session_factory() as s:
        assert s.get(OutreachDecision, "a").decision == "enrolled"


def test_signals_of_one_account_in_one_batch_enrol_as_if_one_after_the_other(topics, session_factory, clock):
    """Within a batch, a playbook that ends at once (no wait) enrols the account again on
    its next signal, a waiting one does not (already_enrolled), and the caps count the
    earlier signal's messages: exactly what enrolling the signals one by one does."""
    from services.outreach.models import OutreachDecision
    from services.outreach.playbooks.worker import SignalWorker
    from shared.db import transaction

    add_account(session_factory, "acme")
    save_template(session_factory, topics)
    save_playbook(session_factory, "at-once", simple_playbook(trigger={"rules": ["r-once"]}))
    _save_waiting_playbook(session_factory)
    batch = [
        signal("acme", rule_id="r-once", signal_id="o1"),
        signal("acme", rule_id="r-wait", signal_id="w1"),
        signal("acme", rule_id="r-once", signal_id="o2"),
        signal("acme", rule_id="r-wait", signal_id="w2"),
    ]
    with transaction(session_factory) as s:
        SignalWorker(topics, session_factory, clock).handle_batch(s, _records(batch))
    with session_factory() as s:
        decisions = {d.signal_id: (d.decision, d.reason) for d in s.scalars(select(OutreachDecision))}
    assert decisions == {
        "o1": ("enrolled", None),
        "w1": ("enrolled", None),
        "o2": ("enrolled", None),
        "w2": ("skipped", "already_enrolled"),
    }
    assert sorted((e.signal_id, e.status) for e in enrollments(session_factory)) == [
        ("o1", "completed"),
        ("o2", "completed"),
        ("w1", "active"),
    ]
    # o1's emails to ada and bob used their contact cap (1 in 3 days): o2's, enrolled after it, are refused.
    by_signal = {e.signal_id: e.id for e in enrollments(session_factory, playbook_id="at-once")}
    assert {m.state for m in messages(session_factory, enrollment_id=by_signal["o1"])} == {"queued"}
    assert {m.skip_reason for m in messages(session_factory, enrollment_id=by_signal["o2"])} == {"contact_cap"}


def _save_waiting_playbook(session_factory) -> None:
    """Playbook "waits" (rule r-wait): one email to the owner, then a 3-day wait, so its
    enrolments stay active."""
    save_playbook(
        session_factory,
        "waits",
        simple_playbook(
            trigger={"rules": ["r-wait"]},
            steps=[
                {"id": "email-1", "type": "send", "channel": "email", "template": "owner-brief", "to": ["owner"]},
                {"type": "wait", "duration": "3d"},
            ],
        ),
    )


@pytest.mark.parametrize("copied", [False, True], ids=["keyed", "copied"])
def test_an_enrolment_another_transaction_made_meanwhile_fails_the_batch_to_be_retried(
    topics, db_kind, engine, session_factory, clock, monkeypatch, copied
):
    """A batch reads once which of its accounts are enrolled already, and inserts its
    enrolments at the end. An account another transaction enrolled in between is not
    enrolled twice, nor are messages written for it: the batch fails as a serialization
    failure (the worker retries it, and then reads that enrolment). ``copied``: the
    enrolments are loaded as a large batch's are (COPY on PostgreSQL, one executemany on
    SQLite), where the conflict is a unique violation rather than a row left out.

    On PostgreSQL the race is real: w1's batch has inserted its enrolment but not
    committed when w2's batch reads (and sees nothing), w2's insert waits on w1's row,
    w1 commits. SQLite cannot interleave them (a write transaction takes the database
    lock at BEGIN, shared/db.py), so there the read is made to miss w1's enrolment by
    replacing ``enrollment_conflicts``: the only way to reach this path on SQLite, which
    the mutation runs use."""
    import threading

    from sqlalchemy.exc import DBAPIError

    from services.outreach.models import Message, OutreachDecision
    from services.outreach.playbooks import repository as playbook_repo
    from services.outreach.playbooks.worker import SignalWorker
    from shared import db
    from shared.db import transaction, transient_db_error
    from tests.support.helpers import wait_for

    if copied:
        monkeypatch.setattr(db, "COPY_THRESHOLD", 1)
    add_account(session_factory, "acme")
    save_template(session_factory, topics)
    _save_waiting_playbook(session_factory)
    worker = SignalWorker(topics, session_factory, clock)
    if db_kind == "postgresql":
        errors: list[BaseException] = []

        def second_batch() -> None:
            try:
                with transaction(session_factory) as s:
                    SignalWorker(topics, session_factory, clock).handle_batch(
                        s, _records([signal("acme", rule_id="r-wait", signal_id="w2")])
                    )
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)

        def waiting_on_a_lock() -> bool:
            with engine.connect() as c:
                return bool(
                    c.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
                )

        first = session_factory()
        try:
            worker.handle_batch(first, _records([signal("acme", rule_id="r-wait", signal_id="w1")]))
            first.flush()
            racer = threading.Thread(target=second_batch)
            racer.start()
            wait_for(waiting_on_a_lock, 60, "the second batch waiting on the first one's enrolment")
            first.commit()
        finally:
            first.close()
        racer.join(60)
        assert not racer.is_alive()
        [error] = errors
        assert isinstance(error, DBAPIError), error
        failed_with = error
    else:
        with transaction(session_factory) as s:
            worker.handle_batch(s, _records([signal("acme", rule_id="r-wait", signal_id="w1")]))
        with monkeypatch.context() as m:  # the read misses w1's enrolment, as if it had committed just after it
            m.setattr(playbook_repo, "enrollment_conflicts", lambda session, ids, keys: (set(), set()))
            with pytest.raises(DBAPIError) as failed, transaction(session_factory) as s:
                worker.handle_batch(s, _records([signal("acme", rule_id="r-wait", signal_id="w2")]))
        failed_with = failed.value
    assert transient_db_error(failed_with) == "serialization"
    assert [e.signal_id for e in enrollments(session_factory)] == ["w1"]
    with transaction(session_factory) as s:  # the retry
        worker.handle_batch(s, _records([signal("acme", rule_id="r-wait", signal_id="w2")]))
    with session_factory() as s:
        decisions = {d.signal_id: (d.decision, d.reason) for d in s.scalars(select(OutreachDecision))}
        assert s.scalar(select(func.count()).select_from(Message)) == 1
    assert decisions == {"w1": ("enrolled", None), "w2": ("skipped", "already_enrolled")}
    assert [e.signal_id for e in enrollments(session_factory)] == ["w1"]


def _every_decoding(token: str) -> str:
    """What anyone could read out of a token: its text, and its bytes as base64url."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return token + raw.decode("latin-1")


def test_a_playbook_without_an_exit_condition_does_not_stop_the_sweep_for_the_others(topics, session_factory, workers, clock):
    """The sweep reads enrolments by playbook id: "a-waits" (no exit condition) comes
    before "win-back", whose customer came back and converts at the same sweep."""
    add_account(session_factory, "returns")
    save_playbook(session_factory, "a-waits", simple_playbook(steps=[{"id": "wait-4w", "type": "wait", "duration": "4w"}]))
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(exit_condition=ACTIVE_AGAIN, steps=[{"id": "wait-4w", "type": "wait", "duration": "4w"}]),
    )
    w = workers()
    send_signals(topics, [signal("returns")])
    drain(w["signals"], lambda: len(enrollments(session_factory)) == 2)
    clock.advance(days(2))
    add_activity(session_factory, "returns", ["ada", "bob"], clock.now().date())
    w["timers"].poll_once()
    assert {e.playbook_id: e.status for e in enrollments(session_factory)} == {"a-waits": "active", "win-back": "converted"}
    converted = next(e for e in enrollments(session_factory) if e.playbook_id == "win-back")
    assert {k: converted.history[-1][k] for k in ("step", "result")} == {"step": "exit_condition", "result": "converted"}  # its timeline
