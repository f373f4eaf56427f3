"""Templates: author (validated on save), list, read, preview against a real contact."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.outreach.models import Template
from services.outreach.templates import repository as repo
from services.outreach.templates import service
from services.outreach.templates.schemas import ID_PATTERN, PreviewIn, PreviewOut, TemplateIn, TemplateOut
from shared.api import ClockDep, ReadSessionDep, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.pagination import next_key
from shared.settings import Settings

router = APIRouter(tags=["templates"])
TemplateId = Path(pattern=ID_PATTERN, description="lower-case slug, e.g. win-back")


@router.put(
    "/v1/templates/{template_id}",
    response_model=TemplateOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Create or update a template; it is compiled and rendered against a sample context first",
)
def put_template(
    body: TemplateIn,
    template_id: str = TemplateId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    settings: Settings = SettingsDep,
    principal: Principal = require("ops"),
) -> Template:
    return service.save(session, template_id, body, settings=settings, actor=principal.actor, now=clock.now())


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None = None


@router.get("/v1/templates", response_model=TemplatePage, responses=AUTH_ERRORS, summary="Templates by id, in pages")
def list_templates(
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> TemplatePage:
    items = repo.list_all(session, after=cursor, limit=limit)
    return TemplatePage(items=items, next_cursor=next_key(items, limit, lambda t: t.id))


@router.get("/v1/templates/{template_id}", response_model=TemplateOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_template(template_id: str, session: Session = SessionDep, _p: Principal = require("ops")) -> Template:
    return service.get_or_404(session, template_id)


@router.post(
    "/v1/templates/{template_id}/preview",
    response_model=PreviewOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Render a saved template for a real account and contact (nothing is sent)",
)
def preview_template(
    template_id: str, body: PreviewIn, session: Session = ReadSessionDep, settings: Settings = SettingsDep, _p: Principal = require("ops")
) -> PreviewOut:
    template = service.get_or_404(session, template_id)
    rendered, ctx = service.preview_for(
        session, template, account_id=body.account_id, user_id=body.user_id, signal=body.signal, settings=settings
    )
    return PreviewOut(subject=rendered.subject, html_body=rendered.html_body, text_body=rendered.text_body, context=_jsonable(ctx))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
