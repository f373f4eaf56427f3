"""Latency guards that time nothing: what keeps an event-triggered rule's event from
waiting, checked on the simulated clock and in the plans PostgreSQL runs.

`make bench-latency` measures event -> email under a steady stream (docs/performance.md,
"End-to-end latency"); these tests fail when the cause of a regression it would show comes
back: an event that waits for a timer, a tick or a full batch before it is evaluated, or
the rules worker's check of ingest's store running on a plan that scans the whole event
table for every id it asks about (the regression a49d506 brought: 1.5 s -> 51 s p99).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from services.ingest import interface
from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.rules.evaluation.worker import RulesWorker
from services.rules.models import SignalRecord
from shared.db import transaction
from tests.support.helpers import T0, drain, publish, track
from tests.support.rules import count, ingest, make_rule

BIG_REPORT = {  # the event-triggered rule of bench/bench_latency.py
    "id": "big-report",
    "name": "Big report",
    "kind": "lifecycle",
    "severity": "low",
    "trigger": {"events": ["report_created"]},
    "cooldown": "7d",
    "condition": {
        "all": [
            {"field": "event.properties.rows", "op": ">=", "value": 10_000},
            {"metric": "count", "event": "report_created", "window": "1d", "op": ">=", "value": 1},
        ]
    },
}


def test_an_event_is_evaluated_in_the_first_poll_after_ingest_stores_it(topics, session_factory, clock):
    """The clock never moves and every batch is one event (far from a full poll): the
    event is evaluated by the rules worker's first poll after ingest has stored it,
    whether the worker already held it (it arrived before ingest stored it) or fetches it
    only then. The tick runs as in `touchline run`; nothing here waits for it."""
    make_rule(session_factory, BIG_REPORT, clock.now())
    rules = RulesWorker(topics, session_factory, clock)
    ingest_worker = IngestWorker(topics, session_factory, clock)
    try:
        # The rules worker has the event before ingest stored it: it holds it back.
        publish(topics, [track("acme", "report_created", T0 - timedelta(seconds=1), "ada", "r1", rows=50_000)])
        assert drain(rules, lambda: rules.waiting_since is not None) == 0
        assert count(session_factory, SignalRecord) == 0
        drain(ingest_worker, lambda: count(session_factory, RawEvent) == 1)
        assert rules.poll_once() == 1  # the very next poll: no wait for a timer, a tick or more records
        assert count(session_factory, SignalRecord) == 1 and rules.last_report.signals[0].account_id == "acme"
        assert rules.waiting_since is None

        # Ingest stored it first: the first poll that brings it evaluates it.
        publish(topics, [track("globex", "report_created", T0 - timedelta(seconds=1), "cy", "r2", rows=50_000)])
        drain(ingest_worker, lambda: count(session_factory, RawEvent) == 2)
        drain(rules, lambda: [sig.account_id for sig in rules.last_report.signals] == ["globex"])
        assert count(session_factory, SignalRecord) == 2 and rules.waiting_since is None
    finally:
        rules.close()
        ingest_worker.close()
    assert clock.now() == T0


def test_the_check_of_ingests_store_is_planned_for_its_own_ids(session_factory, db_kind):
    """interface.ingested_event_ids binds its ids as one array (shared.db.is_in). psycopg
    prepares a statement it has run five times, and PostgreSQL would then reuse one
    generic plan for any array: made while the event table was nearly empty, that plan
    scanned the whole table for every id asked, and the rules worker fell a minute behind
    a stream of 1,000 events/s on a fresh database. Every execution must be planned for
    its own ids (the engine's plan_cache_mode), prepared or not."""
    if db_kind == "sqlite":
        pytest.skip("PostgreSQL's plan cache; SQLite plans each statement")
    stored = [track("acme", "login", T0 - timedelta(minutes=m), "ada", f"stored-{m}") for m in range(40)]
    ingest(session_factory, stored[:5], T0)  # the table nearly empty, as in a fresh database
    present = {e["event_id"] for e in stored[:5]}
    with transaction(session_factory) as s:  # one connection: the plan cache is per connection
        # psycopg prepares on the server after five runs; PostgreSQL plans the first five
        # runs of a prepared statement for their values, then may switch to a generic plan.
        for n in range(20):
            if n == 12:
                ingest(session_factory, stored[5:], T0)  # the table grows meanwhile (another connection)
                present = {e["event_id"] for e in stored}
            asked = [f"stored-{m}" for m in range(n % 3, 40, 3)] + [f"not-stored-{n}"]
            assert interface.ingested_event_ids(s, asked) == present.intersection(asked)
        rows = s.execute(
            text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%events.event_id = ANY%'")
        ).all()
    assert rows, "the lookup was never prepared on the server: the test no longer shows what it guards"
    [(generic, custom)] = rows
    assert generic == 0 and custom >= 10, f"{generic} executions on a generic plan (custom: {custom})"
