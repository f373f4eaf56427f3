"""Templates: the list, creating one, and the editor. Save validates exactly as the API
does (compile and render against the sample context); preview renders the text in the
editor for an account and a contact picked in the form (an account search, then the
account's contacts in a select) without saving it. The rendered HTML is shown in a
sandboxed iframe (no script, no same-origin access)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.console.web import CSP_EMAIL_PREVIEW, OPS, Form, FormDep, Viewer, now_of, render, seg
from services.ingest import interface as ingest
from services.outreach import interface as outreach
from shared.api import SessionDep, context_of
from shared.errors import TouchlineError

router = APIRouter()
FIELDS = ("name", "description", "subject", "html_body", "text_body")
AUDIENCES = ("customer", "internal")
PICKER_SHOWN = 20  # accounts the preview's search lists
CONTACTS_SHOWN = 200  # contacts of the picked account offered in the select
NEW_TEMPLATE = {
    "name": "",
    "description": "",
    "subject": "{{ recipient.first_name }}, a note about {{ account.name }}",
    "html_body": '<p>Hi {{ recipient.first_name }},</p>\n<p>...</p>\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text_body": "Hi {{ recipient.first_name }},\n\n...\n\nUnsubscribe: {{ unsubscribe_url }}",
}


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
    session: Session | None = None,
    q: str = "",
    audience: str = "customer",
    new: bool = False,
) -> HTMLResponse:
    found = ingest.find_accounts(session, q, offset=0, limit=PICKER_SHOWN)[0] if session is not None and q.strip() else []
    account = ingest.accounts(session, [account_id]).get(account_id) if session is not None and account_id else None
    contacts = (
        ingest.list_users(session, account_id, role=None, after=None, limit=CONTACTS_SHOWN)
        if session is not None and account is not None
        else []
    )
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
        q=q,
        found=found,
        account=account,
        contacts=contacts,
        audience=audience,
        audiences=AUDIENCES,
        new=new,
    )
    if preview is not None:
        response.headers["Content-Security-Policy"] = CSP_EMAIL_PREVIEW
    return response


@router.get("/templates/new")
def new_template(request: Request, viewer: Viewer = OPS) -> Response:
    return _page(request, "", dict(NEW_TEMPLATE), new=True)


@router.post("/templates/new")
def create_template(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    return _handle(request, session, viewer, form, form.get("id", "").strip(), None)


@router.get("/templates/{template_id}")
def template(request: Request, template_id: str, saved: bool = False, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    row = outreach.get_template(session, template_id)
    values = {f: getattr(row, f) for f in FIELDS}
    return _page(request, template_id, values, saved=saved, version=row.version, audience=row.audience)


@router.post("/templates/{template_id}")
def save_or_preview(
    request: Request, template_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    return _handle(request, session, viewer, form, template_id, outreach.get_template(session, template_id))


def _handle(request: Request, session: Session, viewer: Viewer, form: Form, template_id: str, row: Any) -> Response:
    """Find accounts for the preview, preview, or save: ``row`` is the stored template
    (None: creating ``template_id``, whose audience the form chooses; a stored one keeps its own)."""
    settings = context_of(request).settings
    values = {f: form.get(f, "").replace("\r\n", "\n") for f in FIELDS}
    account_id, user_id = form.get("account_id", "").strip(), form.get("user_id", "").strip()
    audience = row.audience if row is not None else form.get("audience", "customer")
    sample_context = (row.sample_context or {}) if row is not None else {}
    version = row.version if row is not None else None
    action = form.get("action")
    if action == "find":  # a new search drops the account picked before it
        account_id = user_id = ""

    def page(**kw: Any) -> HTMLResponse:
        kw.setdefault("account_id", account_id)
        kw.setdefault("user_id", user_id)
        return _page(
            request, template_id, values, version=version, session=session, q=form.get("q", ""), audience=audience, new=row is None, **kw
        )

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
            version=version,
            audience=audience,
            new=row is None,
        )
    if action == "find":
        return page()
    if row is None:
        problem = None
        if not re.fullmatch(outreach.TEMPLATE_ID_PATTERN, template_id):
            problem = "1 to 128 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        elif outreach.find_template(session, template_id) is not None:
            problem = f"a template {template_id!r} exists already: edit it instead"
        if audience not in AUDIENCES:
            return page(status_code=422, errors={"audience": "customer or internal"})
        if problem:
            return page(status_code=422, errors={"id": problem})
    if action == "preview":
        if not account_id:
            return page(status_code=422, preview_error="pick an account first: find it by name, id or email domain")
        draft = outreach.Template(
            id=template_id or "new",
            version=version or 0,
            sample_context=sample_context,
            audience=audience,
            **{f: values[f] for f in FIELDS},
        )
        try:
            rendered, _ctx = outreach.template_preview(
                session, draft, account_id=account_id, user_id=user_id or None, signal=None, settings=settings
            )
        except TouchlineError as exc:
            return page(status_code=exc.status_code, preview_error=exc.detail)
        return page(preview=rendered)
    try:
        body = outreach.TemplateIn(**values, audience=audience, sample_context=sample_context)
        outreach.save_template(session, template_id, body, settings=settings, actor=viewer.principal.actor, now=now_of(request))
    except ValidationError as exc:
        return page(status_code=422, errors={str(e["loc"][0]): e["msg"] for e in exc.errors()})
    except TouchlineError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {"part": "", "message": str(exc.detail)}
        part = str(detail["part"]) if detail.get("part") in outreach.TEMPLATE_PARTS else "subject"
        return page(status_code=exc.status_code, errors={part: detail.get("message")})
    return RedirectResponse(f"/console/templates/{seg(template_id)}?saved=1", status_code=303)
