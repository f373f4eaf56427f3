"""An event batch's ``count`` metrics are read together (``Measurements.plan``: one
statement per chunk of accounts, grouped by event name, per window) instead of one query
per metric. These tests hold the grouped read to the per-metric one, on both databases,
over varied rollups: names that differ only in case or by a suffix, days on each side
of every window's edges and a day after today, accounts with no rows, more accounts than
one chunk, and accounts asked for that do not exist. They also pin the order in which a
rule on several event names sees the batch's events (the evaluation groups events by
name)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest import interface
from services.ingest.models import UsageDaily
from services.rules.evaluation import engine
from services.rules.evaluation.engine import EventSubject, Measurements
from services.rules.evaluation.service import RuleIndex, evaluate_events
from services.rules.language import leaves, parse_condition
from services.rules.language.evaluate import select
from shared.db import transaction
from tests.support.rules import make_rule

UTC = UTC
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
NAMES = ["login", "Login", "login_x", "export_run", "report created", "ünicode"]
WINDOWS = [1, 7, 30]
N_ACCOUNTS = 1000  # more than one chunk of accounts (CHUNK, services/ingest/repository/chunks.py)


def seed(session_factory) -> list[str]:
    rng = random.Random(11)
    # Each window's first day and the day before it, today, and a day after today
    # (an event with a little clock skew); then days spread over six weeks.
    edges = [TODAY + timedelta(days=1), TODAY, TODAY - timedelta(days=1), TODAY - timedelta(days=6)]
    edges += [TODAY - timedelta(days=7), TODAY - timedelta(days=29), TODAY - timedelta(days=30)]
    spread = [TODAY - timedelta(days=k) for k in range(2, 42)]
    accounts = [f"acct-{i:04d}" for i in range(N_ACCOUNTS)]
    rows = []
    for a in accounts:
        if rng.random() < 0.1:
            continue  # no usage at all
        for name in NAMES:
            if rng.random() < 0.3:
                continue
            for day in set(rng.sample(edges, 2) + rng.sample(spread, rng.randint(0, 5))):
                rows.append({"account_id": a, "day": day, "event_name": name, "count": rng.randint(1, 12)})
    with transaction(session_factory) as s:
        for i in range(0, len(rows), 5000):
            s.execute(UsageDaily.__table__.insert(), rows[i : i + 5000])
    return accounts


def conditions() -> list:
    out = []
    for n, name in enumerate(NAMES + ["never_happened"]):
        for window in WINDOWS:
            out.append(parse_condition({"metric": "count", "event": name, "window": f"{window}d", "op": ">=", "value": 5 + n}))
            out.append(
                parse_condition(
                    {
                        "any": [
                            {"metric": "count", "event": name, "window": f"{window}d", "op": "==", "value": 0},
                            {"not": {"metric": "count", "event": NAMES[n - 1], "window": f"{window}d", "op": "<", "value": 20}},
                        ]
                    }
                )
            )
    return out


def test_counts_by_name_answer_as_one_query_per_event(session_factory):
    accounts = seed(session_factory)
    rng = random.Random(3)
    asked = sorted(rng.sample(accounts, 950)) + ["no-such-account"]
    names = NAMES + ["never_happened"]
    with session_factory() as s:
        for window in WINDOWS:
            start, end = interface.window_days(NOW, window)
            for some in (asked, None, asked[:3], []):
                together = interface.event_counts_by_name(s, names, start, end, some)
                assert together == {n: interface.event_counts(s, n, start, end, some) for n in names}, (window, some and len(some))
        # Not vacuous: the names that differ only in case or by a suffix have different answers.
        together = interface.event_counts_by_name(s, names, *interface.window_days(NOW, 30), None)
        assert together["login"] and together["Login"] and together["login_x"] and together["never_happened"] == {}
        assert together["login"] != together["Login"] != together["login_x"]


def test_planned_counts_measure_as_unplanned_ones(session_factory):
    accounts = seed(session_factory)
    asked = accounts[::2] + accounts[1::7] + ["no-such-account"]  # 644 accounts, not in order
    conds = conditions()
    with session_factory() as s:
        planned, alone = Measurements(s, NOW, asked), Measurements(s, NOW, asked)
        planned.plan(conds)
        universe = set(asked)
        holding = 0
        for cond in conds:
            for leaf in leaves(cond):
                assert planned.metric(leaf) == alone.metric(leaf), leaf.label
            got = select(cond, universe, planned.matching)
            assert got == select(cond, universe, alone.matching), cond
            holding += 0 < len(got) < len(universe)
        assert holding > len(conds) // 2  # the thresholds split the accounts: the sets compared are not all empty or full
        # One read per window, where the unplanned path reads each metric alone.
        operands = {leaf.operand for cond in conds for leaf in leaves(cond)}
        assert (planned.queries, alone.queries) == (len(WINDOWS), len(operands))
        # A count the plan did not name is read alone, and answers the same.
        extra = parse_condition({"metric": "count", "event": "login", "window": "14d", "op": ">", "value": 3})
        assert planned.metric(extra) == alone.metric(extra) and planned.queries == len(WINDOWS) + 1


def test_an_event_batch_fires_the_same_with_and_without_the_plan(session_factory, settings, monkeypatch):
    accounts = seed(session_factory)
    for n, cond in enumerate(conditions()):
        make_rule(
            session_factory,
            {
                "id": f"r{n:02d}",
                "name": f"r{n}",
                "kind": "expansion",
                "trigger": {"events": [NAMES[n % len(NAMES)], NAMES[(n + 1) % len(NAMES)]]},
                "condition": cond.to_dict(),
                "cooldown": "1d",
            },
            NOW,
        )
    rng = random.Random(5)
    events = [
        EventSubject(f"e{i}", rng.choice(accounts), f"u{i % 3}", rng.choice(NAMES), NOW - timedelta(minutes=rng.randrange(300)), {})
        for i in range(3000)
    ]

    def fired() -> tuple[int, list]:
        index = RuleIndex(400)
        with session_factory() as s:
            index.refresh(s)
            report = evaluate_events(s, events, index, NOW, settings)
            s.rollback()  # the cooldowns claimed: the other run starts from the same state
        return report.evaluations, [(sig.rule_id, sig.account_id, sig.evidence) for sig in report.signals]

    planned = fired()
    monkeypatch.setattr(engine.Measurements, "plan", lambda self, conditions: None)
    assert fired() == planned
    evaluations, signals = planned
    assert len(signals) > 500 and len({r for r, _, _ in signals}) > 20 and evaluations > len(signals)


@pytest.fixture
def two_name_rules(session_factory):
    common = {"kind": "expansion", "trigger": {"events": ["b_event", "a_event"]}, "cooldown": "1d"}
    # Needs the event: evaluated per event in batch order, the first that holds fires.
    make_rule(
        session_factory,
        {**common, "id": "per-event", "name": "per event", "condition": {"field": "event.properties.k", "op": "==", "value": 1}},
        NOW,
    )
    # Account state only: the account's latest triggering event (the later in the batch on a tie) stands for all.
    make_rule(
        session_factory,
        {
            **common,
            "id": "latest",
            "name": "latest",
            "condition": {"metric": "count", "event": "x", "window": "1d", "op": "==", "value": 0},
        },
        NOW,
    )


def test_a_rule_on_two_event_names_sees_the_batch_in_order(session_factory, settings, two_name_rules):
    t = NOW - timedelta(hours=1)
    batch = [
        EventSubject("a1", "acme", "u1", "a_event", t, {"k": 1}),
        EventSubject("b1", "acme", "u1", "b_event", t + timedelta(minutes=5), {"k": 1}),
        EventSubject("a2", "acme", "u1", "a_event", t + timedelta(minutes=5), {"k": 2}),
        EventSubject("b2", "acme", "u1", "b_event", t - timedelta(minutes=5), {"k": 1}),
        EventSubject("z1", "zeta", "u2", "b_event", t, {"k": 1}),
        EventSubject("z2", "zeta", "u2", "a_event", t, {"k": 1}),
        EventSubject("other", "acme", "u1", "c_event", NOW, {"k": 1}),
    ]
    index = RuleIndex(400)
    with transaction(session_factory) as s:
        index.refresh(s)
        report = evaluate_events(s, batch, index, NOW, settings)
    trigger = {(sig.rule_id, sig.account_id): sig.evidence["trigger"]["event_id"] for sig in report.signals}
    # The first event of each account in batch order, whichever its name.
    assert trigger[("per-event", "acme")] == "a1" and trigger[("per-event", "zeta")] == "z1"
    # The latest by timestamp; of two at the same time, the later in the batch.
    assert trigger[("latest", "acme")] == "a2" and trigger[("latest", "zeta")] == "z2"
    assert len(report.signals) == 4
    # Per event: acme's a1 fired, the rest of acme's events were skipped; zeta's z1 fired.
    # Latest: one evaluation per account.
    assert report.evaluations == 2 + 2
