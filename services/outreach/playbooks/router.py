"""Playbooks: author over JSON or YAML (each change is a new version), read, list
enrolments, and the report with lift against the holdout."""

from __future__ import annotations

import json

import yaml
from fastapi import APIRouter, Path, Query, Request
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.outreach.playbooks import repository as repo
from services.outreach.playbooks import service
from services.outreach.playbooks.schemas import (
    ID_PATTERN,
    EnrollmentPage,
    PlaybookDefinition,
    PlaybookOut,
    PlaybookPage,
    ReportOut,
    SegmentReportOut,
)
from shared.api import BodyDep, ClockDep, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, PayloadTooLarge, Unprocessable, pointer_errors, responses
from shared.limits import DB_INT_MAX
from shared.pagination import next_key

router = APIRouter(tags=["playbooks"])
MAX_BODY = 256 * 1024
_DEFINITION_SCHEMA = PlaybookDefinition.model_json_schema(ref_template="#/components/schemas/{model}")


class _PlainYamlLoader(yaml.SafeLoader):
    """YAML without aliases: ``*ref`` lets a 1 KiB document expand to billions of nodes
    for whoever walks it (the "billion laughs"); a playbook never needs one."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a playbook", event.start_mark)
        return super().compose_node(parent, index)


def parse_definition(raw: bytes, content_type: str) -> PlaybookDefinition:
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"a playbook definition is at most {MAX_BODY} bytes")
    try:
        if "yaml" in content_type:
            obj = yaml.load(raw.decode("utf-8"), Loader=_PlainYamlLoader)  # noqa: S506 (a SafeLoader)
        else:
            obj = json.loads(raw)
    except RecursionError:
        raise Unprocessable("the body nests too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise Unprocessable(f"the body is not valid {'YAML' if 'yaml' in content_type else 'JSON'}: {exc}") from None
    if not isinstance(obj, dict):
        raise Unprocessable("a playbook definition is an object (a mapping in YAML)")
    try:
        return PlaybookDefinition.model_validate(obj)
    except ValidationError as exc:
        raise Unprocessable(pointer_errors(exc), code="playbook_invalid") from None


@router.put(
    "/v1/playbooks/{playbook_id}",
    response_model=PlaybookOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable, PayloadTooLarge)},
    summary="Create or change a playbook (JSON, or YAML with Content-Type: application/yaml)",
    description="A changed definition becomes a new version; running enrolments keep theirs.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _DEFINITION_SCHEMA}, "application/yaml": {"schema": _DEFINITION_SCHEMA}},
        }
    },
)
def put_playbook(
    request: Request,
    playbook_id: str = Path(pattern=ID_PATTERN),
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    principal: Principal = require("ops"),
    body: bytes = BodyDep,
) -> PlaybookOut:
    definition = parse_definition(body, request.headers.get("content-type", ""))
    head, _changed = service.save(session, playbook_id, definition, actor=principal.actor, now=clock.now())
    return service.out(session, head)


@router.get("/v1/playbooks", response_model=PlaybookPage, responses=AUTH_ERRORS, summary="Playbooks by id, in pages")
def list_playbooks(
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> PlaybookPage:
    heads = repo.list_heads(session, after=cursor, limit=limit)
    return PlaybookPage(items=[service.out(session, h) for h in heads], next_cursor=next_key(heads, limit, lambda h: h.id))


@router.get("/v1/playbooks/{playbook_id}", response_model=PlaybookOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_playbook(
    playbook_id: str, version: int | None = Query(None, ge=1, le=DB_INT_MAX), session: Session = SessionDep, _p: Principal = require("ops")
) -> PlaybookOut:
    return service.out(session, service.get_or_404(session, playbook_id), version)


@router.get(
    "/v1/playbooks/{playbook_id}/enrollments",
    response_model=EnrollmentPage,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Enrolments, newest first, in pages",
)
def list_enrollments(
    playbook_id: str,
    status: str | None = None,
    account_id: str | None = None,
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> EnrollmentPage:
    service.get_or_404(session, playbook_id)
    items = repo.list_enrollments(session, playbook_id, status=status, account_id=account_id, limit=limit, before=cursor)
    return EnrollmentPage(items=items, next_cursor=next_key(items, limit, lambda x: x.id))


@router.get(
    "/v1/playbooks/{playbook_id}/report",
    response_model=ReportOut,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Enrolled, sent, skipped by reason, converted; treated vs holdout conversion with lift and 95% CI",
)
def playbook_report(playbook_id: str, session: Session = SessionDep, _p: Principal = require("ops")) -> ReportOut:
    return service.report(session, playbook_id)


@router.get(
    "/v1/playbooks/{playbook_id}/report/segments",
    response_model=SegmentReportOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Treated vs holdout conversion, lift and 95% CI among each named segment's members as of their enrolment",
)
def playbook_report_by_segment(
    playbook_id: str,
    segment: list[str] = Query(..., max_length=service.SEGMENT_REPORT_MAX, description="a named segment's id; repeat for several"),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> SegmentReportOut:
    return service.report_by_segment(session, playbook_id, segment)
