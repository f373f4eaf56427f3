"""Evaluation of every predicate type, window edges, time zones and DST, audiences,
the scheduled tick on a simulated clock, cooldowns, lifecycle actions and the
backtest, on both databases. State is written by ingest's own service."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from services.ingest.models import Account
from services.rules.backtest.service import run_backtest
from services.rules.conditions import evaluate_condition
from services.rules.evaluation.engine import EventSubject
from services.rules.evaluation.service import RuleIndex, evaluate_events, run_tick
from services.rules.language import parse_condition, parse_rule
from services.rules.models import RuleCooldown, RuleTick
from services.rules.signals import repository as signals_repo
from shared.db import COPY_THRESHOLD, transaction
from shared.outbox import OutboxMessage
from tests.support.helpers import T0, track
from tests.support.rules import count, group, identify, ingest, make_rule, no_login_rule, signals

UTC = UTC


def holds(session_factory, cond: dict, account_id: str, now: datetime) -> tuple[bool, dict]:
    with session_factory() as s:
        return evaluate_condition(s, parse_condition(cond), account_id, now)


def test_window_edges_time_zones_and_a_dst_day(session_factory):
    # T0 is Monday 2026-03-02 12:00 UTC: "7d" is the UTC days Feb 24 .. Mar 2 inclusive.
    ingest(
        session_factory,
        [
            track("edge", "login", datetime(2026, 2, 24, 0, 0, 0, tzinfo=UTC), "u1", "in-at-edge"),
            track("edge", "login", datetime(2026, 2, 23, 23, 59, 59, tzinfo=UTC), "u1", "out-by-a-second"),
            # 23:30 in New York on Feb 23 is 04:30 UTC on Feb 24: inside.
            {**track("edge", "login", T0, "u2", "ny-late"), "timestamp": "2026-02-23T23:30:00-05:00"},
            # 08:00 in Tokyo on Feb 24 is 23:00 UTC on Feb 23: outside.
            {**track("edge", "login", T0, "u3", "tokyo-early"), "timestamp": "2026-02-24T08:00:00+09:00"},
        ],
        T0,
    )
    ok, tree = holds(session_factory, {"metric": "count", "event": "login", "window": "7d", "op": "==", "value": 2}, "edge", T0)
    assert ok, tree
    ok, _ = holds(session_factory, {"metric": "active_users", "window": "7d", "op": "==", "value": 2}, "edge", T0)
    assert ok
    # One second later than the edge event's day start the answer is the same; a day later it drops.
    assert holds(
        session_factory, {"metric": "count", "event": "login", "window": "7d", "op": "==", "value": 0}, "edge", T0 + timedelta(days=1)
    )[0]

    # DST: New York springs forward on Sunday 2026-03-08. "2d" at Mar 9 noon UTC is Mar 8..9 UTC,
    # 48 UTC hours plus today, whatever the local clocks did.
    now = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
    ingest(
        session_factory,
        [
            {**track("dst", "login", now, "u1", "before-jump"), "timestamp": "2026-03-08T01:30:00-05:00"},  # 06:30 UTC Mar 8
            {**track("dst", "login", now, "u1", "after-jump"), "timestamp": "2026-03-08T03:30:00-04:00"},  # 07:30 UTC Mar 8
            {**track("dst", "login", now, "u1", "day-before"), "timestamp": "2026-03-07T18:59:59-05:00"},  # 23:59:59 UTC Mar 7
        ],
        now,
    )
    ok, tree = holds(session_factory, {"metric": "count", "event": "login", "window": "2d", "op": "==", "value": 2}, "dst", now)
    assert ok, tree
    ok, tree = holds(session_factory, {"metric": "days_since", "event": "login", "op": ">=", "value": 1.18}, "dst", now)
    assert ok and tree["value"] == pytest.approx((now - datetime(2026, 3, 8, 7, 30, tzinfo=UTC)).total_seconds() / 86400, abs=1e-3)


def test_every_account_metric(session_factory):
    now = T0
    events = [
        group(
            "acme",
            now - timedelta(days=60),
            seats=10,
            plan="pro",
            arr=24000,
            segment="smb",
            renewal_date="2026-04-01",
            signup_date="2025-12-01",
            industry="retail",
        )
    ]
    # Prior four weeks: 5 users active each week; this week: 2 users.
    for week in range(1, 5):
        for u in range(5):
            events.append(track("acme", "login", now - timedelta(days=7 * week + 1), f"u{u}", f"p{week}-{u}"))
    for u in range(2):
        events.append(track("acme", "login", now - timedelta(days=1), f"u{u}", f"c-{u}"))
    events.append(track("acme", "export_run", now - timedelta(days=3), "u0", "x1"))
    ingest(session_factory, events, now)

    def value(cond):
        ok, tree = holds(session_factory, cond, "acme", now)
        return ok, tree

    ok, t = value({"metric": "change", "of": "active_users", "window": "7d", "baseline": "28d", "op": "<=", "value": -40})
    assert ok and t["value"] == -60.0 and (t["current"], t["baseline"]) == (2, 5.0)
    ok, t = value({"metric": "change", "of": "count", "event": "login", "window": "7d", "baseline": "28d", "op": "<=", "value": -60})
    assert ok and t["value"] == -60.0
    ok, t = value({"metric": "seat_utilisation", "window": "28d", "op": ">=", "value": 50})
    assert ok and t["value"] == 50.0  # 5 distinct users of 10 seats in the last 28 days
    assert value({"metric": "active_days", "window": "7d", "op": "==", "value": 2})[0]  # Mar 1 (logins) and Feb 27 (export)
    assert value({"metric": "active_days", "event": "export_run", "window": "7d", "op": "==", "value": 1})[0]
    assert value({"metric": "days_since", "event": "export_run", "op": "==", "value": 3})[0]
    ok, t = value({"metric": "days_since", "event": "never_happened", "op": ">=", "value": 10_000})
    assert ok and t["never_seen"] is True
    assert value(
        {
            "all": [
                {"field": "account.plan", "op": "==", "value": "pro"},
                {"field": "account.arr", "op": ">", "value": 20000},
                {"field": "account.traits.industry", "op": "in", "value": ["retail"]},
                {"field": "account.days_to_renewal", "op": "==", "value": 30},
                {"field": "account.tenure_days", "op": "==", "value": 91},
            ]
        }
    )[0]
    assert value({"not": {"field": "account.traits.missing", "op": "exists"}})[0]


def test_event_user_predicates_and_rule_indexing(session_factory, settings):
    now = T0
    ingest(
        session_factory,
        [
            group("acme", now - timedelta(days=30), seats=5),
            identify("acme", "ada", now - timedelta(days=30), role="champion"),
            track("acme", "login", now - timedelta(days=40), "ada", "old-login"),
            track("acme", "report_created", now - timedelta(minutes=1), "ada", "r1"),
        ],
        now,
    )
    make_rule(
        session_factory,
        {
            "id": "champion-funnel",
            "name": "Champion back after a month builds a funnel",
            "kind": "expansion",
            "trigger": {"events": ["report_created"]},
            "condition": {
                "all": [
                    {"field": "event.properties.report_type", "op": "==", "value": "funnel"},
                    {"field": "user.role", "op": "==", "value": "champion"},
                    {"metric": "days_since", "event": "login", "scope": "user", "op": ">=", "value": 30},
                ]
            },
            "cooldown": "1d",
        },
        now,
    )
    index = RuleIndex(400)
    funnel = EventSubject("r1", "acme", "ada", "report_created", now, {"report_type": "funnel"})
    table = EventSubject("r2", "acme", "ada", "report_created", now, {"report_type": "table"})
    unrelated = EventSubject("l1", "acme", "ada", "dashboard_viewed", now, {})
    with transaction(session_factory) as s:
        index.refresh(s)
        assert evaluate_events(s, [unrelated], index, now, settings).evaluations == 0  # nothing indexed under it
        report = evaluate_events(s, [table], index, now, settings)
        assert report.evaluations == 1 and not report.signals
        report = evaluate_events(s, [funnel], index, now, settings)
    assert len(report.signals) == 1
    sig = report.signals[0]
    assert (sig.rule_id, sig.rule_version, sig.user_id, sig.kind) == ("champion-funnel", 1, "ada", "expansion")
    assert sig.evidence["user.role"]["value"] == "champion" and sig.evidence["trigger"]["event_id"] == "r1"
    assert sig.evidence["user_days_since(login)"]["value"] == pytest.approx(40, abs=0.01)
    # The index reloads only when a rule changes.
    with transaction(session_factory) as s:
        loads = index.loads
        index.refresh(s)
        assert index.loads == loads


def test_absence_rule_fires_on_the_tick_once_per_cooldown_and_moves_the_stage(session_factory, settings, clock):
    start = clock.now()
    ingest(
        session_factory,
        [
            group("quiet", start - timedelta(days=90), lifecycle_stage="active", segment="smb"),
            group("busy", start - timedelta(days=90), lifecycle_stage="active", segment="smb"),
            group("other-segment", start - timedelta(days=90), lifecycle_stage="active", segment="enterprise"),
            track("quiet", "login", start - timedelta(days=10), "u1", "q1"),
            track("busy", "login", start - timedelta(days=1), "u1", "b1"),
        ],
        start,
    )
    make_rule(
        session_factory,
        no_login_rule(
            audience={"segment": ["smb"], "lifecycle_stage": ["active", "at_risk"]},
            cooldown="7d",
            actions={"set_lifecycle_stage": "at_risk"},
        ),
        start,
    )

    assert run_tick(session_factory, settings, clock.now()).signals == []  # 10 days of silence: not yet
    clock.advance(timedelta(days=4) - timedelta(seconds=1))
    assert run_tick(session_factory, settings, clock.now()).signals == []  # one second short of 14 days
    clock.advance(timedelta(seconds=1))
    # Exactly 14 days: due again? the tick ran a second ago, so not before the hour is up.
    assert run_tick(session_factory, settings, clock.now()).ran == 0
    clock.advance(timedelta(hours=1))
    report = run_tick(session_factory, settings, clock.now())
    assert [s.account_id for s in report.signals] == ["quiet"]
    sig = signals(session_factory)[0]
    assert sig.trigger == "schedule" and sig.evidence["days_since(login)"]["value"] == pytest.approx(14 + 1 / 24, abs=1e-3)
    with session_factory() as s:
        quiet = s.get(Account, "quiet")
        assert quiet.lifecycle_stage == "at_risk" and quiet.lifecycle_stage_changed_at == clock.now()
        assert s.get(RuleTick, "no-login-14d").last_result == {"audience": 2, "matched": 1, "signals": 1}
    assert count(session_factory, OutboxMessage) == 1

    # Re-running the same tick (a restart) does nothing; later ticks respect the cooldown.
    assert run_tick(session_factory, settings, clock.now()).ran == 0
    for _ in range(6):
        clock.advance(timedelta(days=1))
        assert run_tick(session_factory, settings, clock.now()).signals == []
    clock.advance(timedelta(days=1))
    assert [s.account_id for s in run_tick(session_factory, settings, clock.now()).signals] == ["quiet"]
    assert len(signals(session_factory)) == 2 and len({s.signal_id for s in signals(session_factory)}) == 2


def test_audience_filters(session_factory, settings):
    now = T0
    ingest(
        session_factory,
        [
            group("renews-soon", now - timedelta(days=1), renewal_date="2026-04-15", plan="pro", arr=50000, signup_date="2025-01-01"),
            group("renews-later", now - timedelta(days=1), renewal_date="2026-09-01", plan="pro", arr=50000, signup_date="2025-01-01"),
            group("too-small", now - timedelta(days=1), renewal_date="2026-04-15", plan="pro", arr=500, signup_date="2025-01-01"),
            group("too-new", now - timedelta(days=1), renewal_date="2026-04-15", plan="pro", arr=50000, signup_date="2026-02-20"),
        ],
        now,
    )
    make_rule(
        session_factory,
        {
            "id": "renewal-quiet",
            "name": "Renewal soon, no exports",
            "kind": "churn_risk",
            "trigger": {"schedule": {}},
            "audience": {"renewal_within_days": 60, "arr": {"min": 1000}, "tenure_days": {"min": 30}, "plan": "pro"},
            "condition": {"metric": "count", "event": "export_run", "window": "28d", "op": "<", "value": 1},
        },
        now,
    )
    assert [s.account_id for s in run_tick(session_factory, settings, now).signals] == ["renews-soon"]


def test_backtest_on_a_known_history(session_factory):
    # Account "fades": a login every day from Jan 1 to Jan 31, then silence. "steady" logs in daily.
    evs = []
    for d in range(60):
        day = datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(days=d)
        evs.append(track("steady", "login", day, "u1", f"s{d}"))
        if d < 31:
            evs.append(track("fades", "login", day, "u1", f"f{d}"))
    ingest(session_factory, evs, datetime(2026, 3, 2, tzinfo=UTC))
    rule = parse_rule(
        {
            "id": "silent",
            "name": "No login in 14 days",
            "kind": "churn_risk",
            "trigger": {"schedule": {}},
            "condition": {"metric": "days_since", "event": "login", "op": ">=", "value": 14},
            "cooldown": "7d",
        }
    )
    with session_factory() as s:
        res = run_backtest(s, rule, date(2026, 2, 1), date(2026, 2, 28))
    # Last login Jan 31: 14 days later is Feb 14; cooldown 7d gives Feb 14, 21, 28.
    assert [(d.isoformat(), a) for d, a, _ in res.firings] == [("2026-02-14", "fades"), ("2026-02-21", "fades"), ("2026-02-28", "fades")]
    # Event-triggered: a login when the account logged in on fewer than 20 days in 28.
    rule2 = parse_rule(
        {
            "id": "sparse",
            "name": "sparse",
            "kind": "churn_risk",
            "trigger": {"events": ["login"]},
            "condition": {"metric": "active_days", "window": "28d", "op": "<", "value": 20},
            "cooldown": "1d",
        }
    )
    with session_factory() as s:
        res2 = run_backtest(s, rule2, date(2026, 1, 1), date(2026, 1, 31))
    # Both accounts log in daily from Jan 1: fewer than 20 active days until Jan 19 -> 19 firings each.
    assert len(res2.firings) == 38 and {a for _, a, _ in res2.firings} == {"steady", "fades"}


def test_event_triggered_rule_fires_once_per_cooldown_across_batches(session_factory, settings, clock):
    """Each batch is its own transaction, as in the worker: a second qualifying event in a
    later batch inside the cooldown fires nothing; one at the cooldown's end fires."""
    make_rule(
        session_factory,
        {
            "id": "big-export",
            "name": "Big export",
            "kind": "expansion",
            "trigger": {"events": ["export_run"]},
            "condition": {"metric": "count", "event": "export_run", "window": "1d", "op": ">=", "value": 1},
            "cooldown": "1d",
        },
        clock.now(),
    )
    index = RuleIndex(400)

    def batch(event_id: str) -> list:
        now = clock.now()
        ingest(session_factory, [track("acme", "export_run", now, "ada", event_id)], now)
        with transaction(session_factory) as s:
            index.refresh(s)
            report = evaluate_events(s, [EventSubject(event_id, "acme", "ada", "export_run", now, {})], index, now, settings)
        assert report.evaluations == 1  # the condition held each time: only the cooldown decides
        return [sig.evidence["trigger"]["event_id"] for sig in report.signals]

    assert batch("x1") == ["x1"]
    clock.advance(timedelta(hours=1))
    assert batch("x2") == []
    clock.advance(timedelta(hours=23) - timedelta(seconds=1))  # one second before the cooldown ends
    assert batch("x3") == []
    clock.advance(timedelta(seconds=1))
    assert batch("x4") == ["x4"]
    clock.advance(timedelta(hours=1))
    assert batch("x5") == []
    assert [s.event_id for s in signals(session_factory)] == ["x1", "x4"]
    assert count(session_factory, OutboxMessage) == 2


