"""The stories of the mission, end to end on the real broker, both databases, the
SMTP sink and the simulated clock, with the starter rules and playbooks:

- Looker: silence, the no-login-14d churn signal, two win-back emails ignored,
  escalation to a pooled CSM, the assignment email, reminders, expiry with the
  automatic outcome, and the playbook running on after it;
- expansion: monthly active users up sharply, mau-up-50 fires, a discovery
  engagement opens straight from the expansion playbook;
- recovery: the account comes back during the engagement and the CSM resolves it;
  the automatic measurement agrees.
"""

from __future__ import annotations

from datetime import timedelta

import yaml
from sqlalchemy import select

from services.outreach.models import Enrollment
from services.outreach.starter import seed_starter_content
from services.rules.evaluation.worker import RulesWorker
from services.rules.models import SignalRecord
from shared.db import transaction
from shared.outbox import pending_count
from tests.support.engagements import add_csm, csm_key, engagements, worker
from tests.support.helpers import ROOT, T0, auth, drain, expected_held_out, track
from tests.support.outreach import days, messages
from tests.support.rules import group, identify, ingest, ingest_reports_caught_up, make_rule

STARTER_RULES = ROOT / "services" / "rules" / "starter"
USERS = {"ada": "champion", "bob": "admin", "cy": "member"}


def _account_id(prefix: str, *holdouts: tuple[str, float]) -> str:
    """The first id that no holdout of the starter playbooks keeps from the story."""
    for i in range(100):
        candidate = f"{prefix}-{i}"
        if not any(expected_held_out(key, candidate, pct) for key, pct in holdouts):
            return candidate
    raise AssertionError("no account id outside the holdouts")


def _customer(session_factory, account_id: str, users: dict[str, str], active: dict[str, range]) -> None:
    """An account, its contacts and their logins (days before T0), through ingest's own service."""
    events = [
        group(
            account_id,
            T0 - days(400),
            name=f"{account_id.title()} Corp",
            segment="smb",
            arr=48000.0,
            seats=12,
            renewal_date=(T0 + days(45)).date().isoformat(),
            signup_date=(T0 - days(400)).date().isoformat(),
            owner_email=f"owner@{account_id}.test",
        )
    ]
    for uid, role in users.items():
        events.append(identify(account_id, uid, T0 - days(400), email=f"{uid}@{account_id}.test", name=uid.title(), role=role))
    for uid, span in active.items():
        for d in span:
            events.append(track(account_id, "login", T0 - days(d), uid, event_id=f"{account_id}-{uid}-{d}"))
    ingest(session_factory, events, T0)


def _fire(topics, session_factory, clock, rule_file: str) -> None:
    make_rule(session_factory, yaml.safe_load((STARTER_RULES / rule_file).read_text()), clock.now())
    ingest_reports_caught_up(topics, session_factory, clock)
    rules = RulesWorker(topics, session_factory, clock)
    try:
        drain(rules, lambda: _signals(session_factory) == 1 and _pending(session_factory) == 0)
    finally:
        rules.close()


def _signals(session_factory) -> int:
    with session_factory() as s:
        return len(list(s.scalars(select(SignalRecord))))


def _pending(session_factory) -> int:
    with session_factory() as s:
        return pending_count(s)


def _enrollments(session_factory, playbook_id: str) -> list[Enrollment]:
    with session_factory() as s:
        return list(s.scalars(select(Enrollment).where(Enrollment.playbook_id == playbook_id)))


