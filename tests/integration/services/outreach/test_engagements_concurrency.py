"""Assignment with two real outreach worker processes against the same database
(PostgreSQL and SQLite): no CSM goes over capacity and no engagement is assigned
twice. The processes start together (a file barrier) and assign in small batches,
so their passes interleave."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import Counter

from sqlalchemy import select

from services.outreach.engagements.roster import put
from services.outreach.engagements.schemas import CsmIn
from services.outreach.models import EngagementEvent
from shared.db import transaction
from tests.support.engagements import engagements, open_engagement
from tests.support.helpers import ROOT, wait_for
from tests.support.outreach import add_account

WORKER = textwrap.dedent("""
    import sys, time
    from datetime import datetime
    from pathlib import Path
    from services.outreach.engagements.worker import EngagementWorker
    from shared.clock import SimulatedClock
    from shared.db import make_engine, make_session_factory
    from shared.settings import Settings

    settings = Settings()
    engine = make_engine(settings)
    worker = EngagementWorker(settings, make_session_factory(engine), SimulatedClock(datetime.fromisoformat(sys.argv[3])))
    Path(sys.argv[2]).touch()
    deadline = time.monotonic() + 120  # bounds a failing test only
    while not Path(sys.argv[1]).exists():  # the barrier: both start assigning together
        if time.monotonic() > deadline:
            sys.exit("the test never opened the barrier")
        time.sleep(0.005)
    idle = 0
    while idle < 3:
        idle = idle + 1 if worker.poll_once() == 0 else 0
    engine.dispose()
""")


def test_two_worker_processes_never_overfill_a_csm_or_assign_twice(settings, session_factory, clock, tmp_path):
    csms = {"ann": 7, "ben": 5, "cat": 9, "dan": 3, "eve": 6}  # 30 places
    with transaction(session_factory) as s:
        for cid, cap in csms.items():
            put(s, cid, CsmIn(name=cid.title(), email=f"{cid}@pool.test", capacity=cap), actor="test", now=clock.now(), settings=settings)
    for i in range(40):
        add_account(session_factory, f"c{i:02d}", users={})
        open_engagement(session_factory, settings, clock, f"c{i:02d}", priority_override=float(i % 7))
    env = {
        **os.environ,
        "TOUCHLINE_DATABASE_URL": settings.database_url,
        "TOUCHLINE_VAR_DIR": str(tmp_path),
        "TOUCHLINE_ENGAGEMENT_ASSIGN_BATCH": "2",
        "TOUCHLINE_ENV": "test",
    }
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(go), str(r), clock.now().isoformat()], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )
        for r in ready
    ]
    try:
        for p, r in zip(procs, ready, strict=True):
            wait_for(lambda p=p, r=r: r.exists() or p.poll() is not None, 120, "worker process ready")
            assert p.poll() is None, p.stderr.read()
        go.touch()
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = engagements(session_factory)
    load = Counter(e.csm_id for e in rows if e.status == "assigned")
    assert all(load[c] == cap for c, cap in csms.items()), load  # every place filled, none overfilled
    assert sum(1 for e in rows if e.status == "queued") == 10
    with session_factory() as s:
        assigned = list(s.scalars(select(EngagementEvent).where(EngagementEvent.to_status == "assigned")))
    per_engagement = Counter(ev.engagement_id for ev in assigned)
    assert len(per_engagement) == 30 and set(per_engagement.values()) == {1}  # each assigned exactly once
    assert all(e.assignments == 1 for e in rows if e.status == "assigned")
    # The queue was taken by priority: nothing left queued outranks anything assigned.
    assert max(e.priority for e in rows if e.status == "queued") <= min(e.priority for e in rows if e.status == "assigned")
    print("passes by worker:", Counter(ev.actor for ev in assigned))