def test_a_cooldown_holds_back_only_its_own_rule(session_factory, settings, clock):
    """Two scheduled rules match the same account: the first one's cooldown must not
    keep the second from firing (the tick skips accounts per rule)."""
    start = clock.now()
    ingest(
        session_factory,
        [group("quiet", start - timedelta(days=90), segment="smb"), track("quiet", "login", start - timedelta(days=30), "u1", "q1")],
        start,
    )
    make_rule(session_factory, no_login_rule(id="first", name="First", cooldown="7d"), start)
    assert [(s.rule_id, s.account_id) for s in run_tick(session_factory, settings, clock.now()).signals] == [("first", "quiet")]
    make_rule(session_factory, no_login_rule(id="second", name="Second", cooldown="7d"), clock.now())
    clock.advance(timedelta(hours=1))
    assert [(s.rule_id, s.account_id) for s in run_tick(session_factory, settings, clock.now()).signals] == [("second", "quiet")]


def test_cooldown_claims_in_bulk(session_factory):
    """Above the bulk threshold (COPY-staged on PostgreSQL) a claim still wins only for
    accounts never claimed or whose cooldown has ended, the end itself included."""
    n = COPY_THRESHOLD + 100
    first = [f"a{i:04d}" for i in range(n)]
    later = [f"b{i:04d}" for i in range(20)]
    day = timedelta(days=1)
    with transaction(session_factory) as s:
        assert signals_repo.claim_cooldowns(s, "r", first, T0, T0 + day) == set(first)
    with transaction(session_factory) as s:  # twelve hours later: only the new accounts
        assert signals_repo.claim_cooldowns(s, "r", first + later, T0 + day / 2, T0 + day / 2 + day) == set(later)
    with transaction(session_factory) as s:  # the first cooldowns end exactly now: claimable again
        assert signals_repo.claim_cooldowns(s, "r", first + later, T0 + day, T0 + 2 * day) == set(first)
    with transaction(session_factory) as s:
        assert signals_repo.claim_cooldowns(s, "other-rule", first[:5], T0 + day, T0 + 2 * day) == set(first[:5])
    with session_factory() as s:
        assert s.get(RuleCooldown, ("r", first[0])).until == T0 + 2 * day
        assert s.get(RuleCooldown, ("r", later[0])).until == T0 + day / 2 + day
    assert count(session_factory, RuleCooldown) == n + 20 + 5


