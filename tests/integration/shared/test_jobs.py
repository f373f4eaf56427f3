"""Background jobs on both databases: a job runs, reports progress and its result; a
cancel stops it; a job over its time bound is timed_out; a dead worker's job is
recovered (and a stale runner is fenced off); a paused backtest job holds no write
lock on SQLite, so the other workers keep committing; the /v1/jobs API and its errors.

Jobs run in the real jobs worker (in a thread where the test must pause a job
mid-run, in a real process where it must die). Time comes from the simulated clock."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from services.jobs import JobWorker
from services.outreach.timers import TimerWorker
from services.rules.backtest.jobs import run_backtest_job
from shared import faults, jobs
from shared.audit import record
from shared.clock import SystemClock
from shared.db import make_engine, make_session_factory, transaction
from shared.jobs import repository as jobs_repo
from shared.jobs.models import Job
from shared.models import AuditRecord
from tests.support.helpers import T0, auth, run_cli, run_jobs, track
from tests.support.rules import ingest, make_rule, no_login_rule, seed_one_fading_account


class Gate:
    """Lets a test hold a running job between two steps."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self.release.wait(60), "the test never released the job"


GATES: dict[str, Gate] = {}
STEPS_RUN: dict[str, int] = {}


def _gate(params) -> Gate | None:
    return GATES.get(params.get("gate", ""))


def steps(ctx, params, progress):
    """A job of ``steps`` steps that may be held before step ``pause_at``."""
    n, gate = params["steps"], _gate(params)
    for i in range(n):
        if gate and i == params.get("pause_at"):
            gate.hold()
        STEPS_RUN[params["gate"]] = i + 1
        progress(i + 1, n, f"step {i + 1}")
    return {"steps": n, "sum": sum(range(n))}


def paused_backtest(ctx, params, progress):
    """The real backtest job, held after its third replayed day."""
    gate = _gate(params)

    def on_progress(done, total=None, message=""):
        progress(done, total, message)
        if done == 3:
            gate.hold()

    return run_backtest_job(ctx, {k: v for k, v in params.items() if k != "gate"}, on_progress)


jobs.register("test.steps", steps, roles=("ops",), time_limit_seconds=60)
jobs.register("test.paused_backtest", paused_backtest, roles=("ops",))


@pytest.fixture
def settings(settings):
    # Every progress call writes (the simulated clock does not move between steps).
    return settings.model_copy(update={"job_progress_interval_seconds": 0, "job_lease_seconds": 30})


def new_gate() -> str:
    name = uuid.uuid4().hex
    GATES[name] = Gate()
    return name


def submit(session_factory, settings, clock, kind="test.steps", by="ops:test ops", **params) -> int:
    with transaction(session_factory) as s:
        return jobs.submit(s, kind, params, created_by=by, now=clock.now(), settings=settings).id


def in_thread(worker: JobWorker) -> threading.Thread:
    t = threading.Thread(target=worker.poll_once, daemon=True)
    t.start()
    return t


def load(session_factory, job_id) -> Job:
    with session_factory() as s:
        return s.get(Job, job_id)


async def test_a_job_reports_progress_while_it_runs_then_its_result(api, keys, settings, session_factory, clock):
    ops = auth(keys["ops"])
    gate = new_gate()
    job_id = submit(session_factory, settings, clock, steps=5, pause_at=2, gate=gate)
    r = await api.get(f"/v1/jobs/{job_id}", headers=ops)
    assert r.status_code == 200 and r.json()["state"] == "queued" and r.json()["progress"]["done"] == 0
    t = in_thread(JobWorker(settings, session_factory, clock))
    assert GATES[gate].reached.wait(30)
    running = (await api.get(f"/v1/jobs/{job_id}", headers=ops)).json()
    assert running["state"] == "running" and running["progress"] == {"done": 2, "total": 5, "message": "step 2"}
    assert running["attempts"] == 1 and running["deadline"].startswith((T0 + timedelta(seconds=60)).isoformat()[:19])
    GATES[gate].release.set()
    t.join(30)
    done = (await api.get(f"/v1/jobs/{job_id}", headers=ops)).json()
    assert done["state"] == "succeeded" and done["result"] == {"steps": 5, "sum": 10} and done["error"] is None
    assert done["progress"] == {"done": 5, "total": 5, "message": "step 5"} and done["finished_at"]


