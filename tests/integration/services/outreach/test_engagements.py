"""Pooled-CSM engagements on both databases: the roster, the state machine and its
audit trail, one open engagement per account and goal (the database says so),
assignment (capacity, least loaded, round robin, sticky, priority queue, away),
notices through the outbox and the real SMTP sink, the touch budget, the time-box
on the simulated clock, wait_for_outcome, CSM isolation on every route, bad input."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from services.ingest.models import Account
from services.outreach.engagements import service
from services.outreach.models import Engagement, SignalReceipt
from services.outreach.playbooks.worker import SignalWorker
from services.rules import interface as rules
from services.rules.evaluation.segments import run_segments
from services.rules.segments import service as segments
from shared.db import transaction
from shared.kafka.clients import ensure_topics
from shared.models import AuditRecord
from shared.pagination import encode_cursor
from tests.support.console import sign_in
from tests.support.counts import pool_figures_are_counts_of_lists
from tests.support.engagements import (
    add_csm,
    csm_body,
    csm_key,
    engagement,
    engagements,
    open_engagement,
    timeline,
    worker,
)
from tests.support.helpers import T0, auth, drain, expected_held_out, walk
from tests.support.outreach import (
    add_account,
    add_activity,
    days,
    messages,
    save_playbook,
    save_template,
    send_signals,
    signal,
    simple_playbook,
)


async def test_roster_api_and_bad_input(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    grace = await add_csm(
        api,
        keys["ops"],
        "grace",
        capacity=2,
        segments=["smb"],
        skills=["recover_usage"],
        working_hours={"days": [0, 1, 2, 3], "start": "08:00", "end": "16:00"},
    )
    assert grace["available"] and grace["open_engagements"] == 0 and grace["working_hours"]["days"] == [0, 1, 2, 3]
    r = await api.get("/v1/csms", headers=ops)
    assert [c["id"] for c in r.json()["items"]] == ["grace"] and r.json()["next_cursor"] is None
    for body, field in (
        ({"name": "X", "email": "nope", "capacity": 1}, "email"),
        ({"name": "X", "email": "x@y.z", "capacity": -1}, "capacity"),
        ({"name": "X", "email": "x@y.z", "timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "X", "email": "x@y.z", "working_hours": {"start": "25:00"}}, "start"),
    ):
        r = await api.put("/v1/csms/x", json=body, headers=ops)
        assert r.status_code == 422 and field in r.text, r.text
    assert (await api.patch("/v1/csms/nobody", json={"capacity": 3}, headers=ops)).status_code == 404
    # csm keys cannot manage the roster
    assert (await api.put("/v1/csms/x", json={"name": "X", "email": "x@y.z"}, headers=auth(keys["csm"]))).status_code == 403

    add_account(session_factory)
    add_account(session_factory, "globex")
    for account in ("acme", "globex"):
        open_engagement(session_factory, settings, clock, account)
    assert worker(settings, session_factory, clock).poll_once() == 2
    r = await api.patch("/v1/csms/grace", json={"capacity": 1}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "capacity_below_load" and "2 open" in r.json()["detail"]
    # Opening by hand for an unknown account or CSM is a clear 422.
    r = await api.post("/v1/engagements", json={"account_id": "nobody"}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "unknown_account"
    r = await api.post("/v1/engagements", json={"account_id": "acme", "goal": "custom", "csm_id": "ghost"}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "unknown_csm"
    r = await api.post("/v1/engagements", json={"account_id": "acme", "goal": "make_money"}, headers=ops)
    assert r.status_code == 422 and "goal" in r.text
    # By hand for a goal the account has open: that engagement, 200 (201 only for a new one).
    existing = engagements(session_factory, account_id="acme")[0].id
    r = await api.post("/v1/engagements", json={"account_id": "acme", "note": "again"}, headers=ops)
    assert r.status_code == 200 and r.json()["id"] == existing, r.text
    r = await api.post("/v1/engagements", json={"account_id": "acme", "goal": "discover_expansion"}, headers=ops)
    assert r.status_code == 201 and r.json()["id"] != existing and r.json()["goal"] == "discover_expansion", r.text


def test_one_open_engagement_per_account_and_goal_is_enforced_by_the_database(session_factory, settings, clock):
    add_account(session_factory)
    first = open_engagement(session_factory, settings, clock, signal=signal(signal_id="s1"))
    # A second escalation attaches its signal to the open engagement instead of opening another.
    again = open_engagement(session_factory, settings, clock, signal=signal(signal_id="s2"))
    assert again == first and engagement(session_factory, first).signal_ids == ["s1", "s2"]
    assert [e.kind for e in timeline(session_factory, first)] == ["transition", "signal_attached"]
    # Another goal is another engagement.
    other = open_engagement(session_factory, settings, clock, goal="discover_expansion")
    assert other != first
    # The partial unique index itself refuses a second open row, whatever the code does.
    e = engagement(session_factory, first)
    row = {c.name: getattr(e, c.name) for c in Engagement.__table__.columns}
    with pytest.raises(IntegrityError):
        with transaction(session_factory) as s:
            s.execute(Engagement.__table__.insert().values(**{**row, "id": "another"}))
    # ...but closed ones do not count: after cancelling, a new one opens.
    with transaction(session_factory) as s:
        service.cancel(s, s.get(Engagement, first), reason="test", actor="test", now=clock.now(), settings=settings)
    assert open_engagement(session_factory, settings, clock, signal=signal(signal_id="s3")) != first


def test_assignment_least_loaded_round_robin_priority_and_queue(session_factory, settings, clock):
    settings = settings.model_copy(update={"engagement_sticky": False})
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn

    with transaction(session_factory) as s:
        for cid, cap, segs in (("ann", 2, []), ("ben", 2, []), ("cat", 5, ["enterprise"])):
            put(
                s,
                cid,
                CsmIn(name=cid.title(), email=f"{cid}@pool.test", capacity=cap, segments=segs),
                actor="test",
                now=clock.now(),
                settings=settings,
            )
    for i in range(5):
        add_account(session_factory, f"a{i}")
    ids = [open_engagement(session_factory, settings, clock, f"a{i}", priority_override=float(i)) for i in range(5)]
    w = worker(settings, session_factory, clock)
    assert w.poll_once() == 4  # ann 2 + ben 2; cat covers enterprise only
    got = {e.id: e for e in engagements(session_factory)}
    # Highest priority first, alternating (round robin on equal load); the lowest waits in the queue.
    assert [got[i].csm_id for i in reversed(ids)] == ["ann", "ben", "ann", "ben", None]
    assert got[ids[0]].status == "queued"
    assert all(got[i].due_at == T0 + days(30) for i in ids[1:])
    # Capacity frees: the queued one is assigned at the next pass.
    with transaction(session_factory) as s:
        service.resolve(s, s.get(Engagement, ids[3]), outcome="recovered", note="", actor="test", now=clock.now(), settings=settings)
    assert w.poll_once() == 1
    assert engagement(session_factory, ids[0]).csm_id == engagement(session_factory, ids[3]).csm_id
    with session_factory() as s:
        audits = list(
            s.scalars(
                select(AuditRecord).where(AuditRecord.object_type == "engagement", AuditRecord.object_id == ids[0]).order_by(AuditRecord.id)
            )
        )
    assert [a.action for a in audits] == ["open", "assigned"]
    tl = timeline(session_factory, ids[0])
    assert [(t.from_status, t.to_status) for t in tl] == [(None, "queued"), ("queued", "assigned")]
    assert all(t.at == T0 and t.actor for t in tl)


async def test_sticky_assignment_and_reassignment_when_a_csm_goes_away(api, keys, session_factory, settings, clock, sink, workers):
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", name="Ann Smith", capacity=3)
    await add_csm(api, keys["ops"], "ben", name="Ben Jones", capacity=3)
    add_account(session_factory)
    add_account(session_factory, "globex")
    first = open_engagement(session_factory, settings, clock, "acme", goal="custom")
    w = worker(settings, session_factory, clock)
    w.poll_once()
    sticky_to = engagement(session_factory, first).csm_id
    with transaction(session_factory) as s:
        service.resolve(s, s.get(Engagement, first), outcome="other", note="", actor="test", now=clock.now(), settings=settings)
    open_engagement(session_factory, settings, clock, "globex")  # loads the other CSM equally... then
    w.poll_once()
    second = open_engagement(session_factory, settings, clock, "acme")
    w.poll_once()
    assert engagement(session_factory, second).csm_id == sticky_to  # the CSM who last worked the account

    # The CSM goes away: their open engagements move to the other CSM at once.
    r = await api.patch(
        f"/v1/csms/{sticky_to}",
        json={"away_from": clock.now().isoformat(), "away_until": (clock.now() + days(14)).isoformat()},
        headers=ops,
    )
    assert r.status_code == 200 and r.json()["available"] is False and r.json()["open_engagements"] == 0
    moved = engagement(session_factory, second)
    assert moved.status == "assigned" and moved.csm_id != sticky_to and moved.assignments == 2
    assert [(t.from_status, t.to_status) for t in timeline(session_factory, second)][-2:] == [
        ("assigned", "queued"),
        ("queued", "assigned"),
    ]
    # Every assignment notified the CSM by email, through the outbox, to the real sink.
    w_out = workers()
    w_out["sender"].poll_once()
    subjects = sorted((m["to"], m["subject"]) for m in sink.messages)
    assert len(subjects) == 4 and all(s.startswith("New engagement: ") for _to, s in subjects)
    assert any("Acme Inc" in s for _to, s in subjects)
    # Notices are listed with the account, as internal messages: never customer touches.
    assert {(m.step_id, m.audience) for m in messages(session_factory, account_id="acme")} == {("engagement.assigned", "internal")}


async def test_patch_csm_null_clears_only_the_away_window(api, keys):
    """Issue 18: PATCH {"active": null, "away_from": ...} set a NOT NULL column to NULL
    (IntegrityError, a 500). Null clears away_from and away_until; for every other field
    it is a 422 naming the field, and nothing changes."""
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", away_from="2030-01-01T00:00:00Z", away_until="2030-01-08T00:00:00Z")
    r = await api.patch("/v1/csms/ann", json={"active": None, "away_from": "2000-01-01T00:00:00Z"}, headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert [(d["loc"], d["msg"]) for d in r.json()["detail"]] == [
        (["body", "active"], "Value error, active cannot be null; leave it out to keep the current value")
    ]
    for field in ("name", "email", "timezone", "working_hours", "capacity", "segments", "skills", "active"):
        r = await api.patch("/v1/csms/ann", json={field: None}, headers=ops)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], (field, r.text)
    after = (await api.get("/v1/csms/ann", headers=ops)).json()
    assert after["active"] is True and after["away_from"] == "2030-01-01T00:00:00Z" and after["capacity"] == 5
    r = await api.patch("/v1/csms/ann", json={"away_from": None, "away_until": None}, headers=ops)
    assert r.status_code == 200 and (r.json()["away_from"], r.json()["away_until"]) == (None, None)
    # Away times: a zone is required and the time must exist in UTC (9999-12-31 at -14:00 does not: was a 500).
    for away in ("2030-01-01T00:00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        for send in (
            api.patch("/v1/csms/ann", json={"away_from": away}, headers=ops),
            api.put("/v1/csms/bo", json=csm_body(away_until=away), headers=ops),
        ):
            r = await send
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] in ("away_from", "away_until"), (away, r.text)
    r = await api.patch("/v1/csms/ann", json={"away_from": "2030-01-01T09:00:00+09:00"}, headers=ops)
    assert r.status_code == 200 and r.json()["away_from"] == "2030-01-01T00:00:00Z"


async def test_away_window_that_starts_later_releases_work_when_it_begins(api, keys, session_factory, settings, clock):
    await add_csm(api, keys["ops"], "ann", capacity=3)
    add_account(session_factory)
    eid = open_engagement(session_factory, settings, clock)
    w = worker(settings, session_factory, clock)
    w.poll_once()
    r = await api.patch("/v1/csms/ann", json={"away_from": (clock.now() + days(2)).isoformat()}, headers=auth(keys["ops"]))
    assert r.json()["available"] is True and engagement(session_factory, eid).csm_id == "ann"
    clock.advance(days(3))
    w.poll_once()
    e = engagement(session_factory, eid)
    assert e.status == "queued" and e.csm_id is None  # nobody else can take it: it waits, by priority


async def test_csm_work_over_the_api(api, keys, session_factory, settings, clock):
    await add_csm(api, keys["ops"], "ann", name="Ann Smith", capacity=3)
    mine = auth(csm_key(session_factory, clock, "ann"))
    add_account(session_factory)
    eid = open_engagement(session_factory, settings, clock, signal=signal(signal_id="s1"))
    worker(settings, session_factory, clock).poll_once()
    r = await api.get("/v1/me/engagements", headers=mine)
    assert [e["id"] for e in r.json()["items"]] == [eid]
    assert (await api.get("/v1/me/engagements?status=active", headers=mine)).json() == {"items": [], "next_cursor": None}
    assert (await api.post(f"/v1/engagements/{eid}/accept", headers=mine)).json()["status"] == "active"
    r = await api.post(f"/v1/engagements/{eid}/accept", headers=mine)
    assert r.status_code == 409 and r.json()["error"] == "invalid_transition"
    r = await api.post(f"/v1/engagements/{eid}/touches", json={"kind": "call", "user_id": "ada", "summary": "Spoke to Ada"}, headers=mine)
    assert r.status_code == 201
    r = await api.post(f"/v1/engagements/{eid}/touches", json={"kind": "fax"}, headers=mine)
    assert r.status_code == 422
    r = await api.post(f"/v1/engagements/{eid}/touches", json={"kind": "call", "user_id": "zed"}, headers=mine)
    assert r.status_code == 422 and r.json()["error"] == "unknown_contact"
    r = await api.post(f"/v1/engagements/{eid}/notes", json={"text": "Budget freeze until Q3"}, headers=mine)
    assert r.status_code == 201 and (r.json()["kind"], r.json()["details"]["text"]) == ("note", "Budget freeze until Q3")
    r = await api.post(f"/v1/engagements/{eid}/extend", json={"days": 30}, headers=mine)
    assert r.status_code == 422 and r.json()["error"] == "extension_too_long" and "at most 14 days" in r.json()["detail"]
    r = await api.post(f"/v1/engagements/{eid}/extend", json={"days": 10, "reason": "exec on leave"}, headers=mine)
    assert r.status_code == 200 and r.json()["due_at"].startswith((T0 + days(40)).date().isoformat())
    r = await api.post(f"/v1/engagements/{eid}/extend", json={"days": 1}, headers=mine)
    assert r.status_code == 409 and r.json()["error"] == "already_extended"

    d = (await api.get(f"/v1/engagements/{eid}", headers=mine)).json()
    assert d["reason"]["signal"]["signal_id"] == "s1" and d["reason"]["evidence"]
    assert len(d["usage_90d"]) == 90 and set(d["contacts"]) == {"champion", "admin", "member"}
    assert [t["subject"] for t in d["touches"]] == ["call: Spoke to Ada"]
    assert [t["kind"] for t in d["timeline"]] == ["transition", "transition", "transition", "touch", "note", "extended"]

    r = await api.post(f"/v1/engagements/{eid}/resolve", json={"outcome": "won"}, headers=mine)
    assert r.status_code == 422
    r = await api.post(f"/v1/engagements/{eid}/resolve", json={"outcome": "churned", "note": "moving to a rival"}, headers=mine)
    body = r.json()
    assert body["status"] == "resolved" and body["outcome"] == "churned" and body["outcome_source"] == "csm"
    assert body["measured"]["at_close"]["verdict"] == "no_response"  # the automatic measurement, recorded beside it
    assert (await api.post(f"/v1/engagements/{eid}/touches", json={"kind": "call"}, headers=mine)).status_code == 409


CSM_ROUTES = [
    ("get", "/v1/engagements/{id}", None),
    ("get", "/v1/engagements/{id}/events", None),
    ("post", "/v1/engagements/{id}/accept", None),
    ("post", "/v1/engagements/{id}/touches", {"kind": "call"}),
    ("post", "/v1/engagements/{id}/emails", {"user_id": "ada", "subject": "Hello", "text": "Shall we talk?"}),
    ("post", "/v1/engagements/{id}/notes", {"text": "x"}),
    ("post", "/v1/engagements/{id}/extend", {"days": 1}),
    ("post", "/v1/engagements/{id}/resolve", {"outcome": "other"}),
    ("post", "/v1/engagements/{id}/resources", {"resource_id": "getting-started", "user_id": "u1"}),
]
OPS_ROUTES = [
    ("get", "/v1/engagements", None),
    ("post", "/v1/engagements", {"account_id": "acme"}),
    ("post", "/v1/engagements/{id}/reassign", {"csm_id": None}),
    ("post", "/v1/engagements/{id}/cancel", {}),
    ("get", "/v1/csms", None),
    ("get", "/v1/csms/ann", None),
    ("put", "/v1/csms/ann", {"name": "A", "email": "a@b.c"}),
    ("patch", "/v1/csms/ann", {"capacity": 4}),
    ("get", "/v1/pool", None),
    ("get", "/v1/pool/outcomes", None),
    ("get", "/v1/pool/forecast", None),
]


async def test_a_csm_reaches_only_their_own_engagements_on_every_route(api, keys, session_factory, settings, clock):
    await add_csm(api, keys["ops"], "ann", capacity=1)
    await add_csm(api, keys["ops"], "ben", capacity=1)
    add_account(session_factory)
    eid = open_engagement(session_factory, settings, clock)
    worker(settings, session_factory, clock).poll_once()
    owner = engagement(session_factory, eid).csm_id
    other = "ben" if owner == "ann" else "ann"
    intruder = auth(csm_key(session_factory, clock, other))
    unbound = auth(keys["csm"])  # bound to csm-1, which holds nothing
    documented = {(m, p) for m, p, _ in CSM_ROUTES + OPS_ROUTES}
    paths = (await api.get("/openapi.json")).json()["paths"]
    app_routes = {
        (m, p.replace("{engagement_id}", "{id}").replace("{csm_id}", "ann"))
        for p, ops in paths.items()
        for m in ops
        if p.startswith(("/v1/engagements", "/v1/csms", "/v1/pool"))
    }
    assert app_routes == documented  # a new route must be added to this test
    for method, path, body in CSM_ROUTES + OPS_ROUTES:
        for who in (intruder, unbound):
            kw = {"json": body} if body is not None else {}
            r = await getattr(api, method)(path.format(id=eid), headers=who, **kw)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
    e = engagement(session_factory, eid)
    assert e.status == "assigned" and e.csm_id == owner and len(timeline(session_factory, eid)) == 2
    # The owner can; /v1/me answers only their own.
    mine = auth(csm_key(session_factory, clock, owner))
    assert (await api.get(f"/v1/engagements/{eid}", headers=mine)).status_code == 200
    assert (await api.get("/v1/me/engagements", headers=intruder)).json()["items"] == []
    assert (await api.get("/v1/me/engagements", headers=auth(keys["ops"]))).status_code == 403


async def test_touch_budget_one_for_machines_and_people(api, keys, session_factory, settings, clock, workers, sink):
    """While a CSM holds the account, tech-touch playbooks hold back (in_engagement),
    operational ones do not; the CSM's own touches count against the account cap."""
    settings = settings.model_copy(update={"contact_cap_messages": 0, "account_cap_touches": 2})
    add_account(session_factory)
    save_template(session_factory, settings)
    save_playbook(session_factory, "win-back", simple_playbook())
    save_playbook(
        session_factory,
        "billing",
        {**simple_playbook(), "name": "Card expiring", "operational": True, "trigger": {"rules": ["card-expiring"]}},
    )
    await add_csm(api, keys["ops"], "ann", capacity=3)
    eid = open_engagement(session_factory, settings, clock)
    worker(settings, session_factory, clock).poll_once()
    mine = auth(csm_key(session_factory, clock, "ann"))
    ensure_topics(settings)
    w = SignalWorker(settings, session_factory, clock)
    try:
        send_signals(settings, [signal(signal_id="w1"), signal(rule_id="card-expiring", kind="lifecycle", signal_id="b1")])
        drain(w, lambda: len(messages(session_factory, account_id="acme")) >= 4)
    finally:
        w.close()
    held = messages(session_factory, playbook_id="win-back")
    assert {m.skip_reason for m in held} == {"in_engagement"} and len(held) == 2
    sent = messages(session_factory, playbook_id="billing")
    assert {m.state for m in sent} == {"queued"}
    # The CSM sees what was held back.
    d = (await api.get(f"/v1/engagements/{eid}", headers=mine)).json()
    assert {m["skip_reason"] for m in d["messages_skipped"]} == {"in_engagement"}
    # One automated touch (billing) + one CSM touch = the cap of 2: the next automated touch is refused.
    r = await api.post(f"/v1/engagements/{eid}/touches", json={"kind": "meeting", "summary": "QBR"}, headers=mine)
    assert r.status_code == 201
    from services.outreach.policy import service as policy

    with session_factory() as s:
        assert (
            policy.check_account(
                policy.TouchCounts(s, ["acme"], clock.now()),
                account_id="acme",
                playbook_id="billing",
                playbook_caps=policy.Caps(),
                settings=settings,
                now=clock.now(),
            )
            == "account_cap"
        )
    # The engagement closes: the account returns to tech-touch.
    await api.post(f"/v1/engagements/{eid}/resolve", json={"outcome": "recovered"}, headers=mine)
    from services.outreach.engagements import repository as erepo

    with session_factory() as s:
        assert erepo.has_open(s, "acme") is False


