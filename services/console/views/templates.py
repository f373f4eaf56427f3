"""Templates: the list and the editor. Save validates exactly as the API does (compile
and render against the sample context); preview renders the text in the editor for
a chosen account and contact without saving it. The rendered HTML is shown in a
sandboxed iframe (no script, no same-origin access)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.console.web import CSP_EMAIL_PREVIEW, OPS, Form, FormDep, Viewer, now_of, render
from services.outreach import interface as outreach
from shared.api import SessionDep, context_of
from shared.errors import TouchlineError

router = APIRouter()
FIELDS = ("name", "description", "subject", "html_body", "text_body")


@router.get("/templates")
def templates(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    return render(request, "templates.html", templates=outreach.list_templates(session))


def _page(
    request: Request,
    template_id: str,
    values: dict[str, Any],
    *,
    status_code: int = 200,
    errors: dict[str, Any] | None = None,
    preview: Any = None,  # outreach.template_preview's Rendered
    preview_error: Any = None,
    account_id: str = "",
    user_id: str = "",
    saved: bool = False,
    version: int | None = None,
) -> HTMLResponse:
    response = render(
        request,
        "template_edit.html",
        status_code=status_code,
        template_id=template_id,
        values=values,
        errors=errors or {},
        preview=preview,
        preview_error=preview_error,
        account_id=account_id,
        user_id=user_id,
        saved=saved,
        version=version,
    )
    if preview is not None:
        response.headers["Content-Security-Policy"] = CSP_EMAIL_PREVIEW
    return response


@router.get("/templates/{template_id}")
def template(request: Request, template_id: str, saved: bool = False, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    row = outreach.get_template(session, template_id)
    return _page(request, template_id, {f: getattr(row, f) for f in FIELDS}, saved=saved, version=row.version)


@router.post("/templates/{template_id}")
def save_or_preview(
    request: Request, template_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    settings = context_of(request).settings
    values = {f: form.get(f, "").replace("\r\n", "\n") for f in FIELDS}
    row = outreach.get_template(session, template_id)
    account_id, user_id = form.get("account_id", "").strip(), form.get("user_id", "").strip()
    if form.problems:  # the API's input limits, beside their fields, before any lookup or save
        beside = {name: message for name, message in form.problems.items() if name in FIELDS}
        others = "; ".join(f"{name}: {message}" for name, message in form.problems.items() if name not in FIELDS)
        return _page(
            request,
            template_id,
            values,
            status_code=422,
            errors=beside,
            preview_error=others or None,
            account_id=account_id,
            user_id=user_id,
            version=row.version,
        )
    if form.get("action") == "preview":
        draft = outreach.Template(id=template_id, version=row.version, sample_context=row.sample_context, **{f: values[f] for f in FIELDS})
        try:
            rendered, _ctx = outreach.template_preview(
                session, draft, account_id=account_id, user_id=user_id or None, signal=None, settings=settings
            )
        except TouchlineError as exc:
            return _page(
                request,
                template_id,
                values,
                status_code=exc.status_code,
                preview_error=exc.detail,
                account_id=account_id,
                user_id=user_id,
                version=row.version,
            )
        return _page(request, template_id, values, preview=rendered, account_id=account_id, user_id=user_id, version=row.version)
    try:
        body = outreach.TemplateIn(**values, sample_context=row.sample_context or {})
        outreach.save_template(session, template_id, body, settings=settings, actor=viewer.principal.actor, now=now_of(request))
    except ValidationError as exc:
        errors = {str(e["loc"][0]): e["msg"] for e in exc.errors()}
        return _page(request, template_id, values, status_code=422, errors=errors, version=row.version)
    except TouchlineError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"part": "", "message": str(exc.detail)}
        part = str(detail["part"]) if detail.get("part") in outreach.TEMPLATE_PARTS else "subject"
        return _page(request, template_id, values, status_code=exc.status_code, errors={part: detail.get("message")}, version=row.version)
    return RedirectResponse(f"/console/templates/{template_id}?saved=1", status_code=303)
