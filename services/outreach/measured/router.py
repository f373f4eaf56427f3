"""The per-resource and per-survey reports over HTTP (ops, csm): counts and lifts only,
no account is named."""

from __future__ import annotations

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session

from services.outreach.content.schemas import ID_PATTERN
from services.outreach.measured import service
from services.outreach.measured.service import ResourceReport, SurveyReport
from shared.api import SessionDep
from shared.auth import Principal, require
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses

router = APIRouter()
SEGMENT = Query(None, description="a named segment's id; repeat for several (at most 20); default: every segment, in pages of 20")
SEGMENT_CURSOR = Query(None, max_length=128, description="segments_next_cursor from the previous page")


@router.get(
    "/v1/resources/{resource_id}/report",
    tags=["content"],
    response_model=ResourceReport,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="A resource's report: sent, contacts who clicked, and the conversion of the enrolments sent it against the held-out ones "
    "(lift, 95% CI), overall, per step and per named segment",
)
def resource_report(
    resource_id: str = Path(pattern=ID_PATTERN, description="lower-case slug, e.g. first-reports-guide"),
    segment: list[str] | None = SEGMENT,
    segment_cursor: str | None = SEGMENT_CURSOR,
    session: Session = SessionDep,
    _p: Principal = require("ops", "csm"),
) -> ResourceReport:
    return service.resource_report(session, resource_id, segment, segment_cursor)


@router.get(
    "/v1/surveys/{survey_id}/report",
    tags=["surveys"],
    response_model=SurveyReport,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="A survey's report: sent, contacts who answered, and the conversion of the enrolments sent it against the held-out ones "
    "(lift, 95% CI), overall, per step and per named segment",
)
def survey_report(
    survey_id: str = Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$"),
    segment: list[str] | None = SEGMENT,
    segment_cursor: str | None = SEGMENT_CURSOR,
    session: Session = SessionDep,
    _p: Principal = require("ops", "csm"),
) -> SurveyReport:
    return service.survey_report(session, survey_id, segment, segment_cursor)