def test_time_box_reminders_expiry_and_automatic_outcome(session_factory, settings, clock, sink, workers):
    add_account(session_factory, "quiet")
    add_account(session_factory, "back")
    for d in range(28):  # both had three active users a day before the signal
        for account in ("quiet", "back"):
            add_activity(session_factory, account, ["ada", "bob", "cy"], (T0 - days(28 - d)).date())
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn

    with transaction(session_factory) as s:
        put(s, "ann", CsmIn(name="Ann Smith", email="ann@pool.test", capacity=5), actor="test", now=clock.now(), settings=settings)
    quiet = open_engagement(session_factory, settings, clock, "quiet", signal=signal("quiet"))
    back = open_engagement(session_factory, settings, clock, "back", signal=signal("back"))
    assert engagement(session_factory, quiet).measured["baseline"]["value"] == 3
    w = worker(settings, session_factory, clock)
    w.poll_once()
    assert engagement(session_factory, quiet).next_reminder_at == T0 + days(23)
    clock.advance(days(23))
    for d in range(14):  # "back" returns with its three users over the last two weeks
        add_activity(session_factory, "back", ["ada", "bob", "cy"], (clock.now() - days(d)).date())
    assert w.poll_once() == 2  # the 7-day reminders
    clock.advance(days(6))
    w.poll_once()  # the 1-day reminders
    assert engagement(session_factory, quiet).reminders_sent == [7.0, 1.0]
    clock.advance(days(1))
    assert w.poll_once() == 2  # both expire at the due time
    q, b = engagement(session_factory, quiet), engagement(session_factory, back)
    assert q.status == b.status == "expired" and q.closed_at == clock.now()
    assert (q.outcome, q.outcome_source) == ("no_response", "automatic") and q.measured["success"] is False
    assert (b.outcome, b.outcome_source) == ("recovered", "automatic") and b.measured["at_close"]["value"] == 3
    ws = workers()
    ws["sender"].poll_once()
    subjects = [m["subject"] for m in sink.messages]
    assert sum(s.startswith("New engagement") for s in subjects) == 2
    assert sum(s.startswith("7 days left") for s in subjects) == 2
    assert sum(s.startswith("1 day left") for s in subjects) == 2
    assert w.poll_once() == 0  # each timer ran once


