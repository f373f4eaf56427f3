"""Every query on the ``jobs`` table. Each function only flushes; the caller's short
transaction commits. Writes that a job's runner makes are fenced by ``lease_owner``:
a runner whose lease was taken over changes nothing and learns it lost the job."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.orm import Session

from shared.db import rowcount
from shared.jobs.models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, TIMED_OUT, Job


def get(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session, kinds: Iterable[str], *, kind: str | None = None, state: str | None = None, before: int | None = None, limit: int = 50
) -> list[Job]:
    q = select(Job).where(Job.kind.in_(list(kinds)))
    if kind:
        q = q.where(Job.kind == kind)
    if state:
        q = q.where(Job.state == state)
    if before is not None:
        q = q.where(Job.id < before)
    return list(session.scalars(q.order_by(Job.id.desc()).limit(limit)))


def active_count(session: Session, created_by: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.created_by == created_by, Job.state.in_((QUEUED, RUNNING)))) or 0


def has_work(session: Session, kinds: Iterable[str], now: datetime) -> bool:
    """A queued job of ``kinds``, or an expired lease to settle? (A read, so an idle
    worker's poll never takes SQLite's write lock.)"""
    q = (
        select(Job.id)
        .where((Job.state == QUEUED) & Job.kind.in_(list(kinds)) | (Job.state == RUNNING) & (Job.lease_expires_at < now))
        .limit(1)
    )
    return session.scalar(q) is not None


def reap_expired(session: Session, now: datetime, max_attempts: int) -> int:
    """Settle running jobs whose worker stopped renewing its lease (it died, or hangs in
    one step): past the deadline -> timed_out; cancel requested -> cancelled; run
    ``max_attempts`` times already -> failed (worker_lost); else back to queued, to be
    run again from the start. Set-based; returns how many rows changed."""
    expired = and_(Job.state == RUNNING, Job.lease_expires_at < now)
    done = dict(lease_owner=None, lease_expires_at=None, finished_at=now, updated_at=now)
    n = rowcount(
        session.execute(
            update(Job)
            .where(expired, Job.deadline <= now)
            .values(
                state=TIMED_OUT,
                error={"error": "timed_out", "detail": "the job was still running at its deadline and its worker stopped reporting"},
                **done,
            )
        )
    )
    n += rowcount(
        session.execute(
            update(Job)
            .where(expired, Job.cancel_requested_at.is_not(None))
            .values(state=CANCELLED, error={"error": "cancelled", "detail": "cancelled while its worker was lost"}, **done)
        )
    )
    n += rowcount(
        session.execute(
            update(Job)
            .where(expired, Job.attempts >= max_attempts)
            .values(
                state=FAILED,
                error={
                    "error": "worker_lost",
                    "detail": f"the worker running it stopped {max_attempts} times (crash, kill or hang); not retried",
                },
                **done,
            )
        )
    )
    n += rowcount(
        session.execute(
            update(Job)
            .where(expired)
            .values(
                state=QUEUED,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
                progress_message="re-queued: its worker stopped reporting",
            )
        )
    )
    return n


def claim(session: Session, owner: str, kinds: Iterable[str], now: datetime, lease: timedelta, job_id: int | None = None) -> Job | None:
    """Take the oldest queued job of ``kinds`` (or job ``job_id``) for ``owner``. On
    PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers claim side by side; on
    SQLite the transaction holds the write lock, so claims are serialised."""
    q = select(Job).where(Job.state == QUEUED, Job.kind.in_(list(kinds)))
    if job_id is not None:
        q = q.where(Job.id == job_id)
    q = q.order_by(Job.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    job = session.scalar(q)
    if job is None:
        return None
    job.state = RUNNING
    job.lease_owner = owner
    job.lease_expires_at = now + lease
    job.attempts += 1
    job.started_at = job.started_at or now
    job.deadline = job.deadline or now + timedelta(seconds=job.time_limit_seconds)
    job.updated_at = now
    job.progress_message = "running" if job.attempts == 1 else f"running (attempt {job.attempts})"
    session.flush()
    return job


def _held(job_id: int, owner: str) -> ColumnElement[bool]:
    """The job while ``owner`` still runs it: the fence on every write a runner makes."""
    return and_(Job.id == job_id, Job.lease_owner == owner, Job.state == RUNNING)


def _write_held(session: Session, job_id: int, owner: str, **values: Any) -> bool:
    """Write ``values`` if ``owner`` still holds the job; False (nothing written) if it
    lost the lease."""
    return rowcount(session.execute(update(Job).where(_held(job_id, owner)).values(**values))) == 1


def heartbeat(
    session: Session, job_id: int, owner: str, now: datetime, lease: timedelta, done: int, total: int | None, message: str
) -> tuple[datetime | None, str | None] | None:
    """Record progress and renew the lease. Returns (cancel_requested_at,
    cancel_requested_by), or None when ``owner`` no longer holds the job."""
    row = session.execute(
        update(Job)
        .where(_held(job_id, owner))
        .values(progress_done=done, progress_total=total, progress_message=message[:500], lease_expires_at=now + lease, updated_at=now)
        .returning(Job.cancel_requested_at, Job.cancel_requested_by)
    ).first()
    return None if row is None else (row[0], row[1])


def finish(
    session: Session,
    job_id: int,
    owner: str,
    now: datetime,
    state: str,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    progress: tuple[int, int | None, str] | None = None,
) -> bool:
    """End ``owner``'s run of the job (with its last progress); False (nothing
    written) if it lost the lease."""
    assert state in FINISHED
    values: dict[str, Any] = {}
    if progress is not None:
        values = dict(progress_done=progress[0], progress_total=progress[1], progress_message=progress[2][:500])
    return _write_held(
        session,
        job_id,
        owner,
        state=state,
        result=result,
        error=error,
        finished_at=now,
        updated_at=now,
        lease_owner=None,
        lease_expires_at=None,
        **values,
    )


def release(session: Session, job_id: int, owner: str, now: datetime) -> bool:
    """Give a job back to the queue (its worker is stopping): the run does not count."""
    return _write_held(
        session,
        job_id,
        owner,
        state=QUEUED,
        lease_owner=None,
        lease_expires_at=None,
        attempts=Job.attempts - 1,
        updated_at=now,
        progress_message="re-queued: its worker stopped",
    )


def request_cancel(session: Session, job: Job, actor: str, now: datetime) -> None:
    """A queued job is cancelled at once; a running one is asked to stop (its runner
    checks between steps)."""
    job.cancel_requested_at = job.cancel_requested_at or now
    job.cancel_requested_by = job.cancel_requested_by or actor
    job.updated_at = now
    if job.state == QUEUED:
        job.state = CANCELLED
        job.finished_at = now
        job.error = {"error": "cancelled", "detail": f"cancelled by {actor} before it started"}
    session.flush()


def prune_finished(session: Session, before: datetime, limit: int = 1000) -> int:
    ids = list(session.scalars(select(Job.id).where(Job.state.in_(FINISHED), Job.finished_at < before).limit(limit)))
    if ids:
        session.execute(delete(Job).where(Job.id.in_(ids)))
    return len(ids)
