"""Job kinds and the commands on jobs: submit, read, list, cancel. Flushes only.

A feature makes its long operation a job with one line at import time::

    jobs.register("rules.backtest", run_backtest_job, roles=("ops",))

``run(ctx, params, progress)`` reads through ``ctx.read_session()`` (never the write
lock on SQLite), calls ``progress(done, total, message)`` between steps (where
cancellation, the time limit and the lease are checked) and returns a JSON-able result.
The module is listed in ``services/jobs.py`` so the API and the jobs worker load it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from shared.errors import Conflict, NotFound, TooManyRequests
from shared.jobs import repository as repo
from shared.jobs.models import FINISHED, Job
from shared.settings import Settings


class Progress(Protocol):
    def __call__(self, done: int, total: int | None = None, message: str = "") -> None: ...


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable[[Any, dict[str, Any], Progress], Any]
    roles: tuple[str, ...]  # who may submit and see jobs of this kind (admin always may)
    time_limit_seconds: float | None = None  # None: TOUCHLINE_JOB_TIME_LIMIT_SECONDS


KINDS: dict[str, JobKind] = {}


def register(
    name: str, run: Callable[[Any, dict[str, Any], Progress], Any], *, roles: tuple[str, ...], time_limit_seconds: float | None = None
) -> JobKind:
    kind = JobKind(name, run, tuple(roles), time_limit_seconds)
    KINDS[name] = kind
    return kind


def visible_kinds(role: str) -> list[str]:
    """The kinds a role may run, and so see."""
    return [k.name for k in KINDS.values() if role == "admin" or role in k.roles]


def submit(session: Session, kind: str, params: dict[str, Any], *, created_by: str, now: datetime, settings: Settings) -> Job:
    """Queue a job. The caller validates ``params`` first, so a bad request is a 422
    now, not a failed job later."""
    spec = KINDS[kind]
    if settings.job_max_active_per_key and repo.active_count(session, created_by) >= settings.job_max_active_per_key:
        raise TooManyRequests(
            f"{created_by} already has {settings.job_max_active_per_key} queued or running jobs "
            "(TOUCHLINE_JOB_MAX_ACTIVE_PER_KEY); wait for one to finish or cancel one"
        )
    job = Job(
        kind=kind,
        params=params,
        state="queued",
        progress_done=0,
        progress_total=None,
        progress_message="queued",
        created_by=created_by,
        created_at=now,
        updated_at=now,
        attempts=0,
        time_limit_seconds=float(spec.time_limit_seconds or settings.job_time_limit_seconds),
    )
    session.add(job)
    session.flush()
    return job


def get_visible(session: Session, job_id: int, role: str) -> Job:
    job = repo.get(session, job_id)
    if job is None or job.kind not in visible_kinds(role):
        raise NotFound(f"no job {job_id} (or not one your role may see); list yours with GET /v1/jobs")
    return job


def list_visible(session: Session, role: str, *, kind: str | None, state: str | None, before: int | None, limit: int) -> list[Job]:
    kinds = visible_kinds(role)
    return repo.list_jobs(session, kinds, kind=kind, state=state, before=before, limit=limit) if kinds else []


def cancel(session: Session, job_id: int, role: str, actor: str, now: datetime) -> Job:
    job = get_visible(session, job_id, role)
    if job.state in FINISHED:
        raise Conflict(f"job {job_id} already finished ({job.state}); nothing to cancel")
    repo.request_cancel(session, job, actor, now)
    return job