def test_a_tick_firing_for_many_accounts_writes_one_signal_and_one_outbox_row_each(session_factory, settings, clock):
    """A burst above the bulk threshold: every signal and its outbox message (key, value,
    headers) as for one, and the cooldown holds for all of them on the next ticks."""
    start = clock.now()
    quiet = [f"q{i:04d}" for i in range(COPY_THRESHOLD + 60)]
    events = [track(a, "login", start - timedelta(days=20), "u1", f"{a}-old") for a in quiet]
    events += [track(f"busy{i}", "login", start - timedelta(days=1), "u1", f"busy{i}") for i in range(5)]
    ingest(session_factory, events, start)
    make_rule(session_factory, no_login_rule(id="quiet", name="Quiet", cooldown="2d"), start)
    report = run_tick(session_factory, settings, clock.now())
    assert sorted(s.account_id for s in report.signals) == quiet
    stored = {s.signal_id: s for s in signals(session_factory)}
    assert set(stored) == {s.signal_id for s in report.signals}
    with session_factory() as s:
        messages = list(s.query(OutboxMessage).order_by(OutboxMessage.id))
    assert len(messages) == len(quiet)
    for m in messages:
        body = json.loads(m.value)
        sig = stored[body["signal_id"]]
        assert m.key == sig.account_id.encode() and body["account_id"] == sig.account_id and m.sent_at is None
        assert m.topic == settings.topic_signals and m.attempts == 0 and m.created_at == start
        assert [list(h) for h in m.headers] == [["touchline.kind", "churn_risk"], ["touchline.signal_id", sig.signal_id]]
        assert body["evidence"] == sig.evidence
    clock.advance(timedelta(days=1))
    assert run_tick(session_factory, settings, clock.now()).signals == []
    clock.advance(timedelta(days=1))
    assert sorted(s.account_id for s in run_tick(session_factory, settings, clock.now()).signals) == quiet
    assert count(session_factory, OutboxMessage) == 2 * len(quiet)
