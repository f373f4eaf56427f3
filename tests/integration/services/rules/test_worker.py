"""The rules worker against the real broker and both databases: it waits for ingest,
publishes signals through the outbox, and never fires twice, whether a batch is
redelivered after a crash or two workers share the group."""

from __future__ import annotations

import threading
from datetime import timedelta

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.rules.evaluation.worker import RulesWorker
from services.rules.models import SignalRecord
from shared.clock import SystemClock
from shared.faults import CRASH_EXIT_CODE
from shared.outbox import OutboxMessage, pending_count
from shared.signals import Signal
from tests.support.helpers import (
    QUICK_SESSION_TIMEOUT,
    T0,
    committed_offsets,
    drain,
    publish,
    read_dlq,
    read_topic,
    run_cli,
    track,
    unreachable_database,
)
from tests.support.rules import count, make_rule, signals

RULE = {
    "id": "active-now",
    "name": "Logged in",
    "kind": "lifecycle",
    "severity": "low",
    "trigger": {"events": ["login"]},
    "condition": {"metric": "count", "event": "login", "window": "1d", "op": ">=", "value": 2},
    "cooldown": "1d",
}


def test_event_to_signal_on_cs_signals_waiting_for_ingest(topics, session_factory, clock):
    make_rule(session_factory, RULE, clock.now())
    rules = RulesWorker(topics, session_factory, clock)
    ingest = IngestWorker(topics, session_factory, clock)
    try:
        publish(
            topics,
            [
                track("acme", "login", T0 - timedelta(minutes=5), "ada", "e1"),
                track("acme", "login", T0 - timedelta(minutes=4), "bob", "e2"),
                track("acme", "dashboard_viewed", T0 - timedelta(minutes=3), "bob", "e3"),
                track("globex", "login", T0 - timedelta(minutes=3), "cy", "e4"),
            ],
        )
        # The rules worker alone cannot evaluate: it has the batch, ingest has not stored the
        # events yet, so it rewinds and waits (without committing anything).
        assert drain(rules, lambda: rules.waiting_since is not None) == 0  # handled nothing
        assert count(session_factory, SignalRecord) == 0
        assert committed_offsets(topics, rules.group_id, topics.topic_events) == {}
        drain([ingest, rules], lambda: count(session_factory, SignalRecord) == 1 and pending_count_of(session_factory) == 0)
    finally:
        rules.close()
        ingest.close()
    [sig] = signals(session_factory)
    assert (sig.account_id, sig.rule_version, sig.trigger) == ("acme", 1, "event")
    assert sig.evidence["count(login, 1d)"] == {"value": 2, "op": ">=", "threshold": 2}
    [record] = read_topic(topics, topics.topic_signals, 1)
    assert record.key == b"acme"
    published = Signal.model_validate_json(record.value)
    assert published.signal_id == sig.signal_id and published.evidence == sig.evidence
    assert dict(record.headers)["touchline.signal_id"] == sig.signal_id.encode()


def test_the_ingested_prefix_of_a_partition_is_evaluated_while_the_rest_waits(topics, session_factory, clock):
    # Under a steady stream every poll also brings events ingest has not stored yet: the
    # ones it has stored are evaluated (and committed) now, the rest wait for ingest.
    make_rule(session_factory, RULE, clock.now())
    rules = RulesWorker(topics, session_factory, clock, tick=False)
    ingest = IngestWorker(topics, session_factory, clock)
    try:
        publish(
            topics,
            [
                track("acme", "login", T0 - timedelta(minutes=5), "ada", "p1"),
                track("acme", "login", T0 - timedelta(minutes=4), "bob", "p2"),
            ],
        )
        drain(ingest, lambda: count(session_factory, RawEvent) == 2)
        publish(topics, [track("acme", "login", T0 - timedelta(minutes=3), "cy", "p3")])  # not ingested yet
        drain(rules, lambda: rules.last_report is not None and rules.waiting_since is not None)
        assert rules.last_report.events == 2 and count(session_factory, SignalRecord) == 1
        assert sum(committed_offsets(topics, rules.group_id, topics.topic_events).values()) == 2  # p3 is not
        drain([ingest, rules], lambda: sum(committed_offsets(topics, rules.group_id, topics.topic_events).values()) == 3)
    finally:
        rules.close()
        ingest.close()
    assert rules.last_report.events == 1 and rules.waiting_since is None
    assert count(session_factory, SignalRecord) == 1  # p3 finds acme in its cooldown


def pending_count_of(session_factory) -> int:
    with session_factory() as s:
        return pending_count(s)


def test_a_database_outage_while_checking_ingest_is_retried_and_loses_nothing(topics, session_factory, clock, db_kind, tmp_path):
    """The rules worker asks the database whether ingest has stored a batch before it
    evaluates it. If the database is down then, the batch is rewound and asked about
    again (nothing committed, nothing dead-lettered), and evaluated once it is back."""
    from shared.db import make_session_factory

    make_rule(session_factory, RULE, clock.now())
    ingest = IngestWorker(topics, session_factory, clock)
    down_engine = unreachable_database(topics, db_kind, tmp_path)
    rules = RulesWorker(topics, make_session_factory(down_engine), clock, tick=False)
    rules.db_retry_seconds = 0
    try:
        publish(topics, [track("acme", "login", T0 - timedelta(minutes=m), "ada", f"d{m}") for m in (5, 4)])
        drain(ingest, lambda: count(session_factory, RawEvent) == 2)
        drain(rules, lambda: rules.consumer is not None and bool(rules.consumer.assignment()))
        for _ in range(3):  # the batch arrives, the readiness check fails on the database, it is rewound...
            assert rules.poll_once(500) == 0
        assert committed_offsets(topics, rules.group_id, topics.topic_events) == {}
        rules.session_factory = session_factory  # the database is back: the batch is evaluated once
        drain(
            rules,
            lambda: (
                count(session_factory, SignalRecord) == 1
                and sum(committed_offsets(topics, rules.group_id, topics.topic_events).values()) == 2
            ),
        )
    finally:
        rules.close()
        ingest.close()
        down_engine.dispose()
    assert read_dlq(topics, 1, timeout=3) == []  # a reject would be there in milliseconds


