"""The jobs API: read, list and cancel background jobs. A role sees the jobs of the
kinds it may run (ops: backtests); admin sees all."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from shared.api import ClockDep, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, Conflict, Forbidden, NotFound, Unprocessable, responses
from shared.jobs import service
from shared.jobs.models import STATES
from shared.jobs.schemas import JobOut, JobPage
from shared.limits import DB_INT_MAX
from shared.pagination import NUMBER_CURSOR_PATTERN, decode_number_cursor, next_key

router = APIRouter(tags=["jobs"])
ANY_ROLE = ("ingest", "ops", "csm")


def job_reader(p: Principal = require(*ANY_ROLE)) -> Principal:
    """A key whose role may run some kind of job (the kinds register their roles)."""
    if not service.visible_kinds(p.role):
        raise Forbidden(
            f"no job kind is open to role {p.role!r}; jobs need role "
            f"{' or '.join(sorted({r for k in service.KINDS.values() for r in k.roles} | {'admin'}))}"
        )
    return p


JobReader = Depends(job_reader)


@router.get(
    "/v1/jobs",
    response_model=JobPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="List the jobs your role may see, newest first",
)
def list_jobs(
    kind: str | None = None,
    state: str | None = Query(None, description=", ".join(STATES)),
    cursor: str | None = Query(None, pattern=NUMBER_CURSOR_PATTERN, description="next_cursor of the previous page"),
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    p: Principal = JobReader,
) -> JobPage:
    if state is not None and state not in STATES:
        raise Unprocessable([{"pointer": "/state", "message": f"unknown state {state!r}; one of {', '.join(STATES)}"}])
    items = service.list_visible(session, p.role, kind=kind, state=state, before=decode_number_cursor(cursor), limit=limit)
    return JobPage(items=[JobOut.of(j) for j in items], next_cursor=next_key(items, limit, lambda j: str(j.id)))


# Ids beyond what the column stores are a 422, never a database overflow (500).
JOB_ID = Path(ge=1, le=DB_INT_MAX)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="A job's state, progress and, once finished, its result or error",
)
def get_job(job_id: int = JOB_ID, session: Session = SessionDep, p: Principal = JobReader) -> JobOut:
    return JobOut.of(service.get_visible(session, job_id, p.role))


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Conflict)},
    summary="Cancel a job: a queued one at once, a running one at its next step; 409 if it already finished",
)
def cancel_job(job_id: int = JOB_ID, session: Session = SessionDep, clock: Clock = ClockDep, p: Principal = JobReader) -> JobOut:
    return JobOut.of(service.cancel(session, job_id, p.role, p.actor, clock.now()))
