"""Rules never act on half-loaded data: the scheduled tick waits for ingest's
freshness watermark, event-triggered rules ignore history, and the rules worker's
"evaluate without ingest" fallback runs on the injected clock."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.rules.evaluation.worker import RulesWorker
from services.rules.models import SignalRecord
from shared import consumer_progress as progress
from shared.kafka.clients import group_id_of
from tests.support.helpers import T0, drain, publish, track
from tests.support.rules import count, make_rule, no_login_rule, signals


def deferred(reason: str) -> float:
    return REGISTRY.get_sample_value("touchline_rules_ticks_deferred_total", {"reason": reason}) or 0.0


def test_the_tick_waits_until_ingest_has_stored_what_the_topic_holds(topics, session_factory, clock):
    make_rule(session_factory, no_login_rule(), clock.now())
    healthy = [f"healthy-{i:02d}" for i in range(10)]
    # History first (a login a month ago), then this week's logins, then the one account
    # that really went quiet: ingest stores them in this order, partition by partition.
    old = [track(a, "login", T0 - timedelta(days=30), "u1", f"{a}-old") for a in healthy]
    recent = [track(a, "login", T0 - timedelta(days=1), "u1", f"{a}-recent") for a in healthy]
    publish(topics, old + recent + [track("quiet", "login", T0 - timedelta(days=20), "u1", "quiet-old")])
    total = len(old) + len(recent) + 1

    ingest = IngestWorker(topics.model_copy(update={"kafka_max_poll_records": 1}), session_factory, clock)
    # One record a poll, stored and reported before poll_once returns: without overlap no
    # batch is started ahead, so the test can stop ingest half-way.
    ingest.overlap = False
    rules = RulesWorker(topics.model_copy(update={"rules_max_ingest_lag": 0}), session_factory, clock)
    try:
        drain(ingest, lambda: count(session_factory, RawEvent) >= 1)
        with session_factory() as s:
            stored = set(s.scalars(select(RawEvent.event_id)))
        # Half-loaded: a healthy account's month-old login is stored, its recent one is not.
        assert stored & {e["event_id"] for e in old} and not stored & {e["event_id"] for e in recent}
        before = deferred("ingest_lag") + deferred("ingest_silent")
        rules.poll_once(100)
        assert rules.last_tick is not None and rules.last_tick.deferred
        assert count(session_factory, SignalRecord) == 0
        assert deferred("ingest_lag") + deferred("ingest_silent") == before + 1

        # Ingest goes silent (no progress report for longer than the staleness limit): still held back.
        drain(ingest, lambda: _reported_partitions(topics, session_factory) == topics.topic_partitions)
        clock.advance(timedelta(seconds=topics.rules_ingest_stale_seconds + 1))
        silent_before = deferred("ingest_silent")
        rules.housekeeping()
        assert rules.last_tick.deferred and deferred("ingest_silent") == silent_before + 1

        drain([ingest, rules], lambda: count(session_factory, RawEvent) == total and not rules.last_tick.deferred, timeout=60)
    finally:
        ingest.close()
        rules.close()
    assert rules.last_tick.ran == 1
    assert [s.account_id for s in signals(session_factory)] == ["quiet"]


def _reported_partitions(settings, session_factory) -> int:
    with session_factory() as s:
        return len(progress.positions(s, group_id_of(settings, "ingest"), settings.topic_events))


BACKFILLABLE = {
    "id": "logged-in-twice",
    "name": "Logged in twice this month",
    "kind": "lifecycle",
    "severity": "low",
    "trigger": {"events": ["login"]},
    "condition": {"metric": "count", "event": "login", "window": "30d", "op": ">=", "value": 2},
    "cooldown": "1d",
}


def test_event_triggered_rules_ignore_events_older_than_the_freshness_window(topics, session_factory, clock):
    make_rule(session_factory, BACKFILLABLE, clock.now())
    fresh_limit = timedelta(seconds=topics.rules_event_freshness_seconds)
    # A backfill of last week: every account meets the condition, none may be signalled today.
    history = [track(a, "login", T0 - timedelta(days=3, hours=h), f"u{h}", f"{a}-h{h}") for a in ("acme", "globex") for h in range(3)]
    publish(topics, history)
    ingest, rules = IngestWorker(topics, session_factory, clock), RulesWorker(topics, session_factory, clock, tick=False)
    stale_before = _stale()
    try:
        drain(ingest, lambda: count(session_factory, RawEvent) == len(history), timeout=60)
        drain(rules, lambda: _stale() == stale_before + len(history), timeout=60)
        assert count(session_factory, SignalRecord) == 0
        assert rules.last_report.evaluations == 0
        # Just inside the window still counts as live usage.
        publish(topics, [track("acme", "login", T0 - fresh_limit + timedelta(minutes=1), "u9", "acme-now")])
        drain([ingest, rules], lambda: count(session_factory, SignalRecord) == 1, timeout=60)
    finally:
        ingest.close()
        rules.close()
    [sig] = signals(session_factory)
    assert sig.account_id == "acme" and sig.event_id == "acme-now"


def _stale() -> float:
    return REGISTRY.get_sample_value("touchline_rules_stale_events_total") or 0.0


def _committed(worker) -> int:
    return sum(worker.consumer.committed(tp) or 0 for tp in worker.consumer.assignment()) if worker.consumer else 0


def test_the_ingest_wait_fallback_runs_on_the_injected_clock(topics, session_factory, clock):
    # No ingest worker: the rules worker waits for events ingest never stores, then,
    # after rules_ingest_wait_seconds of *clock* time, evaluates without them.
    # (An hour, so that a fallback reading the wall clock could not pass by accident.)
    settings = topics.model_copy(update={"rules_ingest_wait_seconds": 3600})
    publish(topics, [track("acme", "login", T0, "ada", "never-ingested")])
    rules = RulesWorker(settings, session_factory, clock, tick=False)
    try:
        drain(rules, lambda: rules.waiting_since is not None)  # it holds the event and waits (group join is slow under load)
        assert rules.last_report is None and _committed(rules) == 0
        clock.advance(timedelta(seconds=3599))
        for _ in range(4):
            rules.poll_once(200)
        assert rules.last_report is None
        clock.advance(timedelta(seconds=1))
        drain(rules, lambda: rules.last_report is not None)
    finally:
        rules.close()
    assert rules.last_report.events == 1
