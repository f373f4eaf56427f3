"""Engagement behaviours a one-line bug could break unseen (issue 25), on both databases:
least-loaded assignment when the less-loaded CSM was assigned more recently (so round
robin first would choose the other), the time-box across time (a reassignment and an
away window keep the due time), and the escalation holdout next to a message holdout
at a percentage whose complement selects other accounts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from services.ingest import interface as ingest
from services.outreach.engagements import service
from services.outreach.engagements.roster import put
from services.outreach.engagements.schemas import CsmIn
from services.outreach.models import Engagement, Enrollment, Playbook
from services.outreach.playbooks import engine as playbook_engine
from shared.db import transaction
from shared.signals import Signal
from tests.support.engagements import add_csm, engagement, engagements, open_engagement, timeline, worker
from tests.support.helpers import T0, auth, drain, expected_held_out
from tests.support.outreach import add_account, days, messages, save_playbook, save_template, send_signals, signal, simple_playbook


def _roster(session_factory, settings, clock, *csm_ids: str) -> None:
    with transaction(session_factory) as s:
        for cid in csm_ids:
            put(s, cid, CsmIn(name=cid.title(), email=f"{cid}@pool.test", capacity=5), actor="test", now=clock.now(), settings=settings)


def test_the_least_loaded_csm_wins_even_when_assigned_most_recently(session_factory, settings, clock):
    """Round robin breaks ties only: ann, assigned last but now holding nothing, takes the
    next engagement from ben, who holds one and was assigned longer ago."""
    settings = settings.model_copy(update={"engagement_sticky": False})
    _roster(session_factory, settings, clock, "ann", "ben")
    for i in range(4):
        add_account(session_factory, f"x{i}")
    x0, x1, x2 = (open_engagement(session_factory, settings, clock, f"x{i}", priority_override=float(3 - i)) for i in range(3))
    w = worker(settings, session_factory, clock)
    assert w.poll_once() == 3
    assert [engagement(session_factory, e).csm_id for e in (x0, x1, x2)] == ["ann", "ben", "ann"]  # ann last, with seq 3
    with transaction(session_factory) as s:
        for eid in (x0, x2):
            service.resolve(s, s.get(Engagement, eid), outcome="recovered", note="", actor="test", now=clock.now(), settings=settings)
    # Loads now: ann 0 (assigned most recently), ben 1 (assigned longer ago).
    x3 = open_engagement(session_factory, settings, clock, "x3")
    assert w.poll_once() == 1
    assert engagement(session_factory, x3).csm_id == "ann"
    assert timeline(session_factory, x3)[-1].details["reason"] == "least_loaded"


async def test_the_time_box_keeps_its_due_time_across_reassignment_and_away(api, keys, session_factory, settings, clock):
    """The time-box starts at the first assignment; moving the engagement later (CS Ops
    reassigning it, its CSM going away) never restarts it, and the reminders stay on it."""
    settings = settings.model_copy(update={"engagement_sticky": False})
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", name="Ann Smith", capacity=3)
    await add_csm(api, keys["ops"], "ben", name="Ben Jones", capacity=3)
    add_account(session_factory)
    eid = open_engagement(session_factory, settings, clock)
    clock.advance(days(2))  # queued for two days: the box has not started
    w = worker(settings, session_factory, clock)
    assert w.poll_once() == 1
    first = engagement(session_factory, eid)
    due = T0 + days(2) + days(30)
    assert (first.due_at, first.next_reminder_at) == (due, due - days(7))

    clock.advance(days(10))
    other = "ben" if first.csm_id == "ann" else "ann"
    r = await api.post(f"/v1/engagements/{eid}/reassign", json={"csm_id": other, "reason": "rebalance"}, headers=ops)
    assert r.status_code == 200, r.text
    moved = engagement(session_factory, eid)
    assert (moved.csm_id, moved.assignments, moved.due_at, moved.next_reminder_at) == (other, 2, due, due - days(7))
    assigned = [t.details for t in timeline(session_factory, eid) if t.kind == "transition" and t.to_status == "assigned"]
    # The timeline says who had it before and why it moved.
    assert [(d.get("csm_id"), d.get("previous_csm_id"), d.get("reason")) for d in assigned] == [
        (first.csm_id, None, "least_loaded"),
        (other, first.csm_id, "rebalance"),
    ]

    clock.advance(days(5))  # the CSM goes away: the engagement moves back at once, due time unchanged
    r = await api.patch(f"/v1/csms/{other}", json={"away_from": clock.now().isoformat()}, headers=ops)
    assert r.status_code == 200, r.text
    back = engagement(session_factory, eid)
    assert (back.csm_id, back.assignments, back.due_at, back.next_reminder_at) == (first.csm_id, 3, due, due - days(7))
    assert w.poll_once() == 0  # nothing due yet: day 17 of 30

    clock.set(due - days(7) - timedelta(seconds=1))
    assert w.poll_once() == 0
    clock.set(due - days(7))
    assert w.poll_once() == 1  # the 7-day reminder, counted from the first assignment
    assert engagement(session_factory, eid).reminders_sent == [7.0]
    clock.set(due)
    assert w.poll_once() == 2  # the 1-day reminder (late) and the expiry
    done = engagement(session_factory, eid)
    assert (done.status, done.closed_at) == ("expired", due)


def test_the_escalation_holdout_leaves_the_message_holdout_alone(topics, session_factory, clock, workers):
    """A playbook with both holdouts at 30% (30 and 70 select different accounts, so an
    inverted percentage fails here): accounts in the message holdout are never escalated,
    not even as held-out engagements; of the others, the escalation holdout's own 30%
    get a held-out engagement and the rest a queued one."""
    accounts = [f"h{i:02d}" for i in range(40)]
    for a in accounts:
        add_account(session_factory, a)
    save_playbook(
        session_factory,
        "escalate",
        simple_playbook(
            holdout_percent=30,
            steps=[{"id": "csm", "type": "open_engagement", "goal": "recover_usage", "time_box": "5d", "holdout_percent": 30}],
        ),
    )
    w = workers()
    send_signals(topics, [signal(a, signal_id=f"s-{a}") for a in accounts])

    def enrolled() -> int:
        with session_factory() as s:
            return len(list(s.scalars(select(Enrollment.id))))

    drain(w["signals"], lambda: enrolled() == 40)
    messaged_out = {a for a in accounts if expected_held_out("escalate", a, 30)}
    escalation_out = {a for a in accounts if a not in messaged_out and expected_held_out("escalate\x1fescalation", a, 30)}
    # The groups this test needs exist, and the complement would pick other accounts.
    assert 0 < len(messaged_out) < 20 and 0 < len(escalation_out) < 20
    assert escalation_out != {a for a in accounts if a not in messaged_out and expected_held_out("escalate\x1fescalation", a, 70)}
    got = engagements(session_factory)
    assert {e.account_id for e in got} == set(accounts) - messaged_out
    assert {e.account_id for e in got if e.status == "held_out"} == escalation_out
    assert {e.account_id for e in got if e.status == "queued"} == set(accounts) - messaged_out - escalation_out
    # Each enrolment's history says what the step did, and why not for the message holdout.
    with session_factory() as s:
        said = {en.account_id: [h.get("engagement") for h in en.history if h.get("step") == "csm"] for en in s.scalars(select(Enrollment))}
    expected = {
        a: ["not escalated: the enrolment is in the message holdout"]
        if a in messaged_out
        else ["held_out" if a in escalation_out else "opened"]
        for a in accounts
    }
    assert said == expected


def test_the_escalation_waits_until_the_enrolment_s_messages_have_left(topics, session_factory, clock, workers, sink):
    """An email step, then the escalation: while the email is still in the outbox the step
    waits (re-checking a minute later, on the simulated clock) and opens nothing; once the
    sender has sent it, the next check opens the engagement."""
    add_account(session_factory)
    save_template(session_factory, topics)
    steps = [
        {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
        {"id": "csm", "type": "open_engagement", "goal": "recover_usage", "time_box": "5d"},
    ]
    save_playbook(session_factory, "mail-first", simple_playbook(steps=steps))
    w = workers()
    send_signals(topics, [signal(signal_id="s1")])
    drain(w["signals"], lambda: len(messages(session_factory)) == 1)

    def csm_notes() -> list:
        with session_factory() as s:
            [en] = list(s.scalars(select(Enrollment)))
            return [(h["result"], h.get("engagement")) for h in en.history if h.get("step") == "csm"]

    waiting = ("waiting", "waiting: the enrolment's messages have not all left yet")
    assert engagements(session_factory) == [] and csm_notes() == [waiting]
    clock.advance(timedelta(minutes=1))
    w["timers"].poll_once()  # re-checked: the email is still queued
    assert engagements(session_factory) == [] and csm_notes() == [waiting, waiting]
    w["sender"].poll_once()
    assert [m.state for m in messages(session_factory)] == ["sent"]
    clock.advance(timedelta(minutes=1))
    w["timers"].poll_once()
    assert [e.account_id for e in engagements(session_factory)] == ["acme"] and csm_notes()[-1] == ("done", "opened")


def test_a_second_escalation_step_waits_for_its_own_engagement_not_the_first_one_s(topics, session_factory, clock, workers):
    """Two escalation steps in one playbook: the second, which waits for its outcome, must
    open and wait for its own engagement, not take the first step's (in the history just
    before it) for its own."""
    add_account(session_factory)
    steps = [
        {"id": "first", "type": "open_engagement", "goal": "recover_usage", "time_box": "5d"},
        {
            "id": "second",
            "type": "open_engagement",
            "goal": "discover_expansion",
            "time_box": "5d",
            "wait_for_outcome": True,
            "skill": "upsell",
            "priority": 9.5,
            "title": "Upsell call",
        },
    ]
    save_playbook(session_factory, "two-steps", simple_playbook(steps=steps))
    w = workers()
    send_signals(topics, [signal(signal_id="s1")])

    def history() -> list:
        with session_factory() as s:
            return [h for en in s.scalars(select(Enrollment)) for h in en.history]

    drain(w["signals"], lambda: any(h.get("step") == "second" for h in history()))
    by_goal = {e.goal: e.id for e in engagements(session_factory)}
    assert set(by_goal) == {"recover_usage", "discover_expansion"}
    with session_factory() as s:
        [en] = list(s.scalars(select(Enrollment)))
    assert (en.status, en.due_at) == ("active", clock.now() + timedelta(days=1))  # the waiting step re-checks daily
    second = next(e for e in engagements(session_factory) if e.goal == "discover_expansion")
    assert (second.priority, second.title) == (9.5, "Upsell call")  # the step's priority and title
    assert {e.goal: e.skill for e in engagements(session_factory)} == {
        "recover_usage": "recover_usage",
        "discover_expansion": "upsell",
    }  # the step's, else the goal
    assert [(h["step"], h.get("engagement_id")) for h in history() if h.get("step") in ("first", "second")] == [
        ("first", by_goal["recover_usage"]),
        ("second", by_goal["discover_expansion"]),
    ]


def _escalate_now(session_factory, settings, clock, account_id: str, signal_id: str) -> list:
    """Enrol ``account_id`` in a one-step escalation playbook without a worker, and return
    what the step wrote in the enrolment's history: (result, note, engagement id)."""
    with session_factory() as s:
        saved = s.get(Playbook, "escalate-now") is not None
    if not saved:
        save_playbook(
            session_factory, "escalate-now", simple_playbook(steps=[{"id": "csm", "type": "open_engagement", "goal": "recover_usage"}])
        )
    with transaction(session_factory) as s:
        compiled = playbook_engine.load_compiled(s, "escalate-now", 1)
        sig = Signal.model_validate(signal(account_id, signal_id=signal_id))
        enrolled = playbook_engine.enroll(s, compiled, sig, ingest.account(s, account_id), clock.now(), settings)
        assert enrolled is not None
        return [(h["result"], h.get("engagement"), h.get("engagement_id")) for h in enrolled.history if h.get("step") == "csm"]


