"""Named segments on both databases with the simulated clock (docs/segments.md): the
API (validated with the path, versioned, audited), membership of a constructed world
against sets computed by hand, entering and leaving as signals, the size per day, and
the event batch's refresh of its own accounts only."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import event, select

from services.ingest.events.worker import IngestWorker
from services.rules.backtest.service import run_backtest
from services.rules.evaluation.engine import Measurements
from services.rules.evaluation.segments import SegmentIndex, apply, matching, refresh_accounts, run_segments
from services.rules.evaluation.service import run_tick
from services.rules.evaluation.worker import RulesWorker
from services.rules.language import parse_rule
from services.rules.models import SegmentMember, SegmentSize, SignalRecord
from services.rules.segments import service as segments
from services.rules.segments.service import load_live
from services.rules.signals import repository as signal_repo
from shared.db import transaction
from shared.outbox import pending_count
from shared.signals import Signal
from tests.support.console import sign_in
from tests.support.helpers import auth, drain, publish, read_topic, walk
from tests.support.rules import group, ingest, track

FINTECH = {
    "id": "fintech",
    "name": "Fintech customers",
    "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"},
}
ACTIVE_SMB = {
    "id": "active-smb",
    "name": "SMB logging in",
    "audience": {"segment": ["smb"]},
    "condition": {"all": [{"metric": "count", "event": "login", "window": "7d", "op": ">=", "value": 3}]},
}


def world(session_factory, now) -> None:
    """Five accounts, by hand:

    ========  ========  ==========  ===================
    account   segment   industry    logins, last 7 days
    ========  ========  ==========  ===================
    a1        smb       fintech     5
    a2        smb       retail      2
    a3        smb       fintech     0
    a4        mid       fintech     4
    a5        smb       (none)      3
    ========  ========  ==========  ===================

    fintech = {a1, a3, a4}; active-smb = {a1, a5} (a2 has too few logins, a4 is mid)."""
    traits = {"a1": ("smb", "fintech"), "a2": ("smb", "retail"), "a3": ("smb", "fintech"), "a4": ("mid", "fintech"), "a5": ("smb", None)}
    events = []
    for a, (seg, industry) in traits.items():
        events.append(group(a, now - timedelta(days=30), segment=seg, **({"industry": industry} if industry else {})))
    for a, n in {"a1": 5, "a2": 2, "a4": 4, "a5": 3}.items():
        events += [track(a, "login", now - timedelta(days=d + 1), "u1", f"{a}-login-{d}") for d in range(n)]
    ingest(session_factory, events, now)


def save(session_factory, obj, now) -> None:
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(obj, 400), "ops:test", now)


def members(session_factory) -> dict[str, set[str]]:
    with transaction(session_factory) as s:
        out: dict[str, set[str]] = {}
        for m in s.scalars(select(SegmentMember)):
            out.setdefault(m.segment_id, set()).add(m.account_id)
        return out


def segment_signals(session_factory) -> set[tuple[str, str, str]]:
    with transaction(session_factory) as s:
        return {(r.rule_id, r.kind, r.account_id) for r in s.scalars(select(SignalRecord).where(SignalRecord.rule_id.like("segment:%")))}


async def test_definitions_are_validated_with_the_path_versioned_and_audited(api, keys):
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    bad = {**FINTECH, "condition": {"field": "account.traits.industry", "op": "like", "value": "fin"}}
    for method, path in (("POST", "/v1/segments/validate"), ("POST", "/v1/segments"), ("PUT", "/v1/segments/fintech")):
        r = await api.request(method, path, json=bad, headers=ops)
        assert r.status_code == 422, r.text
        [problem] = r.json()["detail"]
        assert problem["pointer"] == "/condition/op" and "in, not_in, exists" in problem["message"]
    r = await api.post("/v1/segments", json={**ACTIVE_SMB, "audience": {"plan": ["pro"], "tier": ["x"]}}, headers=ops)
    assert r.status_code == 422 and [p["pointer"] for p in r.json()["detail"]] == ["/audience/tier"]
    assert "segment, plan, lifecycle_stage" in r.json()["detail"][0]["message"]
    r = await api.post("/v1/segments", json={**FINTECH, "condition": {"field": "user.role", "op": "==", "value": "admin"}}, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/condition/field"

    assert (await api.post("/v1/segments", json=FINTECH, headers=csm)).status_code == 403
    r = await api.post("/v1/segments", json=FINTECH, headers=ops)
    assert r.status_code == 201 and r.json()["current_version"] == 1 and r.json()["size"] == 0
    assert (await api.post("/v1/segments", json=FINTECH, headers=ops)).status_code == 409
    r = await api.put("/v1/segments/fintech", json=FINTECH, headers=ops)
    assert r.json()["current_version"] == 1 and r.json()["changed"] is False
    wider = {**FINTECH, "condition": {"field": "account.traits.industry", "op": "in", "value": ["fintech", "banking"]}}
    r = await api.put("/v1/segments/fintech", json=wider, headers=ops)
    assert r.json()["current_version"] == 2 and r.json()["changed"] is True
    assert r.json()["definition"]["condition"]["value"] == ["fintech", "banking"]
    r = await api.get("/v1/segments/fintech/versions?limit=1", headers=csm)
    assert [v["version"] for v in r.json()["items"]] == [1] and r.json()["next_cursor"] == "1"
    assert (await api.get("/v1/segments/fintech/versions/1", headers=ops)).json()["definition"]["condition"]["op"] == "=="
    assert (await api.get("/v1/segments/fintech/versions/3", headers=ops)).status_code == 404
    r = await api.get("/v1/segments/fintech/audit", headers=ops)
    assert [(a["action"], a["version"], a["details"]) for a in r.json()["items"]] == [
        ("create", 1, {}),
        ("update", 2, {"changed_fields": ["condition"]}),
    ]
    assert (await api.get("/v1/segments/nope/members", headers=ops)).status_code == 404
    r = await api.delete("/v1/segments/fintech", headers=ops)
    assert r.status_code == 200 and r.json()["deleted_at"] is not None
    assert (await api.get("/v1/segments", headers=ops)).json()["items"] == []
    assert [s["id"] for s in (await api.get("/v1/segments?include_deleted=true", headers=ops)).json()["items"]] == ["fintech"]


async def test_membership_matches_the_world_computed_by_hand_and_changes_are_signals(api, keys, session_factory, settings, clock):
    ops = auth(keys["ops"])
    now = clock.now()
    world(session_factory, now)
    save(session_factory, FINTECH, now)
    save(session_factory, ACTIVE_SMB, now)

    report = run_segments(session_factory, settings, now)
    assert members(session_factory) == {"fintech": {"a1", "a3", "a4"}, "active-smb": {"a1", "a5"}}
    assert report.entered == 5 and report.left == 0 and report.sizes == {"fintech": 3, "active-smb": 2}
    assert segment_signals(session_factory) == {("segment:fintech", "segment_entered", a) for a in ("a1", "a3", "a4")} | {
        ("segment:active-smb", "segment_entered", a) for a in ("a1", "a5")
    }
    with transaction(session_factory) as s:
        a1 = s.scalar(select(SignalRecord).where(SignalRecord.rule_id == "segment:active-smb", SignalRecord.account_id == "a1"))
        assert a1.evidence["segment"] == {"id": "active-smb", "version": 1, "change": "entered"}
        assert a1.evidence["count(login, 7d)"]["value"] == 5.0  # why it entered: the condition's values

    # The same world again: nothing changes, nothing fires.
    again = run_segments(session_factory, settings, now + timedelta(minutes=1))
    assert again.entered == again.left == 0 and not again.signals

    # Three days later the 7-day window is the UTC days T0-3 .. T0+3: a1 and a5 keep
    # their logins of T0-1 .. T0-3 (3 each: both stay), a2 logs in twice more (4: it
    # enters), and a3 becomes retail (it leaves fintech).
    later = now + timedelta(days=3)
    clock.advance(timedelta(days=3))
    ingest(
        session_factory,
        [track("a2", "login", later - timedelta(hours=h), "u1", f"a2-new-{h}") for h in (1, 2)]
        + [group("a3", later - timedelta(hours=1), industry="retail")],
        later,
    )
    report = run_segments(session_factory, settings, later)
    assert members(session_factory) == {"fintech": {"a1", "a4"}, "active-smb": {"a1", "a2", "a5"}}
    assert {(s.rule_id, s.kind, s.account_id) for s in report.signals} == {
        ("segment:fintech", "segment_left", "a3"),
        ("segment:active-smb", "segment_entered", "a2"),
    }

    # Size per day: one row per UTC day the tick measured, the day's last measurement.
    with transaction(session_factory) as s:
        rows = {(r.segment_id, r.day): r.size for r in s.scalars(select(SegmentSize))}
    assert rows == {
        ("fintech", now.date()): 3,
        ("active-smb", now.date()): 2,
        ("fintech", later.date()): 2,
        ("active-smb", later.date()): 3,
    }
    r = await api.get("/v1/segments/active-smb/sizes?days=7", headers=ops)
    assert [(p["day"], p["size"]) for p in r.json()["items"]] == [(now.date().isoformat(), 2), (later.date().isoformat(), 3)]
    listed = await walk(api, "/v1/segments/active-smb/members", ops, limit=2)
    assert [m["account_id"] for m in listed] == ["a1", "a2", "a5"]
    r = await api.get("/v1/segments", headers=ops)
    assert {s["id"]: s["size"] for s in r.json()["items"]} == {"active-smb": 3, "fintech": 2}


async def test_entering_a_segment_is_no_rule_signal_for_the_accounts_filter(api, keys, session_factory, settings, clock):
    """The console's "rule signal in 30 days" lists the accounts a rule fired on, not those
    that only entered a segment (planted: with every signal in the rollup, a1, a3 and a4
    were listed too, as all 103 accounts were after the demo with the starter segments)."""
    now = clock.now()
    world(session_factory, now)
    save(session_factory, FINTECH, now)
    assert run_segments(session_factory, settings, now).entered == 3  # a1, a3, a4: segment_entered signals
    rule_signal = {
        "signal_id": "churn-a2",
        "rule_id": "no-login-14d",
        "rule_version": 1,
        "rule_name": "No login in 14 days",
        "account_id": "a2",
        "user_id": None,
        "kind": "churn_risk",
        "severity": "high",
        "fired_at": now - timedelta(days=2),
        "evidence": {},
        "trigger": "schedule",
        "event_id": None,
        "decision_due_at": None,
        "republished": 0,
    }
    with transaction(session_factory) as s:
        assert signal_repo.insert_signals(s, [rule_signal]) == {"churn-a2"}
    await sign_in(api, keys["ops"])
    page = (await api.get("/console/accounts?signalled=1")).text
    assert set(re.findall(r'href="/console/accounts/(a\d)"', page)) == {"a2"}
    assert ">1 account<" in page and "rule signal in 30 days" in page
    everyone = (await api.get("/console/accounts")).text
    assert set(re.findall(r'href="/console/accounts/(a\d)"', everyone)) == {"a1", "a2", "a3", "a4", "a5"}


def test_an_event_batch_refreshes_its_own_accounts_only(session_factory, settings, clock, engine):
    now = clock.now()
    world(session_factory, now)
    save(session_factory, FINTECH, now)
    run_segments(session_factory, settings, now)
    assert members(session_factory) == {"fintech": {"a1", "a3", "a4"}}
    # a3 turns retail and a2 fintech; a batch holding only a3's event refreshes only a3.
    ingest(session_factory, [group("a3", now, industry="retail"), group("a2", now, industry="fintech")], now)
    index = SegmentIndex()
    with transaction(session_factory) as s:
        report = refresh_accounts(s, index, ["a3"], now, settings)
    assert members(session_factory) == {"fintech": {"a1", "a4"}}
    assert [(x.kind, x.account_id) for x in report.signals] == [("segment_left", "a3")]
    with transaction(session_factory) as s:
        report = refresh_accounts(s, index, ["a2", "a5"], now, settings)
    assert members(session_factory) == {"fintech": {"a1", "a2", "a4"}}
    assert [(x.kind, x.account_id) for x in report.signals] == [("segment_entered", "a2")]

    # A batch with no change writes nothing and fires nothing.
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with transaction(session_factory) as s:
        assert not refresh_accounts(s, index, ["a1", "a3"], now, settings).signals
    assert not any(q.lstrip().upper().startswith(("INSERT", "DELETE")) for q in statements)

    # A new version is picked up by the next batch (the index's fingerprint changed).
    mid = segments.parse({**FINTECH, "condition": {"field": "account.segment", "op": "==", "value": "mid"}}, 400)
    with transaction(session_factory) as s:
        segments.update(s, "fintech", mid, "ops:t", now)
    with transaction(session_factory) as s:
        report = refresh_accounts(s, index, ["a1", "a4"], now, settings)
    assert members(session_factory) == {"fintech": {"a2", "a4"}}
    assert {(x.kind, x.account_id, x.rule_version) for x in report.signals} == {("segment_left", "a1", 2)}


def test_the_rules_worker_keeps_membership_on_events_and_on_its_tick(topics, session_factory, clock):
    """On the real broker: events through ingest put an account in its segments as the
    rules worker handles their batch (its signals reach cs.signals through the outbox);
    two days later, with no event, the worker's tick takes it out of the one its logins
    no longer hold, and measures the day's sizes."""
    now = clock.now()
    save(session_factory, FINTECH, now)
    save(
        session_factory,
        {"id": "busy", "name": "Busy today", "condition": {"metric": "count", "event": "login", "window": "1d", "op": ">=", "value": 2}},
        now,
    )
    rules = RulesWorker(topics, session_factory, clock, tick=False)  # events only, first
    ingest_worker = IngestWorker(topics, session_factory, clock)
    try:
        publish(
            topics,
            [
                group("acme", now - timedelta(minutes=9), industry="fintech"),
                track("acme", "login", now - timedelta(minutes=5), "ada", "e1"),
                track("acme", "login", now - timedelta(minutes=4), "bob", "e2"),
                group("globex", now - timedelta(minutes=9), industry="retail"),
                track("globex", "login", now - timedelta(minutes=3), "cy", "e3"),
            ],
        )
        drain(
            [ingest_worker, rules],
            lambda: members(session_factory) == {"fintech": {"acme"}, "busy": {"acme"}} and pending(session_factory) == 0,
        )
        published = [Signal.model_validate_json(r.value) for r in read_topic(topics, topics.topic_signals, 2)]
        assert sorted((s.rule_id, s.kind, s.account_id) for s in published) == [
            ("segment:busy", "segment_entered", "acme"),
            ("segment:fintech", "segment_entered", "acme"),
        ]

        clock.advance(timedelta(days=2))
        # The worker's polls tick once ingest has reported its progress at the new time
        # (the freshness watermark), with no event arriving.
        rules.tick_enabled = True
        drain([ingest_worker, rules], lambda: members(session_factory) == {"fintech": {"acme"}})
        assert [(s.kind, s.account_id) for s in rules.last_segments.signals] == [("segment_left", "acme")]
        assert rules.last_segments.sizes == {"fintech": 1, "busy": 0}
    finally:
        rules.close()
        ingest_worker.close()


