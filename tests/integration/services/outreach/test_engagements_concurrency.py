"""Assignment with two real outreach worker processes against the same database
(PostgreSQL and SQLite): no CSM goes over capacity, no engagement is assigned twice, and
both workers assign. The test drives the processes in rounds: each round it asks both
for one pass at once (the passes race for the roster lock) and reads how many each
assigned. With two engagements a pass and room for both, each pass of a round assigns
two whichever goes first, so that both workers assign is true by construction, not by
the luck of the scheduler (a free-running pair once split 28 to 2)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from collections import Counter

from sqlalchemy import select as sql_select

from services.outreach.engagements.assignment import ACTOR
from services.outreach.engagements.roster import put
from services.outreach.engagements.schemas import CsmIn
from services.outreach.models import EngagementEvent
from shared.db import transaction
from tests.support.engagements import engagements, open_engagement
from tests.support.helpers import ROOT
from tests.support.outreach import add_account

WORKER = textwrap.dedent("""
    import sys
    from datetime import datetime
    from services.outreach.engagements.worker import EngagementWorker
    from shared.clock import SimulatedClock
    from shared.db import make_engine, make_session_factory
    from shared.settings import Settings

    settings = Settings()
    engine = make_engine(settings)
    worker = EngagementWorker(settings, make_session_factory(engine), SimulatedClock(datetime.fromisoformat(sys.argv[1])))
    print(worker.actor, flush=True)
    for line in sys.stdin:  # one pass per "poll"; how many it assigned goes back
        print(worker.poll_once(), flush=True)
    engine.dispose()
""")


def _reply(p: subprocess.Popen) -> str:
    """The worker's next line; a worker that died or hangs fails the test (the 120 s
    bounds a failing test only)."""
    assert p.stdout is not None and p.stderr is not None
    ready, _, _ = select.select([p.stdout], [], [], 120)
    line = p.stdout.readline() if ready else ""
    assert line, f"worker {p.pid} gave no answer: {p.poll()=}\n{p.stderr.read() if p.poll() is not None else ''}"
    return line.strip()


def test_two_worker_processes_never_overfill_a_csm_or_assign_twice_and_both_assign(settings, session_factory, clock, tmp_path):
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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, clock.now().isoformat()],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    rounds: list[list[int]] = []
    try:
        actors = [_reply(p) for p in procs]
        assert all(a.startswith(f"{ACTOR}:") for a in actors) and actors[0] != actors[1], actors
        while not rounds or rounds[-1] != [0, 0]:
            assert len(rounds) < 20, rounds
            for p in procs:  # both asked before either answer is read: the passes race
                assert p.stdin is not None
                p.stdin.write("poll\n")
                p.stdin.flush()
            rounds.append([int(_reply(p)) for p in procs])
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # Seven rounds with room for both passes: each assigned two, whichever took the roster
    # first. The eighth: two places left, taken by the first pass; the ninth finds none.
    assert rounds[:7] == [[2, 2]] * 7, rounds
    assert sorted(rounds[7]) == [0, 2] and rounds[8:] == [[0, 0]], rounds
    rows = engagements(session_factory)
    load = Counter(e.csm_id for e in rows if e.status == "assigned")
    assert all(load[c] == cap for c, cap in csms.items()), load  # every place filled, none overfilled
    assert sum(1 for e in rows if e.status == "queued") == 10
    with session_factory() as s:
        assigned = list(s.scalars(sql_select(EngagementEvent).where(EngagementEvent.to_status == "assigned")))
    per_engagement = Counter(ev.engagement_id for ev in assigned)
    assert len(per_engagement) == 30 and set(per_engagement.values()) == {1}  # each assigned exactly once
    assert all(e.assignments == 1 for e in rows if e.status == "assigned")
    # The queue was taken by priority: nothing left queued outranks anything assigned.
    assert max(e.priority for e in rows if e.status == "queued") <= min(e.priority for e in rows if e.status == "assigned")
    # The timeline names each worker for what it said it assigned.
    assert Counter(ev.actor for ev in assigned) == {a: sum(r[i] for r in rounds) for i, a in enumerate(actors)}
