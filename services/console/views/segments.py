"""Named segments in the console (issue 22, item 1; docs/segments.md): the list with
each segment's size, and a segment's page with its definition, its size per day (a
chart with its data table), its versions and audit, and its members, in pages. CS Ops
only, like the rules. Every figure is the rules service's (its door).

Authoring (issue 23, item 1): create and edit in YAML (or JSON), parsed and validated
as ``POST /v1/segments`` and ``PUT /v1/segments/{id}`` do (the rule language's
``parse_segment``), each problem under the line its JSON pointer names; *Preview*
counts the members the text would have now (the tick's own matching, nothing written);
versions with a diff; delete (the API's soft delete)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from services.console import charts
from services.console.views.rules import definition_diff, errors_of, numbered, parse_text, refuse_form_problems, to_text
from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.rules import interface as rules
from shared.api import SessionDep, context_of
from shared.errors import TouchlineError

router = APIRouter()
SIZE_DAYS = 30
MEMBERS_PAGE = 50

NEW_SEGMENT = """id: my-segment
name: My segment
description: ""
audience: {lifecycle_stage: [active]}
condition:
  all:
    - {field: account.traits.industry, op: "==", value: fintech}
"""


@router.get("/segments")
def segments_list(
    request: Request,
    deleted: str = Query("", max_length=128, description="the segment just deleted (said above the list)"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    items = rules.list_segments(session, limit=1000)
    sizes = rules.segment_member_counts(session, [s.id for s in items])
    rows = [{"segment": s, "size": sizes.get(s.id, 0), "definition": rules.current_segment_definition(session, s)} for s in items]
    return render(request, "segments.html", rows=rows, deleted=deleted)


def _editor(
    request: Request,
    session: Session,
    segment: Any,
    text: str,
    exc: TouchlineError | None = None,
    preview: int | None = None,
) -> HTMLResponse:
    """The editor with ``text``: after a refused save or preview, ``exc``'s errors under
    their lines (and its status); after a preview, the members the text would have now."""
    errors = errors_of(text, exc) if exc is not None else []
    return render(
        request,
        "segment_edit.html",
        status_code=exc.status_code if exc is not None else 200,
        segment=segment,
        text=text,
        errors=errors,
        lines=numbered(text, errors) if exc is not None else [],
        preview=preview,
        current_size=rules.segment_member_counts(session, [segment.id]).get(segment.id, 0) if segment and preview is not None else None,
    )


def _submit(request: Request, session: Session, viewer: Viewer, form: Form, segment: Any) -> Response:
    """Parse the text as the API does; then preview it, or save it (create or a new version)."""
    text = form.get("definition", "").replace("\r\n", "\n")
    settings, now = context_of(request).settings, now_of(request)
    try:
        refuse_form_problems(form, text)
        definition = rules.parse_segment(
            parse_text(text, settings.max_json_depth), settings.raw_event_retention_days, segment.id if segment else None
        )
        if form.get("action") == "preview":
            return _editor(request, session, segment, text, preview=rules.preview_segment_size(session, definition, now))
        if segment is None:
            saved = rules.create_segment(session, definition, viewer.principal.actor, now)
        else:
            saved, _changed = rules.update_segment(session, segment.id, definition, viewer.principal.actor, now)
    except TouchlineError as exc:
        return _editor(request, session, segment, text, exc)
    return RedirectResponse(f"/console/segments/{seg(saved.id)}?saved=1", status_code=303)


@router.get("/segments/new")
def new_segment(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    return _editor(request, session, None, NEW_SEGMENT)


@router.post("/segments/new")
def create_segment(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    return _submit(request, session, viewer, form, None)


@router.get("/segments/{segment_id}/edit")
def edit_segment(request: Request, segment_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    segment = rules.get_segment(session, segment_id, include_deleted=False)
    return _editor(request, session, segment, to_text(rules.current_segment_definition(session, segment)))


@router.post("/segments/{segment_id}/edit")
def save_segment(request: Request, segment_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    return _submit(request, session, viewer, form, rules.get_segment(session, segment_id, include_deleted=False))


@router.post("/segments/{segment_id}/delete")
def delete_segment(
    request: Request, segment_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep
) -> Response:
    """The API's soft delete: it stops being refreshed and its members are dropped;
    versions, audit and sizes stay readable (a new segment of that id continues them)."""
    rules.delete_segment(session, segment_id, viewer.principal.actor, now_of(request))
    return RedirectResponse("/console/segments?deleted=" + seg(segment_id), status_code=303)


@router.get("/segments/{segment_id}/versions")
def segment_versions(
    request: Request,
    segment_id: str,
    a: int = Query(0, ge=0, le=2**31 - 1, description="the older version"),
    b: int = Query(0, ge=0, le=2**31 - 1, description="the newer version"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """Two versions' definitions as YAML and the unified diff from ``a`` to ``b``
    (default: the one before the current, and the current), as a playbook's."""
    segment = rules.get_segment(session, segment_id)
    versions = {v.version: v for v in rules.list_segment_versions(session, segment.id)}
    b = b if b in versions else segment.current_version
    a = a if a in versions else max(1, b - 1)
    diff = definition_diff(versions[a].definition, versions[b].definition, a, b)
    return render(
        request,
        "segment_versions.html",
        segment=segment,
        versions=list(versions),
        audit=rules.segment_audit(session, segment.id),
        a=a,
        b=b,
        diff=diff,
    )


def size_chart(session: Session, segment_id: str, name: str, today: Any) -> tuple[Markup | None, list[Any]]:
    """The last 30 UTC days' sizes (the days the tick measured) as a line with its table."""
    start = today - timedelta(days=SIZE_DAYS - 1)
    rows = rules.segment_sizes(session, segment_id, start, today)
    if not rows:
        return None, []
    chart = charts.lines(
        f"Size of {name}, last {SIZE_DAYS} days",
        [r.day.isoformat() for r in rows],
        {"accounts": [float(r.size) for r in rows]},
        x_label="Day",
        y_label="Accounts",
    )
    return chart, rows


@router.get("/segments/{segment_id}")
def segment_page(
    request: Request,
    segment_id: str,
    after: str = Query("", max_length=128, description="the members after this account id (the next page)"),
    saved: bool = False,
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    segment = rules.get_segment(session, segment_id, include_deleted=False)
    definition = rules.current_segment_definition(session, segment)
    chart, sizes = size_chart(session, segment.id, segment.name, now_of(request).date())
    members = rules.list_segment_members(session, segment.id, after=after or None, limit=MEMBERS_PAGE)
    total = rules.segment_member_counts(session, [segment.id]).get(segment.id, 0)
    return render(
        request,
        "segment.html",
        segment=segment,
        definition=definition,
        chart=chart,
        sizes=sizes,
        members=members,
        total=total,
        after=after,
        saved=saved,
        next_after=members[-1].account_id if len(members) == MEMBERS_PAGE else "",
    )