def pending(session_factory) -> int:
    with session_factory() as s:
        return pending_count(s)


def test_a_segment_deleted_while_the_tick_measures_gets_no_members(session_factory, settings, clock):
    """The tick measures in one transaction and writes in another: a segment deleted in
    between must not get members back (nothing would ever remove them)."""
    now = clock.now()
    world(session_factory, now)
    save(session_factory, FINTECH, now)
    save(session_factory, ACTIVE_SMB, now)
    with transaction(session_factory) as s:
        loaded = load_live(s)
        meas = Measurements(s, now, None)
        wanted = matching(loaded, meas)
    with transaction(session_factory) as s:
        segments.delete(s, "fintech", "ops:test", now)
    with transaction(session_factory) as s:
        meas.session = s
        report = apply(s, loaded, wanted, None, meas, now, settings, "schedule")
    assert members(session_factory) == {"active-smb": {"a1", "a5"}}
    assert {x.rule_id for x in report.signals} == {"segment:active-smb"}


async def test_rules_and_the_dry_run_test_segment_membership(api, keys, session_factory, settings, clock):
    """account.segments in the rule language: a scheduled rule over fintech members fires
    for exactly them; not_in for the others; the dry run explains it with the account's
    segments; a segment cannot be defined by segments; only in and not_in are allowed."""
    ops = auth(keys["ops"])
    now = clock.now()
    world(session_factory, now)
    save(session_factory, FINTECH, now)
    save(session_factory, ACTIVE_SMB, now)
    run_segments(session_factory, settings, now)

    for rule_id, op in (("fintech-quiet", "in"), ("not-fintech", "not_in")):
        body = {
            "id": rule_id,
            "name": rule_id,
            "kind": "lifecycle",
            "trigger": {"schedule": {"every": "1h"}},
            "condition": {"field": "account.segments", "op": op, "value": ["fintech"]},
            "enabled": True,
        }
        assert (await api.post("/v1/rules", json=body, headers=ops)).status_code == 201
    run_tick(session_factory, settings, now)
    with transaction(session_factory) as s:
        fired = {(r.rule_id, r.account_id) for r in s.scalars(select(SignalRecord).where(~SignalRecord.rule_id.like("segment:%")))}
    assert fired == {("fintech-quiet", a) for a in ("a1", "a3", "a4")} | {("not-fintech", a) for a in ("a2", "a5")}
    # A backtest reads today's memberships too, a chunk of accounts (a range of ids) at a time.
    with session_factory() as s:
        for rule_id, op in (("fintech-quiet", "in"), ("not-fintech", "not_in")):
            d = parse_rule(
                {
                    **{k: v for k, v in body.items() if k != "enabled"},
                    "id": rule_id,
                    "condition": {"field": "account.segments", "op": op, "value": ["fintech"]},
                }
            )
            replayed = run_backtest(s, d, now.date(), now.date(), chunk_accounts=2)
            assert {(rule_id, a) for _, a, _ in replayed.firings} == {f for f in fired if f[0] == rule_id}

    r = await api.post("/v1/rules/fintech-quiet/test?account_id=a1", headers=ops)
    assert r.status_code == 200 and r.json()["condition"]["result"] is True  # (it would fire but for its cooldown)
    assert r.json()["condition"]["value"] == ["active-smb", "fintech"]  # a1 is in both
    r = await api.post("/v1/rules/fintech-quiet/test?account_id=a2", headers=ops)
    assert r.json()["condition"]["result"] is False and r.json()["condition"]["value"] is None

    bad = {**ACTIVE_SMB, "id": "x", "condition": {"field": "account.segments", "op": "in", "value": ["fintech"]}}
    r = await api.post("/v1/segments", json=bad, headers=ops)
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/condition/field"
    r = await api.post(
        "/v1/rules/validate", json={**body, "condition": {"field": "account.segments", "op": "==", "value": "fintech"}}, headers=ops
    )
    assert r.status_code == 422 and r.json()["detail"][0]["pointer"] == "/condition/op" and "in" in r.json()["detail"][0]["message"]


