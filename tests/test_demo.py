"""The demo stream: deterministic, valid, and its cohorts behave as documented
(the rules' starter library relies on them)."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from services.demo import build_accounts, cohort_of, generate
from shared.events import Event, validate_event_obj

END = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


def test_demo_is_deterministic_and_every_event_is_valid():
    a = list(generate(accounts=12, days=20, seed=3, end=END))
    b = list(generate(accounts=12, days=20, seed=3, end=END))
    assert a == b
    assert len({e["event_id"] for e in a}) == len(a)
    for ev in a:
        assert isinstance(validate_event_obj(ev, END, 64 * 1024, timedelta(days=1)), Event), ev
    assert {e.get("type", "track") for e in a} == {"track", "identify", "group"}
    assert all(e["timestamp"] <= END.isoformat() for e in a)


def test_cohorts_shape_usage():
    days = 60
    accounts = {a.id: a for a in build_accounts(40, 7, END.date(), days)}
    last_login: dict[str, datetime] = {}
    users_by_week: dict[tuple[str, int], set] = defaultdict(set)
    for ev in generate(accounts=40, days=days, seed=7, end=END, with_traits=False):
        ts = datetime.fromisoformat(ev["timestamp"])
        if ev["name"] == "login":
            last_login[ev["account_id"]] = max(last_login.get(ev["account_id"], ts), ts)
        users_by_week[(ev["account_id"], (END - ts).days // 7)].add(ev["user_id"])
    by_cohort = defaultdict(list)
    for i, acct in enumerate(accounts.values()):
        assert acct.cohort == cohort_of(i)
        by_cohort[acct.cohort].append(acct.id)
    assert set(by_cohort) == {"healthy", "churning", "expanding", "onboarding"}
    for a in by_cohort["churning"]:  # silent for the last 14+ days
        assert END - last_login[a] > timedelta(days=14)
    for a in by_cohort["healthy"]:
        assert END - last_login[a] < timedelta(days=2)
    for a in by_cohort["expanding"]:  # last week's active users well above a month earlier
        assert len(users_by_week[(a, 0)]) >= 1.5 * len(users_by_week[(a, 5)])
        assert len(users_by_week[(a, 0)]) >= 0.9 * accounts[a].seats


def test_live_rounds_keep_churning_accounts_away_unless_they_come_back():
    import random

    from services.demo import live_round

    accts = build_accounts(40, 7, END.date(), 60)
    churning = [a.id for a in accts if a.cohort == "churning"]
    quiet = live_round(accts, set(), END, random.Random(1))
    assert quiet and not {e["account_id"] for e in quiet} & set(churning)
    back = live_round(accts, {churning[0]}, END, random.Random(1))
    assert {e["account_id"] for e in back} & set(churning) == {churning[0]}
    assert sum(1 for e in back if e["account_id"] == churning[0] and e["name"] == "login") >= 1
    for ev in back:
        assert isinstance(validate_event_obj(ev, END, 64 * 1024, timedelta(days=1)), Event)


def test_the_demo_seeds_a_csm_pool_with_keys_saved_under_var(settings, session_factory):
    import json

    from services.demo import DEMO_CSMS, seed_csm_pool
    from services.outreach.engagements import repository as engagement_repo
    from shared.auth import authenticate

    created = seed_csm_pool(settings)
    assert set(created) == {c[0] for c in DEMO_CSMS}
    saved = json.loads((settings.var_dir / "demo-csm-keys.json").read_text())
    assert (settings.var_dir / "demo-csm-keys.json").stat().st_mode & 0o077 == 0
    with session_factory() as s:
        assert [c.id for c in engagement_repo.list_csms(s)] == sorted(c[0] for c in DEMO_CSMS)
        assert {cid: authenticate(s, key).csm_id for cid, key in saved.items()} == {cid: cid for cid in saved}
    assert seed_csm_pool(settings) == {}  # once


@pytest.mark.integration
def test_the_demo_run_as_the_readme_says_fires_on_exactly_the_churning_and_expanding_accounts(topics, session_factory):
    """`make run` (workers up, starter outreach seeded), then `touchline demo` in its own
    process: history, wait for ingest, enable the starter rules. The real workers run
    in-process on a simulated clock that keeps moving (an hour per round) while the
    history loads, so any tick that ran on half-loaded data would leave a wrong signal."""
    import os
    import subprocess
    import sys
    import time

    from sqlalchemy import func, select

    from services.ingest.events.consumer import IngestWorker
    from services.outreach.models import Message
    from services.outreach.outcomes import signals_with_decision
    from services.outreach.playbooks.consumer import SignalWorker
    from services.outreach.starter import seed_starter_content
    from services.rules.evaluation.consumer import RulesWorker
    from services.rules.models import RuleTick, SignalRecord
    from shared.clock import SimulatedClock
    from shared.db import transaction
    from shared.outbox import pending_count
    from tests.helpers import drain

    settings = topics
    started = datetime.now(timezone.utc)
    clock = SimulatedClock(started - timedelta(hours=6))
    with transaction(session_factory) as s:
        seed_starter_content(s, settings, clock.now(), enable_playbooks=True)
    workers = [IngestWorker(settings, session_factory, clock), RulesWorker(settings, session_factory, clock),
               SignalWorker(settings, session_factory, clock)]
    env = {**os.environ, "TOUCHLINE_ENV": "test", "TOUCHLINE_DATABASE_URL": settings.database_url,
           "TOUCHLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "TOUCHLINE_TOPIC_PREFIX": settings.topic_prefix,
           "TOUCHLINE_VAR_DIR": str(settings.var_dir)}

    def settled() -> bool:
        with session_factory() as s:
            ticks = s.scalar(select(func.count()).select_from(RuleTick))
            fired = list(s.scalars(select(SignalRecord.signal_id)))
            return ticks == 6 and pending_count(s) == 0 and len(signals_with_decision(s, fired)) == len(fired)

    proc = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "demo", "--accounts", "20", "--days", "60"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600  # bounds a failing test only
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the demo did not finish"
            for w in workers:
                w.poll_once(100)
            if clock.now() < started:
                clock.advance(timedelta(hours=1))
        output = proc.stdout.read()
        assert proc.returncode == 0, output[-3000:]
        assert "waiting for ingest" in output and output.index("whole history") < output.index("starter rules enabled")
        clock.set(datetime.now(timezone.utc) + timedelta(seconds=settings.rules_tick_seconds))
        drain(workers, settled, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            w.close()

    cohorts = {a.id: a.cohort for a in build_accounts(20, 7, started.date(), 60)}
    with session_factory() as s:
        fired = list(s.scalars(select(SignalRecord)))
        mailed = {m.account_id for m in s.scalars(select(Message).where(Message.playbook_id == "win-back"))}
    by_kind = defaultdict(set)
    for sig in fired:
        by_kind[sig.kind].add(sig.account_id)
    assert by_kind["churn_risk"] == {a for a, c in cohorts.items() if c == "churning"}
    assert by_kind["expansion"] == {a for a, c in cohorts.items() if c == "expanding"}
    assert mailed and all(cohorts[a] == "churning" for a in mailed)