async def test_the_measurement_counts_only_activity_since_the_signal_and_disagreement_is_reported(
    api, keys, session_factory, settings, clock
):
    """Issue 19, finding 1: resolved as churned an hour after opening, an account whose
    eight users were active in the 28 days before the signal measured "recovered" (the
    28-day window still held the activity before the signal), with an explanation whose
    threshold was 0 while the measurement's was 8."""
    users = [f"u{i}" for i in range(8)]
    for account in ("gone", "claimed"):
        add_account(session_factory, account)
        for d in range(28):
            add_activity(session_factory, account, users, (T0 - days(28 - d)).date())
    await add_csm(api, keys["ops"], "grace", capacity=5)
    gone = open_engagement(session_factory, settings, clock, "gone", signal=signal("gone"))
    claimed = open_engagement(session_factory, settings, clock, "claimed", signal=signal("claimed"))
    assert worker(settings, session_factory, clock).poll_once() == 2
    assert engagement(session_factory, gone).measured["baseline"]["value"] == 8
    clock.advance(timedelta(hours=1))
    ops = auth(keys["ops"])
    r = await api.post(f"/v1/engagements/{gone}/resolve", json={"outcome": "churned"}, headers=ops)
    body = r.json()
    at_close = body["measured"]["at_close"]
    assert body["outcome"] == "churned" and at_close["verdict"] == "no_response" and body["measured"]["success"] is False
    assert at_close["window_days"] == 1 and at_close["value"] == 0 and at_close["baseline"] == 8 and at_close["threshold"] == 8
    assert at_close["explanation"]["threshold"] == at_close["threshold"]  # one threshold, stated once
    assert body["measured"]["csm_agrees"] is True
    # A CSM who marks recovered what the data says did not recover is reported, not merged.
    r = await api.post(f"/v1/engagements/{claimed}/resolve", json={"outcome": "recovered"}, headers=ops)
    assert r.json()["outcome"] == "recovered" and r.json()["measured"]["success"] is False
    assert r.json()["measured"]["csm_agrees"] is False
    report = (await api.get("/v1/pool/outcomes", headers=ops)).json()
    assert report["disagreements"] == [claimed]
    assert report["overall"]["engaged"] == {"n": 2, "recovered": 0, "rate": 0.0}
    outcome_entry = [t for t in timeline(session_factory, claimed) if t.kind == "outcome"]
    assert [(t.details["outcome"], t.details["csm_agrees"], t.details["measured"]["verdict"]) for t in outcome_entry] == [
        ("recovered", False, "no_response")
    ]