async def test_the_api_previews_a_definitions_size_as_the_tick_then_fills_it(api, keys, session_factory, settings, clock):
    """POST /v1/segments/preview: the world's sizes computed by hand, before any segment
    exists; nothing is saved; a bad definition is the create's 422 with its path; CSMs
    may not author."""
    ops = auth(keys["ops"])
    world(session_factory, clock.now())
    for definition, size in ((FINTECH, 3), (ACTIVE_SMB, 2), ({**FINTECH, "audience": {"segment": ["mid"]}}, 1)):
        r = await api.post("/v1/segments/preview", json=definition, headers=ops)
        assert r.status_code == 200, r.text
        assert r.json()["size"] == size and r.json()["segment"]["id"] == definition["id"], (definition, r.json())
    assert (await api.get("/v1/segments", headers=ops)).json()["items"] == [] and members(session_factory) == {}
    bad = await api.post("/v1/segments/preview", json={**FINTECH, "condition": {**FINTECH["condition"], "op": "like"}}, headers=ops)
    assert bad.status_code == 422 and [d["pointer"] for d in bad.json()["detail"]] == ["/condition/op"], bad.json()
    assert (await api.post("/v1/segments/preview", json=FINTECH, headers=auth(keys["csm"]))).status_code == 403
    save(session_factory, ACTIVE_SMB, clock.now())
    assert run_segments(session_factory, settings, clock.now()).sizes == {"active-smb": 2}  # what the preview said
