"""No signal without an outcome: outreach records a decision for every signal, and the
rules service republishes signals that have none after the grace period, so a
broker that loses cs.signals records heals by itself."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select

from services.outreach.models import OutreachDecision
from services.outreach.outcomes import signals_with_decision
from services.outreach.playbooks.worker import SignalWorker
from services.rules.evaluation.service import run_tick
from services.rules.evaluation.worker import ORPHAN_SWEEP_EVERY, RulesWorker
from services.rules.models import SignalRecord
from shared.broker import EmbeddedBroker, free_port
from shared.kafka.clients import ensure_topics
from shared.outbox import OutboxMessage
from tests.support.helpers import T0, drain, read_topic, track
from tests.support.outreach import (
    add_account,
    save_playbook,
    save_template,
    send_signals,
    signal,
    simple_playbook,
)
from tests.support.rules import count, ingest, make_rule, no_login_rule, signals


def decisions(session_factory) -> dict[str, OutreachDecision]:
    with session_factory() as s:
        return {d.signal_id: d for d in s.scalars(select(OutreachDecision))}


def test_every_signal_gets_a_recorded_decision(topics, session_factory, workers):
    add_account(session_factory, "acme")
    add_account(session_factory, "globex")
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "win-back",
        simple_playbook(
            steps=[  # stays active for two days
                {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion"]},
                {"type": "wait", "duration": "2d"},
            ]
        ),
    )
    save_playbook(session_factory, "all-held-out", simple_playbook(trigger={"rules": ["quiet-rule"]}, holdout_percent=100))
    w = workers()
    sent = [
        signal("acme", signal_id="s-enrolled"),
        signal("acme", signal_id="s-already"),
        signal("globex", rule_id="quiet-rule", signal_id="s-held"),
        signal("globex", rule_id="nobody-listens", signal_id="s-none"),
    ]
    send_signals(topics, sent)
    drain(w["signals"], lambda: len(decisions(session_factory)) == 4)
    got = {k: (d.decision, d.reason) for k, d in decisions(session_factory).items()}
    assert got == {
        "s-enrolled": ("enrolled", None),
        "s-already": ("skipped", "already_enrolled"),
        "s-held": ("held_out", None),
        "s-none": ("no_matching_playbook", None),
    }
    assert decisions(session_factory)["s-already"].playbooks == [{"playbook_id": "win-back", "version": 1, "outcome": "already_enrolled"}]
    # A redelivered signal changes nothing; the published read model answers for all of them.
    send_signals(topics, [sent[0]])
    drain(w["signals"], lambda: _consumed(w["signals"]) == 5)
    assert len(decisions(session_factory)) == 4
    with session_factory() as s:
        assert signals_with_decision(s, [x["signal_id"] for x in sent] + ["unknown"]) == {x["signal_id"] for x in sent}


def _consumed(worker) -> int:
    return sum(worker.consumer.committed(tp) or 0 for tp in worker.consumer.assignment()) if worker.consumer else 0


def republished_total() -> float:
    return REGISTRY.get_sample_value("touchline_signals_republished_total") or 0.0


def test_signals_the_broker_lost_are_republished_until_outreach_decides(settings, session_factory, clock, tmp_path):
    # A broker of our own, so that we can restart it: the embedded broker keeps records in
    # memory only, so a restart loses whatever outreach had not consumed yet.
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker.log").start()
    own = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    rules = outreach = None
    try:
        ensure_topics(own)
        accounts = [f"acct-{i}" for i in range(5)]
        ingest(session_factory, [track(a, "login", T0 - timedelta(days=20), "ada", f"{a}-login") for a in accounts], T0)
        save_template(session_factory, own)
        save_playbook(session_factory, "win-back", simple_playbook())
        make_rule(session_factory, no_login_rule(), clock.now())
        assert len(run_tick(session_factory, own, clock.now()).signals) == 5

        rules = RulesWorker(own, session_factory, clock, tick=False)
        rules.db_retry_seconds = 0
        assert rules.relay() == 5  # acknowledged by the broker ...
        broker.stop()  # ... and lost with it
        broker.start()
        ensure_topics(own)
        assert read_topic(own, own.topic_signals, 1, timeout=2) == []

        outreach = SignalWorker(own, session_factory, clock)
        drain(outreach, lambda: outreach.consumer.assignment(), timeout=30)
        assert decisions(session_factory) == {}
        before = republished_total()
        # Within the grace period the sweeper leaves the signals alone ...
        clock.advance(timedelta(seconds=own.signal_decision_grace_seconds - 1))
        rules.housekeeping()
        assert republished_total() == before and count(session_factory, OutboxMessage) == 5
        # ... after it (at the next sweep), it publishes them again through the outbox, and outreach decides.
        clock.advance(ORPHAN_SWEEP_EVERY)
        drain([rules, outreach], lambda: len(decisions(session_factory)) == 5, timeout=60)
        assert republished_total() == before + 5
        ids = {s.signal_id for s in signals(session_factory)}
        with session_factory() as s:
            assert signals_with_decision(s, ids) == ids
        assert {d.decision for d in decisions(session_factory).values()} == {"enrolled"}
        # Deciding settled them with rules (rules never asks outreach) ...
        with session_factory() as s:
            rows = list(s.scalars(select(SignalRecord)))
        assert all(r.decision_due_at is None and r.republished == 1 for r in rows)

        # ... so the next sweep publishes nothing again.
        clock.advance(timedelta(seconds=own.signal_decision_grace_seconds * 2 + 1))
        rules.housekeeping()
        assert republished_total() == before + 5 and count(session_factory, OutboxMessage) == 10
    finally:
        for w in (rules, outreach):
            if w is not None:
                w.close()
        broker.stop()