async def test_the_looker_story(topics, session_factory, clock, workers, sink, api, keys):
    account = _account_id("looker", ("win-back", 20), ("win-back\x1fescalation", 10))
    _customer(session_factory, account, USERS, {u: range(15, 60) for u in USERS})  # silent for 15 days
    with transaction(session_factory) as s:
        seed_starter_content(s, topics, clock.now())
    await add_csm(api, keys["ops"], "grace", name="Grace Hopper", capacity=5, segments=["smb"])
    grace = auth(csm_key(session_factory, clock, "grace"))
    w = workers()
    ew = worker(topics, session_factory, clock)

    _fire(topics, session_factory, clock, "no-login-14d.yaml")  # the churn signal
    drain(w["signals"], lambda: len(_enrollments(session_factory, "win-back")) == 1)
    w["sender"].poll_once()
    clock.advance(days(4) + timedelta(minutes=1))
    w["timers"].poll_once()  # still silent: the owner is emailed
    w["sender"].poll_once()
    assert sorted(m["to"] for m in sink.messages) == [f"ada@{account}.test", f"bob@{account}.test", f"owner@{account}.test"]
    assert ew.poll_once() == 0  # nothing to escalate yet

    clock.advance(days(7))
    w["timers"].poll_once()  # two emails ignored: escalation
    [e] = engagements(session_factory)
    assert (e.account_id, e.goal, e.status, e.playbook_id, e.rule_id) == (account, "recover_usage", "queued", "win-back", "no-login-14d")
    ew.poll_once()
    w["sender"].poll_once()
    assert sink.messages[-1]["to"] == "grace@pool.test" and sink.messages[-1]["subject"].startswith("New engagement")

    mine = (await api.get("/v1/me/engagements", headers=grace)).json()
    assert [x["id"] for x in mine["items"]] == [e.id]
    d = (await api.get(f"/v1/engagements/{e.id}", headers=grace)).json()
    assert d["reason"]["evidence"]["days_since(login)"]["value"] >= 14
    assert len([m for m in d["messages_sent"] if m["playbook_id"] == "win-back"]) == 3  # the ignored emails
    assert d["reason"]["automation"]["sent"] == 3 and d["account"]["arr"] == 48000.0
    assert "champion" in d["contacts"] and len(d["usage_90d"]) == 90
    assert (await api.post(f"/v1/engagements/{e.id}/accept", headers=grace)).status_code == 200

    clock.advance(days(23))
    ew.poll_once()
    clock.advance(days(6))
    ew.poll_once()
    clock.advance(days(1))
    ew.poll_once()  # the due time: expired, outcome measured
    w["sender"].poll_once()
    [e] = engagements(session_factory)
    assert e.status == "expired" and e.outcome == "no_response" and e.outcome_source == "automatic"
    assert e.measured["at_close"]["baseline"] == 3 and e.measured["at_close"]["value"] == 0
    assert [m["subject"].split(":")[0] for m in sink.messages if m["to"] == "grace@pool.test"] == [
        "New engagement",
        "7 days left",
        "1 day left",
    ]
    w["timers"].poll_once()  # the waiting playbook runs on: no recovery, so it ends
    [enr] = _enrollments(session_factory, "win-back")
    assert enr.status == "completed" and enr.history[-1]["outcome"] == "no_response"


async def test_the_expansion_story(topics, session_factory, clock, workers, api, keys):
    account = _account_id("boom", ("expansion-discovery\x1fescalation", 10))
    users = {f"u{i}": "member" for i in range(8)} | {"ada": "champion"}
    active = {u: range(1, 28) for u in users}  # nine users this month...
    active["ada"] = range(1, 56)
    active["u0"] = range(1, 56)  # ...two the month before
    _customer(session_factory, account, users, active)
    with transaction(session_factory) as s:
        seed_starter_content(s, topics, clock.now())
    await add_csm(api, keys["ops"], "ken", name="Ken Thompson", capacity=5, skills=["discover_expansion"])
    await add_csm(api, keys["ops"], "ann", name="Ann Smith", capacity=5, skills=["recover_usage"])
    w = workers()
    _fire(topics, session_factory, clock, "mau-up-50.yaml")
    drain(w["signals"], lambda: len(engagements(session_factory)) == 1)
    [e] = engagements(session_factory)
    assert (e.goal, e.playbook_id, e.rule_id, e.status) == ("discover_expansion", "expansion-discovery", "mau-up-50", "queued")
    assert e.reason["signal"]["kind"] == "expansion"
    worker(topics, session_factory, clock).poll_once()
    [e] = engagements(session_factory)
    assert e.csm_id == "ken"  # the skill decides
    ken = auth(csm_key(session_factory, clock, "ken"))
    r = await api.post(f"/v1/engagements/{e.id}/resolve", json={"outcome": "expanded", "note": "new team onboarded"}, headers=ken)
    assert r.json()["status"] == "resolved" and r.json()["outcome"] == "expanded"


async def test_a_recovery_resolves_as_recovered(topics, session_factory, clock, workers, api, keys):
    account = _account_id("comeback", ("win-back", 20), ("win-back\x1fescalation", 10))
    _customer(session_factory, account, USERS, {u: range(15, 60) for u in USERS})
    with transaction(session_factory) as s:
        seed_starter_content(s, topics, clock.now())
    await add_csm(api, keys["ops"], "grace", name="Grace Hopper", capacity=5)
    from services.outreach.engagements import opening

    with transaction(session_factory) as s:
        e, _ = opening.open_engagement(
            s, account_id=account, goal="recover_usage", actor="ops:test", now=clock.now(), settings=topics, note="exec sponsor left"
        )
    ew = worker(topics, session_factory, clock)
    ew.poll_once()
    clock.advance(days(10))
    ingest(
        session_factory,
        [track(account, "login", clock.now() - days(d), u, event_id=f"back-{u}-{d}") for u in USERS for d in range(0, 5)],
        clock.now(),
    )
    grace = auth(csm_key(session_factory, clock, "grace"))
    r = await api.post(f"/v1/engagements/{e.id}/resolve", json={"outcome": "recovered"}, headers=grace)
    body = r.json()
    assert body["outcome"] == "recovered" and body["measured"]["success"] is True
    assert body["measured"]["at_close"]["verdict"] == "recovered" and body["measured"]["csm_agrees"] is True
    assert [m.step_id for m in messages(session_factory, account_id=account)] == [
        "engagement.assigned"
    ]  # nothing automated was needed: only the CSM's notice
