"""The jobs worker (``touchline worker jobs``): claims queued jobs and runs them, one at
a time per process.

Transactions, and why. A job's heavy reads run in a :func:`~shared.db.read_transaction`
(a deferred snapshot on SQLite: it never holds the write lock, so a long backtest
stalls no other worker; READ ONLY on PostgreSQL). Everything the runner writes (the
claim, progress, the outcome) is its own short transaction.

Between steps, the job calls ``progress(done, total, message)``; there the runner
- stops the job if the clock passed its deadline (state ``timed_out``);
- at most every ``TOUCHLINE_JOB_PROGRESS_INTERVAL_SECONDS``, writes the progress and
  renews its lease (``TOUCHLINE_JOB_LEASE_SECONDS``), and stops the job if a cancel was
  requested (``cancelled``) or the lease was taken over (the run is abandoned, its result
  would be refused anyway);
- gives the job back to the queue if the worker is stopping (SIGTERM).
A single step is never interrupted: the bound is the deadline plus one step.

Recovery. A worker that dies (or hangs inside one step) stops renewing its lease. When
the lease has expired, the next claim by any jobs worker settles the job: timed_out if
past its deadline, cancelled if a cancel was requested, failed (``worker_lost``) after
``TOUCHLINE_JOB_MAX_ATTEMPTS`` runs, else queued again and re-run from the start (jobs
are reads that produce a result, so a re-run is harmless). Every outcome write is
fenced by the lease owner, so a stale runner can never overwrite its successor.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from shared import faults
from shared.clock import Clock
from shared.db import read_transaction, transaction
from shared.errors import TouchlineError
from shared.jobs import repository as repo
from shared.jobs.models import CANCELLED, FAILED, SUCCEEDED, TIMED_OUT, Job
from shared.jobs.service import KINDS
from shared.metrics import JOB_SECONDS, JOBS_FINISHED
from shared.settings import Settings
from shared.worker import PeriodicWorker

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """Raised inside a job by ``progress()`` to unwind it; the runner records why."""


class JobCancelled(JobStopped):
    pass


class JobTimedOut(JobStopped):
    pass


class JobLost(JobStopped):
    """Another worker took the job over (our lease expired): abandon this run."""


class WorkerStopping(JobStopped):
    pass


@dataclass
class JobContext:
    """What a job function gets besides its params."""

    job_id: int
    kind: str
    created_by: str
    settings: Settings
    session_factory: sessionmaker[Session]
    clock: Clock

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        with read_transaction(self.session_factory) as session:
            yield session


class _Reporter:
    """The ``progress`` callable handed to a job: checks and (throttled) writes."""

    def __init__(self, worker: JobWorker, job: Job, on_progress: Callable[[int, int | None, str], None] | None):
        self.worker, self.job_id, self.deadline = worker, job.id, job.deadline
        self.limit = job.time_limit_seconds
        self.on_progress = on_progress
        self.last_write: datetime | None = None
        self.done, self.total, self.message = job.progress_done, job.progress_total, job.progress_message

    def __call__(self, done: int, total: int | None = None, message: str = "") -> None:
        self.done, self.total, self.message = done, total if total is not None else self.total, message or self.message
        if self.on_progress:
            self.on_progress(self.done, self.total, self.message)
        w = self.worker
        if w.stop_event.is_set():
            raise WorkerStopping()
        now = w.clock.now()
        if self.deadline is not None and now >= self.deadline:
            raise JobTimedOut(
                f"stopped after its time limit of {self.limit:g}s (at step {self.done}{'/' + str(self.total) if self.total else ''})"
            )
        interval = timedelta(seconds=w.settings.job_progress_interval_seconds)
        if self.last_write is not None and now - self.last_write < interval:
            return
        try:
            self.write(now)
        except OperationalError as exc:
            # A busy or briefly unreachable database must not fail a long job: try again at
            # the next step. If it lasts, the lease expires and the job is recovered.
            log.warning("%s: job %d: progress not recorded (%s); the job goes on", w.name, self.job_id, exc.orig)
            self.last_write = now
            return
        faults.point("jobs.after_progress")

    def write(self, now: datetime) -> None:
        w = self.worker
        with transaction(w.session_factory) as session:
            state = repo.heartbeat(session, self.job_id, w.owner, now, w.lease, self.done, self.total, self.message)
        self.last_write = now
        if state is None:
            raise JobLost(f"job {self.job_id}: lease lost (another worker took it over, or it was settled)")
        cancelled_at, by = state
        if cancelled_at is not None:
            raise JobCancelled(f"cancelled by {by} at step {self.done}{'/' + str(self.total) if self.total else ''}")


class JobWorker(PeriodicWorker):
    """``touchline worker jobs``. Runs jobs of the registered kinds (see services/jobs.py)."""

    name = "jobs"

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        owner: str | None = None,
        on_progress: Callable[[int, int | None, str], None] | None = None,
    ) -> None:
        super().__init__(settings, session_factory, clock)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.on_progress = on_progress
        self._next_prune: datetime | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.job_lease_seconds)

    # The loop, its pacing and its database retries are PeriodicWorker's: a job we held
    # when the database went away is recovered by its lease.
    def interval(self) -> float:
        return self.settings.job_poll_seconds

    def describe(self) -> str:
        return f"as {self.owner}: {', '.join(sorted(KINDS)) or 'no job kinds'}"

    def housekeeping(self) -> None:
        self._maybe_prune()

    def poll_once(self, timeout_ms: int | None = None) -> int:
        """Settle expired leases, then claim and run one job. Returns 1 if a job ran."""
        job = self._claim(None)
        if job is None:
            return 0
        self.execute(job)
        return 1

    def run_job(self, job_id: int) -> Job | None:
        """Claim job ``job_id`` and run it here (the CLI). None if it is not queued
        (another worker has it, or it finished)."""
        job = self._claim(job_id)
        if job is None:
            return None
        self.execute(job)
        with self.session_factory() as session:
            return repo.get(session, job_id)

    def _claim(self, job_id: int | None) -> Job | None:
        now = self.clock.now()
        with read_transaction(self.session_factory) as session:
            if not repo.has_work(session, list(KINDS), now):
                return None
        with transaction(self.session_factory) as session:
            settled = repo.reap_expired(session, now, self.settings.job_max_attempts)
            if settled:
                log.warning("%s: settled %d job(s) whose worker stopped renewing its lease", self.name, settled)
            return repo.claim(session, self.owner, list(KINDS), now, self.lease, job_id)

    def execute(self, job: Job) -> None:
        kind = KINDS[job.kind]
        ctx = JobContext(job.id, job.kind, job.created_by, self.settings, self.session_factory, self.clock)
        reporter = _Reporter(self, job, self.on_progress)
        started = time.perf_counter()
        log.info("%s: job %d (%s, by %s) started, attempt %d", self.name, job.id, job.kind, job.created_by, job.attempts)
        result: Any = None
        error: dict[str, Any] | None = None
        try:
            reporter.write(self.clock.now())  # a cancel that came before we started is honoured now
            result = kind.run(ctx, dict(job.params or {}), reporter)
            state = SUCCEEDED
        except JobLost as exc:
            log.warning("%s: %s; abandoning this run", self.name, exc)
            return
        except WorkerStopping:
            with transaction(self.session_factory) as session:
                repo.release(session, job.id, self.owner, self.clock.now())
            log.info("%s: job %d given back to the queue (worker stopping)", self.name, job.id)
            return
        except JobCancelled as exc:
            state, error = CANCELLED, {"error": "cancelled", "detail": str(exc)}
        except JobTimedOut as exc:
            state, error = TIMED_OUT, {"error": "timed_out", "detail": str(exc)}
        except TouchlineError as exc:
            state, error = FAILED, {"error": exc.code, "detail": exc.detail}
        except KeyboardInterrupt:
            self._finish(job, CANCELLED, None, {"error": "cancelled", "detail": "interrupted (Ctrl-C)"}, started, reporter)
            raise
        except OperationalError as exc:
            # Recorded if the database answers; if it is down, _finish raises, the worker
            # backs off and the lease brings the job back.
            log.error("%s: job %d (%s): database error %s", self.name, job.id, job.kind, exc.orig)
            state, error = FAILED, {"error": "database_error", "detail": str(exc.orig)[:2000]}
        except Exception as exc:  # a bug in the job: record it, keep the worker alive
            log.exception("%s: job %d (%s) failed", self.name, job.id, job.kind)
            state, error = FAILED, {"error": "job_error", "detail": f"{type(exc).__name__}: {exc}"[:2000]}
        self._finish(job, state, result, error, started, reporter)

    def _finish(self, job: Job, state: str, result: Any, error: dict[str, Any] | None, started: float, reporter: _Reporter) -> None:
        with transaction(self.session_factory) as session:
            ok = repo.finish(
                session,
                job.id,
                self.owner,
                self.clock.now(),
                state,
                result=result,
                error=error,
                progress=(reporter.done, reporter.total, reporter.message),
            )
        elapsed = time.perf_counter() - started
        if not ok:
            log.warning("%s: job %d finished (%s) but its lease was taken over; result discarded", self.name, job.id, state)
            return
        JOBS_FINISHED.labels(job.kind, state).inc()
        JOB_SECONDS.labels(job.kind).observe(elapsed)
        log.info("%s: job %d (%s) %s in %.1fs%s", self.name, job.id, job.kind, state, elapsed, f": {error['detail']}" if error else "")

    def _maybe_prune(self) -> None:
        now = self.clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + timedelta(hours=1)
        with transaction(self.session_factory) as session:
            pruned = repo.prune_finished(session, now - timedelta(days=self.settings.job_retention_days))
        if pruned:
            log.info("%s: deleted %d jobs finished over %g days ago", self.name, pruned, self.settings.job_retention_days)