def test_an_escalation_of_an_account_with_an_open_engagement_attaches_to_it(session_factory, settings, clock):
    """CS Ops opened an engagement for the account and goal already: the step opens no
    second one, and the enrolment's history says it attached, to that engagement."""
    add_account(session_factory)
    existing = open_engagement(session_factory, settings, clock)
    assert _escalate_now(session_factory, settings, clock, "acme", "s1") == [("done", "attached", existing)]
    assert [e.id for e in engagements(session_factory)] == [existing]
    add_account(session_factory, "globex")  # and an account without one: opened, a new engagement
    [(result, said, opened)] = _escalate_now(session_factory, settings, clock, "globex", "s2")
    assert (result, said) == ("done", "opened") and opened != existing
    assert {e.account_id: e.id for e in engagements(session_factory)} == {"acme": existing, "globex": opened}


def test_an_escalation_that_cannot_open_says_why_and_the_enrolment_goes_on(session_factory, settings, clock):
    """A signal for an account Touchline does not know (none was ever ingested): opening
    is refused; the step records the refusal's reason in the history and the enrolment
    goes on (here to its end) instead of failing or retrying for ever."""
    said = _escalate_now(session_factory, settings, clock, "ghost", "s1")
    assert said == [("done", "not opened: no account 'ghost': engagements are opened for accounts Touchline knows", None)]
    assert engagements(session_factory) == []
    with session_factory() as s:
        [en] = list(s.scalars(select(Enrollment)))
    assert (en.status, [h["step"] for h in en.history]) == ("completed", ["csm", "end"])