async def test_cancel_stops_a_running_job_at_its_next_step(api, keys, settings, session_factory, clock):
    ops = auth(keys["ops"])
    gate = new_gate()
    job_id = submit(session_factory, settings, clock, steps=10, pause_at=3, gate=gate)
    t = in_thread(JobWorker(settings, session_factory, clock))
    assert GATES[gate].reached.wait(30)
    r = await api.post(f"/v1/jobs/{job_id}/cancel", headers=ops)
    assert r.status_code == 200 and r.json()["state"] == "running" and r.json()["cancel_requested_at"]
    GATES[gate].release.set()
    t.join(30)
    job = (await api.get(f"/v1/jobs/{job_id}", headers=ops)).json()
    assert job["state"] == "cancelled" and job["result"] is None
    assert job["error"]["error"] == "cancelled" and "ops:test ops" in job["error"]["detail"]
    assert STEPS_RUN[gate] == 4  # the step after the pause ran, then it stopped: 6 steps never ran
    # A finished job cannot be cancelled again: 409 in the error shape.
    r = await api.post(f"/v1/jobs/{job_id}/cancel", headers=ops)
    assert r.status_code == 409 and r.json()["error"] == "conflict" and "cancelled" in r.json()["detail"]


async def test_cancel_of_a_queued_job_is_immediate_and_it_never_runs(api, keys, settings, session_factory, clock):
    gate = new_gate()
    job_id = submit(session_factory, settings, clock, steps=3, gate=gate)
    r = await api.post(f"/v1/jobs/{job_id}/cancel", headers=auth(keys["ops"]))
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["finished_at"]
    assert run_jobs(settings, session_factory, clock) == 0 and gate not in STEPS_RUN


def test_a_stopping_worker_gives_its_job_back_to_the_queue(settings, session_factory, clock):
    gate = new_gate()
    job_id = submit(session_factory, settings, clock, steps=5, pause_at=2, gate=gate)
    worker = JobWorker(settings, session_factory, clock)
    t = in_thread(worker)
    assert GATES[gate].reached.wait(30)
    worker.stop_event.set()  # SIGTERM
    GATES[gate].release.set()
    t.join(30)
    job = load(session_factory, job_id)
    assert (job.state, job.attempts, job.lease_owner) == ("queued", 0, None)
    assert run_jobs(settings, session_factory, clock) == 1
    assert load(session_factory, job_id).state == "succeeded"


def test_a_dead_job_past_its_deadline_is_settled_as_timed_out(settings, session_factory, clock):
    job_id = submit(session_factory, settings, clock, steps=3, gate=new_gate())
    JobWorker(settings, session_factory, clock, owner="hung")._claim(None)
    clock.advance(timedelta(seconds=61))
    assert run_jobs(settings, session_factory, clock) == 0
    job = load(session_factory, job_id)
    assert job.state == "timed_out" and job.error["error"] == "timed_out" and job.attempts == 1


def test_a_job_over_its_time_bound_is_timed_out(settings, session_factory, clock):
    gate = new_gate()
    job_id = submit(session_factory, settings, clock, steps=10, pause_at=2, gate=gate)
    t = in_thread(JobWorker(settings, session_factory, clock))
    assert GATES[gate].reached.wait(30)
    clock.advance(timedelta(seconds=61))  # the kind's bound is 60 s
    GATES[gate].release.set()
    t.join(30)
    job = load(session_factory, job_id)
    assert job.state == "timed_out" and job.result is None and STEPS_RUN[gate] == 3
    assert job.error["error"] == "timed_out" and "60s" in job.error["detail"]


def test_an_expired_lease_is_recovered_and_the_stale_runner_is_fenced(settings, session_factory, clock):
    job_id = submit(session_factory, settings, clock, steps=3, gate=new_gate())
    dead = JobWorker(settings, session_factory, clock, owner="dead")
    claimed = dead._claim(None)  # claims, then "dies": it never reports
    assert claimed.id == job_id and load(session_factory, job_id).lease_owner == "dead"
    clock.advance(timedelta(seconds=29))
    assert run_jobs(settings, session_factory, clock) == 0  # the lease (30 s) still holds
    clock.advance(timedelta(seconds=2))
    assert run_jobs(settings, session_factory, clock) == 1
    job = load(session_factory, job_id)
    assert job.state == "succeeded" and job.attempts == 2 and job.result == {"steps": 3, "sum": 3}
    # The "dead" runner wakes up and runs its stale claim: every write it tries is refused.
    dead.execute(claimed)
    again = load(session_factory, job_id)
    assert (again.state, again.attempts, again.finished_at) == ("succeeded", 2, job.finished_at)


