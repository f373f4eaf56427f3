"""The daily health scoring in chunks, on both databases with the simulated clock: the
rules worker scores one chunk of accounts per poll, so an event-triggered rule's event is
evaluated in the next poll while the day's scoring is under way (it never waits for the
whole day's scoring: the event -> email latency of issue 24); a crash in the middle of
the day resumes from the last stored chunk and ends with one score per account, each
stored once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.rules.evaluation import health as daily
from services.rules.evaluation.worker import RulesWorker
from services.rules.models import HealthRun, HealthScore, SignalRecord
from tests.integration.services.rules.test_health import MODEL, save_model
from tests.support.helpers import T0, drain, publish, track
from tests.support.rules import count, ingest, make_rule

BIG_REPORT = {
    "id": "big-report",
    "name": "Big report",
    "kind": "lifecycle",
    "severity": "low",
    "trigger": {"events": ["report_created"]},
    "cooldown": "7d",
    "condition": {"metric": "count", "event": "report_created", "window": "1d", "op": ">=", "value": 1},
}


def run_of(session_factory, day) -> HealthRun | None:
    with session_factory() as s:
        return s.get(HealthRun, day)


def test_an_event_is_evaluated_in_the_next_poll_while_the_days_scoring_is_under_way(topics, session_factory, clock):
    accounts = [f"acct-{i:02d}" for i in range(60)]
    ingest(session_factory, [track(a, "login", T0 - timedelta(days=1), "u1", f"{a}-login") for a in accounts], T0)
    make_rule(session_factory, BIG_REPORT, clock.now())
    settings = topics.model_copy(update={"health_chunk_accounts": 2})
    rules = RulesWorker(settings, session_factory, clock)
    ingest_worker = IngestWorker(settings, session_factory, clock)
    try:
        # Both workers join their groups and handle one event; without a model nothing is scored.
        publish(settings, [track("acct-00", "login", T0 - timedelta(seconds=5), "u1", "warm-up")])
        drain([ingest_worker, rules], lambda: rules.last_report is not None and rules.last_report.events == 1)
        assert count(session_factory, HealthScore) == 0
        # A model is defined; the worker looks for one again a tick interval later.
        save_model(session_factory, MODEL, clock.now())
        clock.advance(timedelta(seconds=settings.rules_tick_seconds))
        rules.poll_once(100)
        day = clock.now().date()
        run = run_of(session_factory, day)
        # One poll, one chunk of the day: 2 of the 60 accounts.
        assert run is not None and run.cursor == "acct-01" and run.finished_at is None
        assert count(session_factory, HealthScore) == 2

        publish(settings, [track("acct-30", "report_created", clock.now() - timedelta(seconds=1), "u1", "r1")])
        drain(ingest_worker, lambda: count(session_factory, RawEvent) == len(accounts) + 2)
        polls, handled = 1, 0
        while not handled and polls < 20:  # the first poll that brings the event evaluates it
            handled = rules.poll_once(100)
            polls += 1
        assert handled == 1 and [s.account_id for s in rules.last_report.signals] == ["acct-30"]
        assert count(session_factory, SignalRecord) == 1
        # ... while the day's scoring is under way, one chunk a poll.
        run = run_of(session_factory, day)
        assert run.finished_at is None and count(session_factory, HealthScore) == 2 * polls < len(accounts)

        drain(rules, lambda: (r := run_of(session_factory, day)) is not None and r.finished_at is not None)
    finally:
        rules.close()
        ingest_worker.close()
    run = run_of(session_factory, day)
    assert run.result["scored"] == len(accounts) and run.result["chunks"] == len(accounts) // 2 + 1
    with session_factory() as s:
        assert sorted(s.scalars(select(HealthScore.account_id).where(HealthScore.day == day))) == accounts


class Crash(Exception):
    pass


def test_a_crash_in_the_middle_of_the_day_resumes_and_stores_each_account_once(session_factory, settings, monkeypatch):
    accounts = [f"acct-{i}" for i in range(7)]
    ingest(session_factory, [track(a, "login", T0 - timedelta(days=1), "u1", f"{a}-login") for a in accounts], T0)
    save_model(session_factory, MODEL, T0)
    minute = timedelta(minutes=1)
    first = daily.score_health_chunk(session_factory, settings, T0, limit=2)
    assert first.ran and not first.done and first.scored == 2 and first.cursor == "acct-1"
    # Ingest falls behind: the next chunk waits, nothing is stored.
    held = daily.score_health_chunk(session_factory, settings, T0 + minute, gate=lambda: False, limit=2)
    assert held.deferred and not held.ran and count(session_factory, HealthScore) == 2

    # The worker dies while storing the second chunk, before its commit: none of it stays.
    def crash(name: str) -> None:
        if name == "health.before_chunk_commit":
            raise Crash(name)

    monkeypatch.setattr(daily.faults, "point", crash)
    with pytest.raises(Crash):
        daily.score_health_chunk(session_factory, settings, T0 + minute, limit=2)
    monkeypatch.undo()
    run = run_of(session_factory, T0.date())
    assert run.cursor == "acct-1" and run.finished_at is None and run.result["scored"] == 2
    assert count(session_factory, HealthScore) == 2

    # Two workers measure the same next chunk: the first stores it, the second's is refused.
    a = daily.measure_chunk(session_factory, T0 + 2 * minute, 2)
    b = daily.measure_chunk(session_factory, T0 + 2 * minute, 2)
    assert a is not None and b is not None and a.accounts == b.accounts == ["acct-2", "acct-3"]
    assert daily.store_chunk(session_factory, settings, a) and not daily.store_chunk(session_factory, settings, b)

    # Restarted, the worker finishes the day from the cursor; a finished day is not scored again.
    report = daily.run_health_day(session_factory, settings, T0 + 3 * minute, limit=2)
    assert report.done and report.scored == 3 and report.cursor == "acct-6"
    again = daily.run_health_day(session_factory, settings, T0 + 4 * minute, limit=2)
    assert again.done and not again.ran
    run = run_of(session_factory, T0.date())
    assert run.finished_at == T0 + 3 * minute and run.result["scored"] == len(accounts) and run.result["chunks"] == 4
    with session_factory() as s:
        stored = {r.account_id: r.scored_at for r in s.scalars(select(HealthScore))}
    # One row per account, each stored by the chunk that scored it first (none scored twice).
    assert stored == {
        "acct-0": T0,
        "acct-1": T0,
        "acct-2": T0 + 2 * minute,
        "acct-3": T0 + 2 * minute,
        "acct-4": T0 + 3 * minute,
        "acct-5": T0 + 3 * minute,
        "acct-6": T0 + 3 * minute,
    }


def test_each_chunk_filters_by_its_range_of_ids_and_scores_as_all_accounts_at_once(session_factory, settings):
    """A chunk's statements filter by its range of account ids (``AccountRange``: BETWEEN the
    first and the last, one statement, no IN list of its ids): the scores stored chunk by chunk,
    every component of the starter model over the demo's world (usage, champions, P0 tickets,
    NPS answers), are the scores of all the accounts measured at once."""
    import json

    from services import demo
    from services.ingest.models import Account
    from services.ingest.repository.chunks import AccountRange, in_
    from services.ingest.service import apply_events
    from services.rules.evaluation.health import score_accounts
    from services.rules.health import service as health
    from services.rules.interface import install_starter_health_model
    from shared.db import transaction
    from shared.events import Event

    assert "BETWEEN" in str(in_(Account.id, AccountRange(["acct-00003", "acct-00005"])))
    events = [Event.model_validate_json(json.dumps(e)) for e in demo.generate(accounts=20, days=60, seed=7, end=T0)]
    with transaction(session_factory) as s:
        apply_events(s, events, T0)
        install_starter_health_model(s, actor="ops:test", now=T0)
    with session_factory() as s:
        cur = health.current(s)
        assert cur is not None
        alone = {r["account_id"]: (r["score"], r["label"], r["components"]) for r in score_accounts(s, cur, T0, None)}
    report = daily.run_health_day(session_factory, settings, T0, limit=3)
    assert report.done and run_of(session_factory, T0.date()).result["chunks"] == 7
    with session_factory() as s:
        stored = {r.account_id: (r.score, r.label, r.components) for r in s.scalars(select(HealthScore))}
    assert len(stored) == 20 and stored == alone
    assert {label for _s, label, _c in stored.values()} == {"healthy", "at_risk"}  # the churning accounts at risk