def test_engagement_notices_are_listed_with_their_account_and_never_count_as_a_customer_touch(session_factory, settings, clock):
    """Issue 19, finding 6: engagement-assigned messages had account_id "" (so that the
    contact policy would not count them), and so were listed under no account."""
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn
    from services.outreach.policy import repository as policy_repo

    add_account(session_factory)
    with transaction(session_factory) as s:
        put(s, "ann", CsmIn(name="Ann Smith", email="ann@pool.test", capacity=5), actor="test", now=clock.now(), settings=settings)
    open_engagement(session_factory, settings, clock, "acme")
    assert worker(settings, session_factory, clock).poll_once() == 1
    [notice] = messages(session_factory, step_id="engagement.assigned")
    assert (notice.account_id, notice.audience, notice.recipient) == ("acme", "internal", "ann@pool.test")
    with session_factory() as s:
        assert policy_repo.account_touches(s, ["acme"], clock.now() - days(7)) == {}
        assert policy_repo.contact_messages(s, ["acme"], clock.now() - days(7)) == {}


def test_a_playbook_escalates_waits_for_the_outcome_and_branches_on_it(topics, session_factory, clock, workers):
    add_account(session_factory)
    save_playbook(
        session_factory,
        "escalate",
        simple_playbook(
            steps=[
                {
                    "id": "csm",
                    "type": "open_engagement",
                    "goal": "recover_usage",
                    "time_box": "10d",
                    "wait_for_outcome": True,
                    "on_outcome": {"recovered": "convert", "default": "end"},
                }
            ]
        ),
    )
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn

    with transaction(session_factory) as s:
        put(s, "ann", CsmIn(name="Ann", email="ann@pool.test", capacity=5), actor="test", now=clock.now(), settings=topics)
    w = workers()
    send_signals(topics, [signal(signal_id="s1")])
    drain(w["signals"], lambda: len(engagements(session_factory)) == 1)
    [e] = engagements(session_factory)
    assert e.playbook_id == "escalate" and e.signal_ids == ["s1"] and e.reason["signal"]["rule_id"] == "no-login-14d"
    ew = worker(topics, session_factory, clock)
    ew.poll_once()
    clock.advance(days(2))
    w["timers"].poll_once()  # the daily re-check: still waiting
    with transaction(session_factory) as s:
        service.resolve(s, s.get(Engagement, e.id), outcome="recovered", note="", actor="test", now=clock.now(), settings=topics)
    w["timers"].poll_once()  # woken at once by the close
    from services.outreach.models import Enrollment

    with session_factory() as s:
        [enr] = list(s.scalars(select(Enrollment)))
    assert enr.status == "converted" and enr.history[-1]["outcome"] == "recovered"


def test_escalation_holdout_is_deterministic_and_measured(topics, session_factory, clock, workers):
    for i in range(40):
        add_account(session_factory, f"h{i:02d}")
    save_playbook(
        session_factory,
        "escalate",
        simple_playbook(steps=[{"id": "csm", "type": "open_engagement", "goal": "recover_usage", "time_box": "5d", "holdout_percent": 30}]),
    )
    w = workers()
    send_signals(topics, [signal(f"h{i:02d}", signal_id=f"s{i}") for i in range(40)])
    drain(w["signals"], lambda: len(engagements(session_factory)) == 40)
    held = {e.account_id for e in engagements(session_factory, status="held_out")}
    # Salted apart from the message holdout (docs/engagements.md), so the two groups are independent.
    # 30%, not 50%: an inverted percentage (100 - p) would select other accounts and fail.
    assert held == {f"h{i:02d}" for i in range(40) if expected_held_out("escalate\x1fescalation", f"h{i:02d}", 30)}
    assert held != {f"h{i:02d}" for i in range(40) if expected_held_out("escalate", f"h{i:02d}", 30)}
    assert 5 < len(held) < 20
    assert all(e.due_at == T0 + days(5) and e.csm_id is None for e in engagements(session_factory, status="held_out"))
    clock.advance(days(5))
    worker(topics, session_factory, clock).poll_once()
    assert all(e.closed_at == clock.now() and e.outcome == "no_response" for e in engagements(session_factory, status="held_out"))