def test_a_job_whose_worker_keeps_dying_fails_as_worker_lost(settings, session_factory, clock):
    settings = settings.model_copy(update={"job_lease_seconds": 20})  # two leases stay inside the 60 s bound
    job_id = submit(session_factory, settings, clock, steps=3, gate=new_gate())
    for n in range(settings.job_max_attempts):
        assert JobWorker(settings, session_factory, clock, owner=f"dies-{n}")._claim(None).id == job_id
        clock.advance(timedelta(seconds=21))
    assert run_jobs(settings, session_factory, clock) == 0
    job = load(session_factory, job_id)
    assert job.state == "failed" and job.error["error"] == "worker_lost" and job.attempts == 2


def test_a_killed_jobs_worker_process_loses_no_job(settings, session_factory, clock, topics):
    """A real ``touchline worker jobs`` process runs a backtest and dies (hard, like
    SIGKILL) after its first progress write; after the lease another worker re-runs it
    from the start and the answer is the one an undisturbed run gives."""
    start, end = seed_one_fading_account(session_factory, T0)
    params = {"rule_id": "no-login-14d", "start": start, "end": end, "samples": 1}
    job_id = submit(session_factory, settings, clock, kind="rules.backtest", **params)
    proc = run_cli(
        settings,
        "worker",
        "jobs",
        TOUCHLINE_JOB_PROGRESS_INTERVAL_SECONDS="0",
        TOUCHLINE_JOB_LEASE_SECONDS="30",
        TOUCHLINE_FAULT="jobs.after_progress",
    )
    assert proc.returncode == faults.CRASH_EXIT_CODE, proc.stderr[-2000:]
    job = load(session_factory, job_id)
    assert job.state == "running" and job.progress_done == 1 and job.progress_total == 21 and job.attempts == 1
    # Recovery: another jobs worker, once the dead one's lease has expired.
    recovery = SystemClock().now() + timedelta(seconds=31)
    clock.set(recovery)
    assert run_jobs(settings, session_factory, clock) == 1
    job = load(session_factory, job_id)
    assert job.state == "succeeded" and job.attempts == 2 and job.result["accounts"] == ["fades"]
    fresh_id = submit(session_factory, settings, clock, kind="rules.backtest", **params)
    run_jobs(settings, session_factory, clock)
    fresh = load(session_factory, fresh_id).result
    assert {k: v for k, v in job.result.items() if k != "elapsed_seconds"} == {k: v for k, v in fresh.items() if k != "elapsed_seconds"}


def test_a_running_backtest_job_does_not_stall_the_other_workers(settings, session_factory, clock, db_kind):
    """While a backtest job is mid-replay (held after day 3, inside its read
    transaction), the timer worker and any other writer commit at once. Their engine
    waits at most 2 s for a lock, so a job holding SQLite's write lock would fail this."""
    ingest(
        session_factory, [track(f"a{i}", "login", T0 - timedelta(days=d), "u1", f"e{i}-{d}") for i in range(5) for d in range(0, 40, 3)], T0
    )
    make_rule(session_factory, no_login_rule(), clock.now(), enabled=False)
    gate = new_gate()
    job_id = submit(
        session_factory,
        settings,
        clock,
        kind="test.paused_backtest",
        rule_id="no-login-14d",
        gate=gate,
        start=(T0 - timedelta(days=30)).date().isoformat(),
        end=T0.date().isoformat(),
    )
    t = in_thread(JobWorker(settings, session_factory, clock))
    assert GATES[gate].reached.wait(60)
    impatient = make_engine(settings)
    if db_kind == "sqlite":

        @event.listens_for(impatient, "connect")
        def _short_busy_timeout(dbapi_conn, _record):
            dbapi_conn.execute("PRAGMA busy_timeout=2000")

    try:
        other = make_session_factory(impatient)
        for n in range(3):  # a periodic worker's ticks, and plain writes, all commit while the job is running
            TimerWorker(settings, other, clock).poll_once()
            with transaction(other) as s:
                record(s, actor="test", action="tick", object_type="test", object_id=str(n), now=clock.now())
        assert load(session_factory, job_id).state == "running"
        with other() as s:
            assert len(list(s.scalars(select(AuditRecord).where(AuditRecord.object_type == "test")))) == 3
    finally:
        GATES[gate].release.set()
        t.join(60)
        impatient.dispose()
    job = load(session_factory, job_id)
    assert job.state == "succeeded" and job.progress_done == job.progress_total == 31 and job.result["total_firings"] == 0


