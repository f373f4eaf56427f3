"""The metrics the alerts, the dashboard and the sender's autoscaler read
(deploy/observability, deploy/kubernetes/keda): outbox backlog and age, signals by
kind, the scheduled tick, readiness. Real broker, SMTP sink and both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from services.rules.evaluation.worker import RulesWorker
from shared.db import transaction
from shared.metrics import OUTBOX_SAMPLE_SECONDS
from shared.outbox import enqueue_many, pending_stats
from tests.support.helpers import track
from tests.support.outreach import (
    add_account,
    enrol_in_win_back,
    messages,
    signal,
)
from tests.support.rules import group, ingest, ingest_reports_caught_up, make_rule, no_login_rule


def sample(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_sender_reports_the_due_backlog_and_how_late_its_oldest_message_is(topics, session_factory, sink, workers, clock):
    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers, signal(signal_id="sig-1"))
    assert {m.state for m in messages(session_factory)} == {"queued"}

    clock.advance(timedelta(seconds=90))
    w["sender"].poll_once()  # samples before it claims: two due messages, 90 s late
    assert sample("touchline_outbox_backlog", outbox="messages") == 2
    assert sample("touchline_outbox_oldest_age_seconds", outbox="messages") == pytest.approx(90, abs=1)
    assert {m.state for m in messages(session_factory)} == {"sent"}

    clock.advance(timedelta(seconds=OUTBOX_SAMPLE_SECONDS))
    w["sender"].poll_once()
    assert sample("touchline_outbox_backlog", outbox="messages") == 0
    assert sample("touchline_outbox_oldest_age_seconds", outbox="messages") == 0


def test_signals_outbox_stats_and_the_relay_sample(topics, session_factory, clock):
    t0 = clock.now()
    with transaction(session_factory) as s:
        enqueue_many(s, [{"topic": topics.topic_signals, "key": b"a", "value": b"{}"}], t0)
        enqueue_many(s, [{"topic": topics.topic_signals, "key": b"b", "value": b"{}"}], t0 + timedelta(seconds=10))
    with session_factory() as s:
        assert pending_stats(s) == (2, t0)

    w = RulesWorker(topics, session_factory, clock, tick=False)
    try:
        w.housekeeping()  # relays both rows, then samples what is left: nothing
    finally:
        w.close()
    with session_factory() as s:
        assert pending_stats(s) == (0, None)
    assert sample("touchline_outbox_backlog", outbox="signals") == 0
    assert sample("touchline_outbox_oldest_age_seconds", outbox="signals") == 0


def test_scheduled_tick_and_signals_by_kind_are_counted(topics, session_factory, clock):
    now = clock.now()
    ingest(session_factory, [group("quiet", now - timedelta(days=90)), track("quiet", "login", now - timedelta(days=20), "u1", "q1")], now)
    make_rule(session_factory, no_login_rule(cooldown="7d"), now)
    ticks = sample("touchline_rules_tick_seconds_count") or 0
    churn = sample("touchline_signals_fired_total", kind="churn_risk") or 0
    ingest_reports_caught_up(topics, session_factory, clock)
    w = RulesWorker(topics, session_factory, clock)
    try:
        w.housekeeping()
    finally:
        w.close()
    assert sample("touchline_rules_tick_seconds_count") == ticks + 1
    assert sample("touchline_rules_tick_interval_seconds") == topics.rules_tick_seconds
    assert sample("touchline_signals_fired_total", kind="churn_risk") == churn + 1


async def test_readyz_sets_dependency_up(api, settings):
    r = await api.get("/readyz")
    assert r.status_code == 200
    assert sample("touchline_dependency_up", dependency="database") == 1
    assert sample("touchline_dependency_up", dependency="broker") == 1