def test_crash_between_db_commit_and_offset_commit_fires_no_duplicate(topics, session_factory):
    clock = SystemClock()  # the worker subprocess runs on the system clock
    now = clock.now()
    make_rule(session_factory, RULE, now)
    # The rule counts logins per UTC day: keep the six inside today, even a minute after midnight.
    start = max(now - timedelta(minutes=10), now.replace(hour=0, minute=0, second=0, microsecond=0))
    evs = [track("acme", "login", start + (now - start) * i / 6, f"u{i}", f"crash-{i}") for i in range(6)]
    publish(topics, evs)
    ingest = IngestWorker(topics, session_factory, clock)
    try:
        drain(ingest, lambda: count(session_factory, RawEvent) == 6)
    finally:
        ingest.close()
    proc = run_cli(topics, "worker", "rules", timeout=90, TOUCHLINE_FAULT="rules.before_offset_commit", **QUICK_SESSION_TIMEOUT)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-3000:]
    assert count(session_factory, SignalRecord) == 1  # committed, offsets not
    first = signals(session_factory)[0].signal_id

    w = RulesWorker(topics, session_factory, clock)
    assert committed_offsets(topics, w.group_id, topics.topic_events) == {}
    try:
        redelivered = drain(w, lambda: _committed(w) == 6 and pending_count_of(session_factory) == 0)
    finally:
        w.close()
    assert redelivered == 6  # the interrupted batch was consumed again...
    assert [s.signal_id for s in signals(session_factory)] == [first]
    assert count(session_factory, OutboxMessage) == 1
    assert len(read_topic(topics, topics.topic_signals, 1)) == 1


def _committed(worker) -> int:
    return sum(worker.consumer.committed(tp) or 0 for tp in worker.consumer.assignment())


def test_two_rules_workers_in_one_group_fire_once_per_account(topics, session_factory, clock):
    make_rule(session_factory, RULE, clock.now())
    ingest = IngestWorker(topics, session_factory, clock)
    workers = [RulesWorker(topics, session_factory, clock, tick=False) for _ in range(2)]
    stop = threading.Event()

    def loop(w):
        while not stop.is_set():
            w.poll_once(100)

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in [ingest, *workers]]
    try:
        for w in [ingest, *workers]:
            w.start()
        for t in threads:
            t.start()
        drain([], lambda: all(w.consumer.assignment() for w in workers), timeout=30)
        accounts = [f"acct-{i}" for i in range(24)]
        publish(topics, [track(a, "login", T0 - timedelta(minutes=j), f"u{j}", f"{a}-{j}") for a in accounts for j in range(6)])
        drain([], lambda: count(session_factory, SignalRecord) == 24 and pending_count_of(session_factory) == 0, timeout=60)
        a1, a2 = (set(w.consumer.assignment()) for w in workers)
        # Every record's offset committed (read by a client of our own: the workers'
        # consumers belong to their threads): no batch is still in flight.
        drain([], lambda: sum(committed_offsets(topics, workers[0].group_id, topics.topic_events).values()) == 144)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for w in [ingest, *workers]:
            w.close()
    assert a1 and a2 and not (a1 & a2)
    sigs = signals(session_factory)
    assert sorted(s.account_id for s in sigs) == sorted(accounts)
    assert sum(w.last_report is not None and w.last_report.evaluations > 0 for w in workers) == 2  # both did work
    assert len(read_topic(topics, topics.topic_signals, 24)) == 24


def test_relay_outage_is_not_fatal_and_sent_outbox_rows_are_pruned(topics, session_factory, clock):
    from shared.broker import free_port
    from shared.db import transaction
    from shared.outbox import SENT_RETENTION, enqueue_many

    with transaction(session_factory) as s:
        enqueue_many(s, [{"topic": topics.topic_signals, "key": b"acme", "value": b'{"old": true}'}], clock.now())
    w = RulesWorker(topics, session_factory, clock, tick=False)
    w.db_retry_seconds = 0
    # The broker is unreachable: the relay fails, the worker logs and goes on, the row stays unsent.
    w.settings = topics.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_bootstrap_timeout_ms": 300})
    try:
        w.housekeeping()
        with session_factory() as s:
            assert pending_count(s) == 1
        w.settings = topics  # the broker is back: the next relay publishes the row and marks it sent
        w.housekeeping()
        with session_factory() as s:
            assert pending_count(s) == 0
        assert [r.value for r in read_topic(topics, topics.topic_signals, 1)] == [b'{"old": true}']
        # A week later the sent row is pruned (hourly), and only then.
        clock.advance(SENT_RETENTION - timedelta(hours=2))
        w.housekeeping()
        assert count(session_factory, OutboxMessage) == 1
        clock.advance(timedelta(hours=3))
        w.housekeeping()
        assert count(session_factory, OutboxMessage) == 0
    finally:
        w.close()