async def test_jobs_api_lists_in_pages_by_role_and_answers_errors_in_shape(api, keys, settings, session_factory, clock):
    ops, admin, csm = auth(keys["ops"]), auth(keys["admin"]), auth(keys["csm"])
    ids = [submit(session_factory, settings, clock, steps=1, gate=new_gate(), by=f"ops:{n}") for n in range(3)]
    page1 = (await api.get("/v1/jobs", params={"limit": 2}, headers=ops)).json()
    assert [j["id"] for j in page1["items"]] == ids[::-1][:2] and page1["next_cursor"]
    page2 = (await api.get("/v1/jobs", params={"limit": 2, "cursor": page1["next_cursor"]}, headers=ops)).json()
    assert [j["id"] for j in page2["items"]] == ids[:1] and page2["next_cursor"] is None
    assert len((await api.get("/v1/jobs", params={"state": "queued"}, headers=admin)).json()["items"]) == 3
    assert (await api.get("/v1/jobs", params={"state": "succeeded"}, headers=ops)).json() == {"items": [], "next_cursor": None}
    for path in ("/v1/jobs", f"/v1/jobs/{ids[0]}"):  # csm runs no kind of job: it sees none
        r = await api.get(path, headers=csm)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    for r in [await api.get("/v1/jobs/987654", headers=ops), await api.post("/v1/jobs/987654/cancel", headers=ops)]:
        assert r.status_code == 404 and set(r.json()) == {"error", "detail"} and r.json()["error"] == "not_found"
    for r in [
        await api.get(f"/v1/jobs/{10**30}", headers=ops),
        await api.get("/v1/jobs", params={"state": "bogus"}, headers=ops),
        await api.get("/v1/jobs", params={"cursor": "x"}, headers=ops),
        await api.get("/v1/jobs", params={"cursor": "2147483648"}, headers=ops),  # past the id column (was a 500 on PostgreSQL)
        await api.get("/v1/jobs", params={"cursor": str(10**18)}, headers=ops),
    ]:
        assert r.status_code == 422 and r.json()["error"] == "validation_error"


async def test_backtests_are_bounded_per_key(api, keys, settings, session_factory, clock):
    ops = auth(keys["ops"])
    await api.post("/v1/rules", json=no_login_rule(), headers=ops)
    body = {"rule_id": "no-login-14d", "start": (T0 - timedelta(days=7)).date().isoformat(), "end": T0.date().isoformat()}
    for _ in range(settings.job_max_active_per_key):
        assert (await api.post("/v1/rules/backtest", json=body, headers=ops)).status_code == 202
    r = await api.post("/v1/rules/backtest", json=body, headers=ops)
    assert r.status_code == 429 and r.json()["error"] == "too_many_requests"
    assert (await api.post("/v1/rules/backtest", json=body, headers=auth(keys["admin"]))).status_code == 202
    assert run_jobs(settings, session_factory, clock) == settings.job_max_active_per_key + 1
    assert (await api.post("/v1/rules/backtest", json=body, headers=ops)).status_code == 202


def test_finished_jobs_are_pruned_after_the_retention(settings, session_factory, clock):
    old = submit(session_factory, settings, clock, steps=1, gate=new_gate())
    run_jobs(settings, session_factory, clock)
    clock.advance(timedelta(days=settings.job_retention_days, seconds=1))
    new = submit(session_factory, settings, clock, steps=1, gate=new_gate())
    with transaction(session_factory) as s:
        assert jobs_repo.prune_finished(s, clock.now() - timedelta(days=settings.job_retention_days)) == 1
    assert load(session_factory, old) is None and load(session_factory, new).state == "queued"
