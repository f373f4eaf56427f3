"""Named segments in playbooks, on the real broker and both databases with the simulated
clock (docs/segments.md): entering a segment starts a playbook and leaving it stops the
enrolment; a named segment as a playbook's audience; a playbook naming a segment that
does not exist is refused with the path."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.ingest.models import Account
from services.outreach.models import Enrollment, OutreachDecision
from services.rules.evaluation.segments import run_segments
from services.rules.evaluation.worker import RulesWorker
from services.rules.segments import service as segments
from shared.db import transaction
from tests.support.console import sign_in
from tests.support.helpers import auth, drain, expected_held_out
from tests.support.outreach import add_account, days, messages, save_playbook, save_template, send_signals, signal

FINTECH = {"id": "fintech", "name": "Fintech", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}
WELCOME = {
    "name": "Fintech welcome",
    "trigger": {"segments": ["fintech"]},
    "steps": [
        {"id": "hello", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
        {"id": "wait", "type": "wait", "duration": "7d"},
        {"id": "again", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
    ],
}
FINTECH_WIN_BACK = {
    "name": "Fintech win-back",
    "trigger": {"rules": ["no-login-14d"]},
    "audience": {"named_segments": ["fintech"]},
    "steps": [{"id": "email", "type": "send", "channel": "email", "template": "win-back", "to": ["admin"]}],
}


def enrollments(session_factory, playbook_id: str) -> dict[str, Enrollment]:
    with session_factory() as s:
        return {e.account_id: e for e in s.scalars(select(Enrollment).where(Enrollment.playbook_id == playbook_id))}


def decision(session_factory, signal_id: str) -> OutreachDecision | None:
    with session_factory() as s:
        return s.get(OutreachDecision, signal_id)


def world(session_factory, topics, clock) -> None:
    add_account(session_factory, "fin1", traits={"industry": "fintech"})
    add_account(session_factory, "fin2", traits={"industry": "fintech"})
    add_account(session_factory, "ret1", traits={"industry": "retail"})
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", clock.now())
    save_template(session_factory, topics)


def test_entering_a_segment_starts_a_playbook_and_leaving_it_stops_the_enrolment(topics, session_factory, workers, clock, sink):
    world(session_factory, topics, clock)
    save_playbook(session_factory, "fintech-welcome", WELCOME)
    w = workers()
    rules = RulesWorker(topics, session_factory, clock, tick=False)
    try:
        entered = run_segments(session_factory, topics, clock.now())
        assert sorted(s.account_id for s in entered.signals) == ["fin1", "fin2"]
        assert rules.relay() == 2
        drain(w["signals"], lambda: len(enrollments(session_factory, "fintech-welcome")) == 2)
        assert {m.account_id for m in messages(session_factory)} == {"fin1", "fin2"}  # the first step ran

        # fin2 stops being fintech: at the next refresh it leaves, and its enrolment stops.
        clock.advance(days(1))
        with transaction(session_factory) as s:
            s.get(Account, "fin2").traits = {"industry": "retail"}
        left = run_segments(session_factory, topics, clock.now())
        assert [(s.kind, s.account_id) for s in left.signals] == [("segment_left", "fin2")]
        rules.relay()
        drain(w["signals"], lambda: decision(session_factory, left.signals[0].signal_id) is not None)
        by_account = enrollments(session_factory, "fintech-welcome")
        assert by_account["fin1"].status == "active"
        assert by_account["fin2"].status == "completed"
        assert by_account["fin2"].outcome_detail["reason"] == "segment_left"
        d = decision(session_factory, left.signals[0].signal_id)
        assert (d.decision, d.reason, d.playbooks) == (
            "stopped",
            "segment_left",
            [{"playbook_id": "fintech-welcome", "version": 1, "outcome": "stopped"}],
        )

        # A week on, only fin1's enrolment sends its second email.
        clock.advance(days(7))
        drain(w["timers"], lambda: len(messages(session_factory, account_id="fin1")) == 2)
        assert len(messages(session_factory, account_id="fin2")) == 1
    finally:
        rules.close()


def test_a_named_segment_as_the_audience(topics, session_factory, workers, clock, sink):
    world(session_factory, topics, clock)
    save_playbook(session_factory, "fintech-win-back", FINTECH_WIN_BACK)
    run_segments(session_factory, topics, clock.now())  # fin1, fin2 in fintech (their signals are not relayed here)
    w = workers()
    fin1, ret1 = signal("fin1"), signal("ret1")
    send_signals(topics, [fin1, ret1])
    drain(w["signals"], lambda: decision(session_factory, ret1["signal_id"]) is not None and decision(session_factory, fin1["signal_id"]))
    assert list(enrollments(session_factory, "fintech-win-back")) == ["fin1"]
    assert decision(session_factory, fin1["signal_id"]).decision == "enrolled"
    assert decision(session_factory, ret1["signal_id"]).decision == "no_matching_playbook"


async def test_a_playbook_naming_a_missing_segment_is_refused_with_the_path(api, keys, session_factory, clock, topics):
    ops = auth(keys["ops"])
    world(session_factory, topics, clock)
    bad = {**FINTECH_WIN_BACK, "trigger": {"segments": ["fintech", "nope"]}, "audience": {"named_segments": ["gone"]}}
    r = await api.put("/v1/playbooks/bad", json=bad, headers=ops)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "unknown_segment"
    assert [p["pointer"] for p in r.json()["detail"]] == ["/trigger/segments/1", "/audience/named_segments/0"]
    assert "POST /v1/segments" in r.json()["detail"][0]["message"]
    r = await api.put("/v1/playbooks/good", json=FINTECH_WIN_BACK, headers=ops)
    assert r.status_code in (200, 201), r.text
    assert r.json()["definition"]["audience"]["named_segments"] == ["fintech"]
    assert (await api.put("/v1/playbooks/welcome", json=WELCOME, headers=ops)).status_code in (200, 201)
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/playbooks/good")).text
    assert 'for members of <a href="/console/segments/fintech">fintech</a>' in page
    page = (await api.get("/console/playbooks/welcome")).text
    assert 'entering segment <a href="/console/segments/fintech">fintech</a> (leaving stops the enrolment)' in page
    # A deleted segment is missing too.
    assert (await api.delete("/v1/segments/fintech", headers=ops)).status_code == 200
    assert (await api.put("/v1/playbooks/good", json={**FINTECH_WIN_BACK, "name": "v2"}, headers=ops)).status_code == 422


def test_leaving_another_segment_of_the_trigger_does_not_stop_the_enrolment(topics, session_factory, workers, clock, sink):
    """A playbook on entering fintech or pro: fin1 enters both at once and is enrolled by
    the first signal (fintech's); leaving pro leaves that enrolment running, leaving
    fintech stops it."""
    world(session_factory, topics, clock)
    with transaction(session_factory) as s:
        segments.create(
            s,
            segments.parse({"id": "pro", "name": "Pro", "condition": {"field": "account.plan", "op": "==", "value": "pro"}}, 400),
            "ops:test",
            clock.now(),
        )
    save_playbook(session_factory, "welcome", {**WELCOME, "trigger": {"segments": ["fintech", "pro"]}})
    w = workers()
    rules = RulesWorker(topics, session_factory, clock, tick=False)
    try:
        run_segments(session_factory, topics, clock.now())
        rules.relay()
        drain(w["signals"], lambda: set(enrollments(session_factory, "welcome")) == {"fin1", "fin2", "ret1"})
        assert enrollments(session_factory, "welcome")["fin1"].signal["rule_id"] == "segment:fintech"
        for change, leaves in ((lambda a: setattr(a, "plan", "starter"), "pro"), (lambda a: setattr(a, "traits", {}), "fintech")):
            clock.advance(days(1))
            with transaction(session_factory) as s:
                change(s.get(Account, "fin1"))
            left = run_segments(session_factory, topics, clock.now())
            assert [(x.rule_id, x.account_id) for x in left.signals] == [(f"segment:{leaves}", "fin1")]
            rules.relay()
            drain(w["signals"], lambda sid=left.signals[0].signal_id: decision(session_factory, sid) is not None)
            status = enrollments(session_factory, "welcome")["fin1"].status
            assert status == ("active" if leaves == "pro" else "completed"), leaves
    finally:
        rules.close()


async def test_the_report_by_segment_counts_members_as_of_their_enrolment(api, keys, topics, session_factory, workers, clock, sink):
    """Twenty accounts, fintech the even ones, retail the odd ones, enrolled in a playbook
    holding out half; then c11 turns fintech and c00 retail (after their enrolment: c11
    still counts as retail, c00 as fintech); c00..c07 convert. Each segment's treated and
    held-out groups, conversions and lift are those of its members at enrolment."""
    ops = auth(keys["ops"])
    accounts = [f"c{i:02d}" for i in range(20)]
    for i, a in enumerate(accounts):
        add_account(session_factory, a, traits={"industry": "fintech" if i % 2 == 0 else "retail"})
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", clock.now())
        retail = {"id": "retail", "name": "Retail", "condition": {"field": "account.traits.industry", "op": "==", "value": "retail"}}
        segments.create(s, segments.parse(retail, 400), "ops:test", clock.now())
    save_template(session_factory, topics)
    save_playbook(session_factory, "wb", {**FINTECH_WIN_BACK, "audience": {}, "holdout_percent": 50})
    run_segments(session_factory, topics, clock.now())

    clock.advance(days(1))
    w = workers()
    send_signals(topics, [signal(a, fired_at=clock.now()) for a in accounts])
    drain(w["signals"], lambda: len(enrollments(session_factory, "wb")) == 20)
    clock.advance(days(1))
    with transaction(session_factory) as s:
        s.get(Account, "c00").traits = {"industry": "retail"}
        s.get(Account, "c11").traits = {"industry": "fintech"}
        for e in s.scalars(select(Enrollment).where(Enrollment.account_id.in_(accounts[:8]))):
            e.status = "converted"
    run_segments(session_factory, topics, clock.now())

    r = await api.get("/v1/playbooks/wb/report/segments?segment=fintech&segment=retail", headers=ops)
    assert r.status_code == 200, r.text
    got = {s["segment_id"]: s for s in r.json()["segments"]}
    assert r.json()["enrolments"] == 20
    for sid, members in (("fintech", accounts[0::2]), ("retail", accounts[1::2])):
        held = [a for a in members if expected_held_out("wb", a, 50)]
        treated = [a for a in members if a not in held]
        t_conv, h_conv = sum(a in accounts[:8] for a in treated), sum(a in accounts[:8] for a in held)
        assert (got[sid]["treated"]["enrolled"], got[sid]["treated"]["converted"]) == (len(treated), t_conv), sid
        assert (got[sid]["holdout"]["enrolled"], got[sid]["holdout"]["converted"]) == (len(held), h_conv), sid
        if treated and held:
            assert got[sid]["lift"] == pytest.approx(t_conv / len(treated) - h_conv / len(held))
            lo, hi = got[sid]["confidence_interval"]
            assert lo <= got[sid]["lift"] <= hi
    # The playbook's console page shows the same figures for a segment chosen.
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/playbooks/wb?segment=fintech")).text
    t, h = got["fintech"]["treated"], got["fintech"]["holdout"]
    assert (
        f'<tr><td>treated</td><td class="n">{t["enrolled"]}</td><td class="n">{t["converted"]}</td>'
        in page.split('id="holdout-segment"')[1]
    )
    assert (
        f'<tr><td>holdout</td><td class="n">{h["enrolled"]}</td><td class="n">{h["converted"]}</td>'
        in page.split('id="holdout-segment"')[1]
    )
    assert 'id="holdout-segment"' not in (await api.get("/console/playbooks/wb?segment=nope")).text
    r = await api.get("/v1/playbooks/wb/report/segments?segment=nope", headers=ops)
    assert r.status_code == 422 and "nope" in r.text
    assert (await api.get("/v1/playbooks/nope/report/segments?segment=fintech", headers=ops)).status_code == 404
