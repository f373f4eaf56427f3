"""Authoring the content library in the console (issue 23, item 1; docs/content.md):
create, edit and delete a resource, and import many from YAML or CSV text. A resource's
form is validated as ``PUT /v1/resources/{id}`` validates its body (``parse_resource``:
each problem beside the field its JSON pointer names); an import is the importer
``touchline content import`` runs (all or nothing, each problem with its row). Saving
is the API's (a changed definition is a new version, audited); deleting too. CS Ops
only; the library's pages (measured.py) are for CSMs as well."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.outreach import interface as outreach
from shared.api import SessionDep, context_of
from shared.errors import NotFound, TouchlineError

router = APIRouter()
TEXT_FIELDS = ("title", "url", "summary", "language")
IMPORT_FORMATS = ("yaml", "csv")
IMPORT_EXAMPLE = """- id: first-reports-guide
  kind: article
  title: Five reports every analytics team starts with
  url: https://docs.example.com/guides/first-reports
  goals: [adoption]
  use_cases: [analytics]
"""


def _values(row: Any = None) -> dict[str, Any]:
    """The form's values: a saved resource's, or a new one's defaults."""
    if row is None:
        return {"kind": "article", "title": "", "url": "", "summary": "", "language": "en", "enabled": True, "goals": [], "roles": []} | {
            t: "" for t in outreach.RESOURCE_TAGS if t not in ("goals", "roles")
        }
    values: dict[str, Any] = {f: getattr(row, f) for f in ("kind", *TEXT_FIELDS, "enabled", "goals", "roles")}
    for t in outreach.RESOURCE_TAGS:
        if t not in ("goals", "roles"):
            values[t] = ", ".join(getattr(row, t))
    return values


def _page(
    request: Request, resource_id: str, values: dict[str, Any], *, new: bool, status_code: int = 200, errors: dict[str, str] | None = None
) -> HTMLResponse:
    return render(
        request,
        "resource_edit.html",
        status_code=status_code,
        new=new,
        resource_id=resource_id,
        values=values,
        errors=errors or {},
        kinds=outreach.RESOURCE_KINDS,
        goals=outreach.RESOURCE_GOALS,
        roles=outreach.RESOURCE_ROLES,
        tag_fields=[t for t in outreach.RESOURCE_TAGS if t not in ("goals", "roles")],
    )


def _posted(form: Form) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the form shows again, the body as the API would get it)."""
    values: dict[str, Any] = {f: form.get(f, "") for f in ("kind", *TEXT_FIELDS)}
    values["enabled"] = form.get("enabled") == "on"
    values["goals"] = [g for g in outreach.RESOURCE_GOALS if form.get(f"goal-{g}") == "on"]
    values["roles"] = [r for r in outreach.RESOURCE_ROLES if form.get(f"role-{r}") == "on"]
    body: dict[str, Any] = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
    for t in outreach.RESOURCE_TAGS:
        if t not in ("goals", "roles"):
            values[t] = form.get(t, "")
            body[t] = [w.strip() for w in values[t].split(",") if w.strip()]
    return values, body


def _beside(detail: Any) -> dict[str, str]:
    """The API's 422 ``{pointer, message}`` list as field -> message (``/goals/0`` -> goals)."""
    out: dict[str, str] = {}
    for e in detail if isinstance(detail, list) else [{"pointer": "", "message": str(detail)}]:
        field = (e.get("pointer") or "").strip("/").split("/")[0] or "form"
        out[field] = f"{out[field]}; {e.get('message')}" if field in out else str(e.get("message"))
    return out


def _exists(session: Session, resource_id: str) -> bool:
    try:
        outreach.get_resource(session, resource_id)
    except NotFound:
        return False
    return True


def _save(request: Request, session: Session, viewer: Viewer, form: Form, resource_id: str, *, new: bool) -> Response:
    values, body = _posted(form)
    if form.problems:
        return _page(request, resource_id, values, new=new, status_code=422, errors=dict(form.problems))
    if new:
        problem = None
        if not re.fullmatch(outreach.RESOURCE_ID_PATTERN, resource_id):
            problem = "a lower-case slug: a-z, 0-9, '.', '_' and '-', starting with a letter or digit, at most 128"
        elif _exists(session, resource_id):
            problem = f"a resource {resource_id!r} exists already; edit it instead"
        if problem:
            return _page(request, resource_id, values, new=new, status_code=422, errors={"id": problem})
    try:
        parsed = outreach.parse_resource(body)
        outreach.save_resource(session, resource_id, parsed, actor=viewer.principal.actor, now=now_of(request))
    except TouchlineError as exc:
        if exc.status_code == 404:
            raise
        return _page(request, resource_id, values, new=new, status_code=exc.status_code, errors=_beside(exc.detail))
    return RedirectResponse(f"/console/resources/{seg(resource_id)}?saved=1", status_code=303)


@router.get("/resources/new")
def new_resource(request: Request, viewer: Viewer = OPS) -> HTMLResponse:
    return _page(request, "", _values(), new=True)


@router.post("/resources/new")
def create_resource(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    return _save(request, session, viewer, form, form.get("id", "").strip(), new=True)


@router.get("/resources/import")
def import_form(request: Request, viewer: Viewer = OPS) -> HTMLResponse:
    return render(request, "resource_import.html", text=IMPORT_EXAMPLE, format="yaml", formats=IMPORT_FORMATS, outcomes=None, error="")


@router.post("/resources/import")
def import_resources(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """The text as ``touchline content import`` reads a file of that format: all or
    nothing; 422 with each row's problems when one is invalid."""
    text, fmt = form.get("text", "").replace("\r\n", "\n"), form.get("format", "yaml")

    def page(status_code: int, outcomes: Any = None, error: str = "") -> HTMLResponse:
        return render(
            request,
            "resource_import.html",
            status_code=status_code,
            text=text,
            format=fmt,
            formats=IMPORT_FORMATS,
            outcomes=outcomes,
            error=error,
        )

    if form.problems:
        return page(422, error=form.problem_text())
    if fmt not in IMPORT_FORMATS:
        return page(422, error="format: yaml or csv")
    outcomes = outreach.import_resources_text(
        session,
        f"pasted.{fmt}",
        text,
        actor=viewer.principal.actor,
        now=now_of(request),
        max_depth=context_of(request).settings.max_json_depth,
    )
    if any(o.action == "invalid" for o in outcomes):
        return page(422, outcomes)
    return page(200, outcomes)


@router.get("/resources/{resource_id}/edit")
def edit_resource(request: Request, resource_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    return _page(request, resource_id, _values(outreach.get_resource(session, resource_id)), new=False)


@router.post("/resources/{resource_id}/edit")
def save_resource(
    request: Request, resource_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    outreach.get_resource(session, resource_id)  # editing saves an existing one; a new id is created from New resource
    return _save(request, session, viewer, form, resource_id, new=False)


@router.post("/resources/{resource_id}/delete")
def delete_resource(
    request: Request, resource_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep
) -> Response:
    """As ``DELETE /v1/resources/{id}``: messages that sent it keep its id, so nobody receives it twice."""
    outreach.delete_resource(session, resource_id, actor=viewer.principal.actor, now=now_of(request))
    return RedirectResponse(f"/console/resources?deleted={seg(resource_id)}", status_code=303)