FINTECH_SEGMENT = {"id": "fintech", "name": "Fintech", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}


async def test_pool_report_outcomes_and_forecast(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", capacity=2)
    await add_csm(api, keys["ops"], "ben", capacity=2, active=False)
    for i in range(3):
        add_account(session_factory, f"p{i}", traits={"industry": "fintech" if i == 0 else "retail"})
        for d in range(28):  # three active users a day before the signal: the baseline
            add_activity(session_factory, f"p{i}", ["ada", "bob", "cy"], (T0 - days(28 - d)).date())
    with transaction(session_factory) as s:  # p0 is fintech when its engagements open
        segments.create(s, segments.parse(FINTECH_SEGMENT, 400), "ops:test", clock.now())
    run_segments(session_factory, settings, clock.now())
    for i in range(3):
        open_engagement(session_factory, settings, clock, f"p{i}", signal=signal(f"p{i}"))
    open_engagement(session_factory, settings, clock, "p0", goal="custom", holdout=True, signal=signal("p0"))
    clock.advance(timedelta(hours=5))
    with transaction(session_factory) as s:  # p1 turns fintech after its engagement opened: not counted in it
        s.execute(update(Account).where(Account.id == "p1").values(traits={"industry": "fintech"}))
    run_segments(session_factory, settings, clock.now())
    worker(settings, session_factory, clock).poll_once()
    r = (await api.get("/v1/pool", headers=ops)).json()
    assert r["capacity"] == 2 and r["open"] == 2 and r["queue_length"] == 1 and r["queue_age_hours"] == 5.0
    assert {c["csm_id"]: (c["open"], c["available"]) for c in r["csms"]} == {"ann": (2, True), "ben": (0, False)}
    assert r["by_status"] == {"assigned": 2, "queued": 1, "held_out": 1}
    engaged = engagements(session_factory, status="assigned")
    stays_away, back = engaged  # two of p0-p2 (equal priority); the third waits for capacity
    add_activity(session_factory, back.account_id, ["ada", "bob", "cy"], clock.now().date())
    for e in engaged:
        r = await api.post(f"/v1/engagements/{e.id}/resolve", json={"outcome": "recovered"}, headers=ops)
        assert r.status_code == 200
    clock.advance(days(31))
    assert worker(settings, session_factory, clock).poll_once() == 2  # p2 assigned, the held-out p0 measured at its end
    rep = (await api.get("/v1/pool/outcomes", headers=ops)).json()
    # By hand: engaged, one back of two (the third, assigned at day 31, is open); held out,
    # p0's escalation holdout, none of one: lift 1/2 - 0/1.
    assert rep["overall"]["engaged"] == {"n": 2, "recovered": 1, "rate": 0.5}
    assert rep["overall"]["held_out"] == {"n": 1, "recovered": 0, "rate": 0.0}
    assert rep["overall"]["lift"] == 0.5
    lo, hi = rep["overall"]["confidence_interval"]
    assert lo < 0 < 0.5 < hi  # one held-out account: no evidence of an effect
    assert rep["disagreements"] == [stays_away.id]  # marked recovered, measured not
    assert [row["key"] for row in rep["by_csm"]] == ["ann"] and rep["by_segment"] == []
    # By named segment, membership when each opened: fintech held p0 only then (p1 entered
    # later), so p0's engaged row if it is one of the two, and p0's held-out row.
    by = (await api.get("/v1/pool/outcomes?segment=fintech", headers=ops)).json()["by_segment"]
    inside = [e for e in engaged if e.account_id == "p0"]
    assert [row["key"] for row in by] == ["fintech"]
    assert by[0]["engaged"]["n"] == len(inside) and by[0]["engaged"]["recovered"] == sum(e.id == back.id for e in inside)
    assert by[0]["held_out"] == {"n": 1, "recovered": 0, "rate": 0.0}
    r = await api.get("/v1/pool/outcomes?segment=nope", headers=ops)
    assert r.status_code == 422 and "no segment 'nope'" in r.json()["detail"]
    # The console's outcomes page shows the API's figures, the segment's too.
    await sign_in(api, keys["ops"])
    assert 'href="/console/pool/outcomes"' in (await api.get("/console/pool")).text
    page = (await api.get("/console/pool/outcomes?segment=fintech")).text
    overall = page.split('id="overall"', 1)[1].split("</tr>", 2)[1]
    assert "1 of 2 (50%)" in overall and "0 of 1 (0%)" in overall and "+50 pts" in overall, overall
    row = page.split('id="by-segment"', 1)[1].split('data-key="fintech"', 1)[1].split("</tr>", 1)[0]
    seg = by[0]
    assert f"{seg['engaged']['recovered']} of {seg['engaged']['n']}" in row and "0 of 1 (0%)" in row, row
    assert 'value="fintech" checked' in page and stays_away.id[:8] in page.split("Disagreements", 1)[1]
    assert (await api.get("/console/pool/outcomes?segment=nope")).status_code == 422
    f = (await api.get("/v1/pool/forecast?hours_per_engagement=8", headers=ops)).json()
    assert f["pool_capacity"] == 2 and f["csms_available"] == 1 and f["hand_opened_per_week"] > 0
    assert f["assumptions"]["proactive_share"] == 0.6 and f["pool_proactive_hours_per_week"] == 24.0
    r = await api.get("/v1/pool/forecast?reactive_share=0.5&overhead_share=0.5", headers=ops)
    assert r.status_code == 422


async def test_forecast_agrees_with_the_pool_and_states_its_inputs(api, keys, session_factory, settings, clock):
    """Issue 19, finding 2: with engagements open, the forecast said 0.0 open at once. It
    took the mean time open from the closed ones only (here: two closed within the hour)
    and divided a day's counts by the 90-day lookback."""
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", capacity=10)
    for i in range(6):
        add_account(session_factory, f"f{i}")
        open_engagement(session_factory, settings, clock, f"f{i}")  # by hand, at T0: due T0 + 30 days
    worker(settings, session_factory, clock).poll_once()
    clock.advance(timedelta(hours=1))
    for e in engagements(session_factory)[:2]:
        r = await api.post(f"/v1/engagements/{e.id}/resolve", json={"outcome": "recovered"}, headers=ops)
        assert r.status_code == 200
    f = (await api.get("/v1/pool/forecast", headers=ops)).json()
    assert f["concurrent_open_expected"] >= 4, f  # four open now; before: 0.0
    # By hand: outreach's history starts at T0, an hour ago: the window is clipped to the
    # shortest, 7 days, so 6 opened = 6 a week. Open: two for 1 hour, four (still open)
    # to their due date, 30 days less the hour already past... counted from opening:
    # (2 x 1/24 + 4 x 30) / 6 days = 20.014 days = 2.859 weeks; 6 x 2.859 = 17.15 at once.
    assert f["window"]["clipped_to_history"] is True and f["window"]["days"] == 7.0 and f["window"]["source"] == "received"
    assert f["hand_opened_per_week"] == 6.0 and f["engagements_per_week"] == 6.0
    assert f["mean_open_from"] == {"closed": 2, "open": 4, "time_box": False}
    assert f["mean_open_weeks"] == round((2 / 24 + 4 * 30) / 6 / 7, 3)
    assert f["concurrent_open_expected"] == round(6 * (2 / 24 + 4 * 30) / 6 / 7, 2) == 17.15
    assert f["open_now"] == 4 == (await api.get("/v1/pool", headers=ops)).json()["open"]
    # Its inputs, stated: the time-box, capacity per CSM as proactive hours (60% of 40).
    assert f["assumptions"]["time_box_days"] == settings.engagement_time_box_days
    assert f["assumptions"]["proactive_hours_per_csm"] == 24.0 and f["assumptions"]["capacity_per_csm"] == 10.0
    # max(ceil(6 x 6 h / 24 h), ceil(17.15 / 10)) = 2
    assert f["csms_needed"] == 2 and f["queue_grows"] is True
    assert f["rules"] == [] and f["by_playbook"] == []


async def test_forecast_replays_rules_not_yet_enabled_and_is_bounded(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    r = await api.get("/v1/pool/forecast?rule_ids=nope", headers=ops)
    assert r.status_code == 404 and "GET /v1/rules" in r.text
    r = await api.get("/v1/pool/forecast?rule_ids=a&rule_ids=b&rule_ids=c&rule_ids=d&rule_ids=e&rule_ids=f", headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "forecast_too_large" and "/v1/rules/backtest" in r.json()["detail"]
    r = await api.get("/v1/pool/forecast?rule_ids=a&lookback_days=120", headers=ops)
    assert r.status_code == 422 and r.json()["error"] == "forecast_too_large" and "lookback_days" in r.json()["detail"]


async def test_forecast_from_a_rule_not_yet_enabled_matches_what_the_engine_then_opens(api, keys, topics, session_factory, clock, workers):
    """Issue 19, deliverable 4, on the simulated clock. 56 accounts each go silent on their
    own day, one a day from 35 days ago to 20 days ahead; the rule "silent for a week"
    (fires once, on the 7th day) is saved *disabled* and an escalating playbook (holdout
    25%) waits for it. The forecast replays the rule over the last 28 days; then the rule
    is enabled and the engine runs 28 days forward (rules tick, relay, signal worker,
    engagement worker), each day's logins ingested as they happen. Tolerance (also in
    docs/engagements.md): escalations, held-out included, equal the replayed firings
    exactly (the same replay, the same days); engagements opened are within 25% of the
    forecast (the holdout is a per-account hash draw: a binomial, sd about 2.3 of 21)."""
    from services.rules.evaluation.service import run_tick
    from services.rules.evaluation.worker import RulesWorker
    from tests.support.helpers import track
    from tests.support.rules import ingest, make_rule, no_login_rule

    ops = auth(keys["ops"])
    last = {f"c{k:02d}": T0 + days(k - 35) - timedelta(hours=1) for k in range(56)}  # each one's last login
    last["gone"] = T0 + days(-40) - timedelta(hours=1)  # silent since before the window (history: 70 days)
    ingest(
        session_factory,
        [
            track(a, "login", T0 + days(j) - timedelta(hours=1), "u1")
            for a, end in last.items()
            for j in range(-70, 0)
            if T0 + days(j) <= end + timedelta(hours=1)
        ],
        clock.now(),
    )
    silent_a_week = {
        "all": [
            {"metric": "days_since", "event": "login", "op": ">=", "value": 7},
            {"metric": "days_since", "event": "login", "op": "<", "value": 8},
        ]
    }
    make_rule(
        session_factory,
        no_login_rule(id="silent-7d", name="Silent for a week", condition=silent_a_week, cooldown="120d"),
        clock.now(),
        enabled=False,
    )
    save_playbook(
        session_factory,
        "escalate",
        {
            "name": "Escalate the silent",
            "trigger": {"rules": ["silent-7d"]},
            "steps": [{"id": "csm", "type": "open_engagement", "goal": "recover_usage", "time_box": "10d", "holdout_percent": 25}],
        },
    )
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn

    with transaction(session_factory) as s:
        put(s, "ann", CsmIn(name="Ann", email="ann@pool.test", capacity=100), actor="test", now=clock.now(), settings=topics)

    r = await api.get("/v1/pool/forecast?rule_ids=silent-7d&lookback_days=28", headers=ops)
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["window"]["source"] == "replayed" and f["window"]["days"] == 28.0
    [rule] = f["rules"]
    assert rule["rule_id"] == "silent-7d" and rule["enabled"] is False and rule["firings"] == 28  # c00..c27
    [pb] = f["by_playbook"]
    assert pb["rules"] == ["silent-7d"] and pb["escalation_rate"] == 1.0 and pb["escalation_rate_observed"] is False
    assert f["engagements_per_week"] == 28 / 4 * 0.75
    assert f["signals_per_week"] == 7.0 and f["escalation_rate"] == 0.75 and f["hand_opened_per_week"] == 0

    # A rule that keeps matching ("silent for a week or more") is replayed from a warm-up
    # before the window, so "gone" is in its cooldown when the window starts, as it would be
    # in a running engine: 28 firings, not 29 (a burst on the window's first day).
    make_rule(
        session_factory, no_login_rule(id="silent-7d-plus", condition=silent_a_week["all"][0], cooldown="120d"), clock.now(), enabled=False
    )
    plus = (await api.get("/v1/pool/forecast?rule_ids=silent-7d-plus&lookback_days=28", headers=ops)).json()
    assert plus["rules"][0]["firings"] == 28 and plus["by_playbook"][0]["rules"] == []  # the playbook waits for silent-7d only
    assert plus["engagements_per_week"] == 0

    with transaction(session_factory) as s:
        from services.rules.models import Rule

        s.get(Rule, "silent-7d").enabled = True
    w = workers()
    rules = RulesWorker(topics, session_factory, clock, tick=False)
    ew = worker(topics, session_factory, clock)
    fired = 0
    try:
        for i in range(28):
            today = T0 + days(i)
            clock.advance(today - clock.now())
            logins = [track(a, "login", today - timedelta(hours=1), "u1") for a, end in last.items() if today - timedelta(hours=1) <= end]
            if logins:
                ingest(session_factory, logins, clock.now())
            fired += len(run_tick(session_factory, topics, clock.now()).signals)
            rules.relay()
            drain(w["signals"], lambda n=fired: len(engagements(session_factory)) == n, timeout=60)
            ew.poll_once()
    finally:
        rules.close()
    opened = engagements(session_factory)
    assert fired == len(opened) == rule["firings"] == 28  # c28..c55: one a day
    assert {e.account_id for e in opened} == {f"c{k:02d}" for k in range(28, 56)}
    engaged = [e for e in opened if e.status != "held_out"]
    expected = f["engagements_per_week"] * 4
    assert abs(len(engaged) - expected) <= 0.25 * expected, (len(engaged), expected)


async def test_engagement_lists_page_with_items_and_next_cursor(api, keys, session_factory, settings, clock):
    """The four lists (roster, every engagement, a CSM's own, a timeline) page through
    everything once, in order, in both orders, with ties in time; a made-up cursor is a 422."""
    ops = auth(keys["ops"])
    for cid in ("ann", "bo", "cy"):
        await add_csm(api, keys["ops"], cid, name=f"{cid.title()} Smith", capacity=2)
    for i in range(7):
        add_account(session_factory, f"acct-{i}")
        open_engagement(session_factory, settings, clock, account_id=f"acct-{i}", signal=signal(signal_id=f"s{i}"))
        if i % 3 == 0:
            clock.advance(timedelta(hours=1))  # some share an opening time, some do not
    worker(settings, session_factory, clock).poll_once()  # six assigned with one due time, one queued (none)
    everything = (await api.get("/v1/engagements?limit=1000", headers=ops)).json()
    assert everything["next_cursor"] is None and len(everything["items"]) == 7
    for order in ("opened", "due"):
        full = (await api.get(f"/v1/engagements?order={order}&limit=1000", headers=ops)).json()["items"]
        assert [e["id"] for e in await walk(api, f"/v1/engagements?order={order}", ops, 2)] == [e["id"] for e in full]
    assert [c["id"] for c in await walk(api, "/v1/csms", ops, 1)] == ["ann", "bo", "cy"]
    ann = auth(csm_key(session_factory, clock, "ann"))
    own = (await api.get("/v1/me/engagements?limit=1000", headers=ann)).json()["items"]
    assert len(own) >= 2 and [e["id"] for e in await walk(api, "/v1/me/engagements", ann, 1)] == [e["id"] for e in own]
    eid = own[0]["id"]
    for n in range(3):
        assert (await api.post(f"/v1/engagements/{eid}/notes", json={"text": f"note {n}"}, headers=ann)).status_code == 201
    timeline_all = (await api.get(f"/v1/engagements/{eid}/events?limit=1000", headers=ann)).json()["items"]
    assert [x["id"] for x in await walk(api, f"/v1/engagements/{eid}/events", ann, 2)] == [x["id"] for x in timeline_all]
    for path, who in (
        ("/v1/engagements?cursor=bm9wZQ", ops),
        ("/v1/me/engagements?cursor=%5B1%5D", ann),
        ("/v1/engagements?cursor=WzEsMl0", ops),
        (f"/v1/engagements/{eid}/events?cursor=abc", ann),
        # Issue 18: past the event id column (SQLite: OverflowError; PostgreSQL: integer out of range): was a 500.
        (f"/v1/engagements/{eid}/events?cursor=44496976212199556438", ann),
        (f"/v1/engagements/{eid}/events?cursor=2147483648", ann),
        # A time with no UTC value, an integer no column holds.
        (f"/v1/engagements?cursor={encode_cursor('9999-12-31T23:59:59-14:00', 'x')}", ops),
        (f"/v1/me/engagements?cursor={encode_cursor(10**20, 'x')}", ann),
        # make fuzz, FUZZ_SEED=24: a null where a cursor's value is never null (the opening
        # time, the id) reached the query as `< None` (a 500); only a due time may be null.
        (f"/v1/engagements?cursor={encode_cursor(None, 'x')}", ops),
        (f"/v1/engagements?order=due&cursor={encode_cursor(None, None)}", ops),
        (f"/v1/me/engagements?cursor={encode_cursor('2026-03-02T12:00:00+00:00', None)}", ann),
    ):
        r = await api.get(path, headers=who)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (path, r.text)
    # A due order resumes among the unscheduled (a null due time) as its cursor says.
    r = await api.get(f"/v1/engagements?order=due&cursor={encode_cursor(None, '')}", headers=ops)
    assert r.status_code == 200 and [e["id"] for e in r.json()["items"]] == [e["id"] for e in full if e["due_at"] is None], r.text


async def test_every_pool_and_report_figure_is_the_count_of_its_list(api, keys, session_factory, settings, clock):
    """A known world on the simulated clock: engagements queued, assigned, active,
    resolved (recovered, and churned while the data says so too; recovered while it does
    not), cancelled, held out, then expired and measured a time-box later. At each
    point every figure of the pool, its outcome report and its forecast is the count of
    its list."""
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", capacity=3)
    await add_csm(api, keys["ops"], "ben", capacity=2)
    await add_csm(api, keys["ops"], "cy", capacity=4, active=False)
    ids = [f"k{i}" for i in range(11)]
    for account_id in ids:
        add_account(session_factory, account_id)
        for d in range(28):  # the baseline: three active users a day before the signal
            add_activity(session_factory, account_id, ["ada", "bob", "cy"], (T0 - days(28 - d)).date())
    for account_id in ids[:7]:
        open_engagement(session_factory, settings, clock, account_id, signal=signal(account_id))
    open_engagement(session_factory, settings, clock, "k0", goal="custom", holdout=True, signal=signal("k0"))
    clock.advance(timedelta(hours=1))
    worker(settings, session_factory, clock).poll_once()  # five assigned (ann 3, ben 2), two queued
    assigned = engagements(session_factory, status="assigned")
    queued = engagements(session_factory, status="queued")
    assert len(assigned) == 5 and len(queued) == 2
    add_activity(session_factory, assigned[1].account_id, ["ada", "bob", "cy"], clock.now().date())  # it comes back
    for e, action, body in [
        (assigned[0], "accept", None),
        (assigned[1], "resolve", {"outcome": "recovered"}),
        (assigned[2], "resolve", {"outcome": "churned"}),
        (assigned[3], "resolve", {"outcome": "recovered"}),  # the data says otherwise: a disagreement
        (queued[0], "cancel", {"reason": "duplicate"}),
    ]:
        r = await api.post(f"/v1/engagements/{e.id}/{action}", json=body, headers=ops)
        assert r.status_code == 200, r.text
    for account_id in ids[7:]:
        open_engagement(session_factory, settings, clock, account_id, signal=signal(account_id))
    clock.advance(timedelta(hours=1))
    worker(settings, session_factory, clock).poll_once()  # capacity for three of the five queued
    counted = await pool_figures_are_counts_of_lists(api, ops)
    assert {s for s, n in counted.items() if n} == {"queued", "assigned", "active", "resolved", "cancelled", "held_out"}, counted

    clock.advance(days(31))  # the time-box ends: the assigned expire, the held-out row is measured, the queue moves
    worker(settings, session_factory, clock).poll_once()
    counted = await pool_figures_are_counts_of_lists(api, ops)
    assert counted.get("expired") and len((await api.get("/v1/pool/outcomes", headers=ops)).json()["disagreements"]) == 1, counted


def test_an_engagement_records_the_accounts_health_when_it_opens(session_factory, settings, clock):
    add_account(session_factory)
    add_account(session_factory, "globex")
    model = {
        "name": "Recency",
        "components": [
            {
                "id": "recency",
                "measure": {"metric": "days_since", "event": "login"},
                "weight": 1,
                "bands": [{"below": 3, "points": 100}, {"points": 0}],
            }
        ],
    }
    with transaction(session_factory) as s:
        rules.save_health_model(s, rules.parse_health_model(model, 400), "ops:test", clock.now())
        rules.score_account_health(s, "acme", clock.now())  # never logged in: 0 points
    opened = open_engagement(session_factory, settings, clock, signal=signal(signal_id="s1"))
    assert engagement(session_factory, opened).reason["health"] == {
        "day": clock.now().date().isoformat(),
        "score": 0.0,
        "label": "at_risk",
        "change": {"7d": None, "30d": None},
    }
    unscored = open_engagement(session_factory, settings, clock, account_id="globex", signal=signal(signal_id="s2", account_id="globex"))
    assert engagement(session_factory, unscored).reason["health"] is None
    # Health weighs in the priority: a score of 0 adds 20 points; an account without a score gets none.
    scored, other = engagement(session_factory, opened), engagement(session_factory, unscored)
    assert scored.priority_detail["health"] == 0.0 and scored.priority_detail["health_points"] == 20
    assert other.priority_detail["health"] is None and other.priority_detail["health_points"] == 0
    assert scored.priority == other.priority + 20  # the same signal, ARR and renewal otherwise


RETAIL_SEGMENT = {"id": "retail", "name": "Retail", "condition": {"field": "account.traits.industry", "op": "==", "value": "retail"}}
EVERYONE_SEGMENT = {"id": "everyone", "name": "Everyone", "condition": {"field": "account.traits.industry", "op": "!=", "value": "none"}}


async def test_forecast_by_segment_is_the_forecast_over_each_segments_rows(api, keys, session_factory, settings, clock):
    """Hand-computed: a week of history (T0+1h to now) so counts are per week as they are.
    Signals (no-login-14d unless said): f0 x2, f1, r0, and r0 from another rule. Engagements:
    the escalating playbook's on f0 (14-day time-box) and r0 (21 days); by hand on f1
    (14 days) and, after r0 turned fintech, on r0 again (custom, 14 days); each assigned as it
    opens, so its time-box runs from its opening."""
    ops = auth(keys["ops"])
    await add_csm(api, keys["ops"], "ann", capacity=10)
    save_playbook(
        session_factory,
        "escalate",
        simple_playbook(steps=[{"id": "csm", "type": "open_engagement", "goal": "recover_usage", "holdout_percent": 0}]),
    )
    for a, industry in (("f0", "fintech"), ("f1", "fintech"), ("r0", "retail"), ("r1", "retail")):
        add_account(session_factory, a, traits={"industry": industry})
    with transaction(session_factory) as s:
        for d in (FINTECH_SEGMENT, RETAIL_SEGMENT, EVERYONE_SEGMENT):
            segments.create(s, segments.parse(d, 400), "ops:test", clock.now())
    run_segments(session_factory, settings, clock.now())
    start = clock.now() + timedelta(hours=1)
    with transaction(session_factory) as s:
        for i, (a, rule_id) in enumerate(
            [("f0", "no-login-14d"), ("f0", "no-login-14d"), ("f1", "no-login-14d"), ("r0", "no-login-14d"), ("r0", "seats-down")]
        ):
            s.add(SignalReceipt(signal_id=f"s{i}", account_id=a, rule_id=rule_id, kind="churn_risk", received_at=start))
    clock.advance(timedelta(hours=2))
    open_engagement(session_factory, settings, clock, "f0", playbook_id="escalate", time_box_days=14)
    open_engagement(session_factory, settings, clock, "r0", playbook_id="escalate", time_box_days=21)
    open_engagement(session_factory, settings, clock, "f1", time_box_days=14)
    assert worker(settings, session_factory, clock).poll_once() == 3  # assigned now: due a time-box from opening
    clock.advance(timedelta(hours=1))
    with transaction(session_factory) as s:  # r0 turns fintech: its earlier rows stay retail's
        s.execute(update(Account).where(Account.id == "r0").values(traits={"industry": "fintech"}))
    run_segments(session_factory, settings, clock.now())
    clock.advance(timedelta(hours=1))
    open_engagement(session_factory, settings, clock, "r0", goal="custom", time_box_days=14)
    assert worker(settings, session_factory, clock).poll_once() == 1
    clock.advance(start + days(7) - clock.now())

    f = (await api.get("/v1/pool/forecast?lookback_days=28&segment=fintech&segment=retail&segment=everyone", headers=ops)).json()
    assert f["window"]["days"] == 7.0
    # Whole pool: 5 signals, escalate 2 of its 4 = 0.5 x 4 = 2 a week, plus 2 by hand = 4;
    # weeks open (14 + 21 + 14 + 14) / 4 days = 2.25 weeks; open at once 9; hours 4 x 6.
    whole = {k: f[k] for k in ("signals_per_week", "escalation_rate", "engagements_per_week", "hand_opened_per_week", "mean_open_weeks")}
    assert whole == {
        "signals_per_week": 5.0,
        "escalation_rate": 0.4,
        "engagements_per_week": 4.0,
        "hand_opened_per_week": 2.0,
        "mean_open_weeks": 2.25,
    }
    assert f["concurrent_open_expected"] == 9.0 and f["hours_needed_per_week"] == 24.0
    fintech, retail, everyone = f["by_segment"]
    # Fintech (f0, f1; r0 from its turn): 3 signals, escalate 1 of 3 -> 3 x 1/3 = 1, by hand
    # f1 and r0's custom = 2: 3 a week, (3 - 2) / 3 escalated; 14 days open each: 2 weeks, 6 at once.
    assert fintech["segment_id"] == "fintech" and fintech["signals_received"] == 3 and fintech["engagements_opened"] == 3
    assert (fintech["signals_per_week"], fintech["escalation_rate"], fintech["engagements_per_week"], fintech["hand_opened_per_week"]) == (
        3.0,
        0.3333,
        3.0,
        2.0,
    )
    assert (fintech["mean_open_weeks"], fintech["concurrent_open_expected"], fintech["hours_needed_per_week"]) == (2.0, 6.0, 18.0)
    assert fintech["mean_open_from"] == {"closed": 0, "open": 3, "time_box": False}
    assert [(b["playbook_id"], b["signals_received"], b["escalated"], b["escalation_rate"]) for b in fintech["by_playbook"]] == [
        ("escalate", 3, 1, 0.3333)
    ]
    # Retail (r0 before its turn, r1): 2 signals (one of another rule), escalate 1 of 1 = 1 a
    # week, none by hand: half of the signals escalated; 21 days: 3 weeks, 3 at once.
    assert (retail["signals_per_week"], retail["escalation_rate"], retail["engagements_per_week"], retail["hand_opened_per_week"]) == (
        2.0,
        0.5,
        1.0,
        0.0,
    )
    assert (retail["mean_open_weeks"], retail["concurrent_open_expected"], retail["hours_needed_per_week"]) == (3.0, 3.0, 6.0)
    assert [r["rule_id"] for r in retail["rules"]] == ["no-login-14d", "seats-down"]
    # A segment of every account is the whole pool: the same function, all the rows.
    assert {k: everyone[k] for k in fintech if k not in ("segment_id", "signals_received", "engagements_opened")} == {
        k: f[k] for k in fintech if k not in ("segment_id", "signals_received", "engagements_opened")
    }
    assert "csms_needed" not in fintech and "pool_capacity" not in fintech  # pooled: no per-segment capacity
    assert (await api.get("/v1/pool/forecast?lookback_days=28", headers=ops)).json()["by_segment"] == []

    r = await api.get("/v1/pool/forecast?segment=fintech&segment=nope", headers=ops)
    assert r.status_code == 422 and r.json()["detail"] == "no segment 'nope'; list them with GET /v1/segments", r.json()
    r = await api.get("/v1/pool/forecast?segment=fintech&rule_ids=no-login-14d", headers=ops)
    assert r.status_code == 422 and "not split by segment" in r.json()["detail"]
    r = await api.get("/v1/pool/forecast?" + "&".join(f"segment=s{i}" for i in range(21)), headers=ops)
    assert r.status_code == 422

    # The console's pool page: the picker, and the same figures by segment beside the whole pool's.
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/pool?segment=fintech&segment=retail")).text
    table = page.split('id="forecast-segments"', 1)[1].split("</table>", 1)[0]
    assert "<caption>" in table and '<th scope="col">segment</th>' in table
    rows = {k: v.split("</tr>", 1)[0] for k, v in (part.split('"', 1) for part in table.split('data-key="')[1:])}
    assert list(rows) == ["all", "fintech", "retail"]
    cells = {k: [c.split("</td>", 1)[0] for c in v.split('<td class="n">')[1:]] for k, v in rows.items()}
    assert cells["all"] == ["5.0", "40%", "4.0", "2.0", "2.2", "9.0", "24.0"], cells
    assert cells["fintech"] == ["3.0", "33%", "3.0", "2.0", "2.0", "6.0", "18.0"], cells
    assert cells["retail"] == ["2.0", "50%", "1.0", "0.0", "3.0", "3.0", "6.0"], cells
    assert '<a href="/console/segments/fintech">fintech</a>' in rows["fintech"]
    assert 'value="fintech" checked' in page and 'value="everyone" checked' not in page
    assert 'href="/console/pool/outcomes?segment=fintech&amp;segment=retail"' in page  # the same segments' outcomes
    outcomes = (await api.get("/console/pool/outcomes?segment=fintech&segment=retail")).text
    assert 'href="/console/pool?segment=fintech&amp;segment=retail" id="forecast-link"' in outcomes  # and back
    assert 'id="forecast-segments"' not in (await api.get("/console/pool")).text
    assert (await api.get("/console/pool?segment=nope")).status_code == 422
