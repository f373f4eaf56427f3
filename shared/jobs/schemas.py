"""Pydantic shapes of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.jobs.models import Job


class JobProgress(BaseModel):
    done: int
    total: int | None = Field(None, description="steps in all, once the job knows")
    message: str = ""


class JobOut(BaseModel):
    id: int
    kind: str
    state: str = Field(description="queued, running, succeeded, failed, cancelled or timed_out")
    params: dict[str, Any]
    progress: JobProgress
    result: Any = Field(None, description="the job's answer once it succeeded (for rules.backtest: the backtest result)")
    error: dict[str, Any] | None = Field(None, description='why it did not succeed: {"error": code, "detail": ...}')
    created_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    time_limit_seconds: float
    deadline: datetime | None = Field(None, description="when a running job is stopped as timed_out")
    cancel_requested_at: datetime | None = None
    attempts: int = Field(description="runs started; above 1 means a worker died and the job was re-run")
    url: str = Field(description="poll this")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            params=job.params or {},
            progress=JobProgress(done=job.progress_done or 0, total=job.progress_total, message=job.progress_message or ""),
            result=job.result,
            error=job.error,
            created_by=job.created_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            time_limit_seconds=job.time_limit_seconds,
            deadline=job.deadline,
            cancel_requested_at=job.cancel_requested_at,
            attempts=job.attempts,
            url=f"/v1/jobs/{job.id}",
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = None
