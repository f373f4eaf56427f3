"""Authoring playbooks in the console: create and edit (YAML, the API's validation
under the line its JSON pointer names, the step-by-step flow of the text beside it),
enable and disable (a new version, as ``PUT /v1/playbooks/{id}`` with ``enabled``
changed makes one), a diff between two versions, and a dry-run for one account picked
from a search (the playbook engine's own step loop, rolled back: nothing is stored).
Every decision is the outreach service's."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from services.console.views.playbooks import flow
from services.console.views.rules import definition_diff, errors_of, numbered, parse_text, to_text
from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.ingest import interface as ingest
from services.outreach import interface as outreach
from shared.api import SessionDep, context_of
from shared.errors import TouchlineError, Unprocessable

router = APIRouter()
PICKER_SHOWN = 20  # accounts listed by the dry-run's picker

NEW_PLAYBOOK = """name: My playbook
enabled: false
trigger: {kinds: [churn_risk]}
holdout_percent: 10
steps:
  - {id: nudge, type: send, channel: email, template: usage-drop-check-in, to: [champion, admin]}
  - {id: pause, type: wait, duration: 3d}
  - {id: done, type: end, outcome: completed}
"""

# Why a recipient was skipped, in words (docs/playbooks.md, "Contact policy").
SKIP_REASONS = {
    "contact_cap": "the contact has had as many messages as the global contact cap allows for now",
    "playbook_contact_cap": "the contact has had as many messages of this playbook as its caps.contact allows",
    "account_cap": "the account has had as many touches as the global account cap allows for now",
    "playbook_account_cap": "the account has had as many touches of this playbook as its caps.account allows",
    "suppressed": "the address is on the suppression list (unsubscribed, bounced or suppressed by hand)",
    "erased": "the contact was erased on request",
    "no_email": "the contact has no email address",
    "no_recipients": "no contact of the account matches the step's to:",
    "template_missing": "the step's template does not exist",
    "render_error": "the template failed to render for this recipient",
    "no_resource": "no library resource fits the contact and no fallback they have not received",
    "no_contact": "the survey's recipient is not a known contact",
    "already_answered": "the contact has answered this survey already",
    "held_out": "the account is in the playbook's holdout",
    "in_engagement": "a pooled CSM holds the account (an open engagement): automation steps back",
    "cancelled": "the broadcast was cancelled before this message left",
    "wrong_audience": "customer copy never goes to an internal address, nor an internal template to a customer",
}


def _parse(request: Request, form: Form, text: str) -> Any:
    """The text as the API parses a YAML body (``PUT /v1/playbooks/{id}``), after the
    console's input limits (a NUL, the form's size, nesting: at their line)."""
    if form.problems:
        raise Unprocessable([{"pointer": "", "message": f"{name} {message}"} for name, message in form.problems.items()])
    parse_text(text, context_of(request).settings.max_json_depth)  # a syntax error at its line
    return outreach.parse_playbook_definition(text.encode("utf-8"), "application/yaml")


def _draft_flow(text: str) -> list[dict[str, Any]] | None:
    """The step-by-step view of the text in the editor, if it parses."""
    try:
        return flow(outreach.parse_playbook_definition(text.encode("utf-8"), "application/yaml"))
    except (TouchlineError, ValueError):
        return None


def _editor(
    request: Request,
    playbook_id: str | None,
    text: str,
    exc: TouchlineError | None = None,
    version: int | None = None,
    new_id: str = "",
) -> HTMLResponse:
    errors = errors_of(text, exc) if exc is not None else []
    return render(
        request,
        "playbook_edit.html",
        status_code=exc.status_code if exc is not None else 200,
        playbook_id=playbook_id,
        new_id=new_id,
        text=text,
        errors=errors,
        lines=numbered(text, errors) if exc is not None else [],
        steps=_draft_flow(text),
        version=version,
    )


@router.get("/playbooks/new")
def new_playbook(request: Request, viewer: Viewer = OPS) -> Response:
    return _editor(request, None, NEW_PLAYBOOK)


@router.post("/playbooks/new")
def create_playbook(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    text = form.get("definition", "").replace("\r\n", "\n")
    playbook_id = form.get("id", "").strip()
    try:
        if not re.fullmatch(outreach.PLAYBOOK_ID_PATTERN, playbook_id):
            raise Unprocessable([{"pointer": "", "message": "id: 1 to 128 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"}])
        if outreach.get_playbook_head(session, playbook_id) is not None:
            raise Unprocessable([{"pointer": "", "message": f"id: a playbook {playbook_id!r} exists already; edit it instead"}])
        definition = _parse(request, form, text)
        outreach.save_playbook(session, playbook_id, definition, actor=viewer.principal.actor, now=now_of(request))
    except TouchlineError as exc:
        return _editor(request, None, text, exc, new_id=playbook_id)
    return RedirectResponse(f"/console/playbooks/{seg(playbook_id)}?saved=1", status_code=303)


@router.get("/playbooks/{playbook_id}/edit")
def edit_playbook(request: Request, playbook_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    out = outreach.playbook_out(session, outreach.get_playbook(session, playbook_id))
    return _editor(request, playbook_id, to_text(out.definition), version=out.version)


@router.post("/playbooks/{playbook_id}/edit")
def save_playbook(
    request: Request, playbook_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    head = outreach.get_playbook(session, playbook_id)
    text = form.get("definition", "").replace("\r\n", "\n")
    try:
        definition = _parse(request, form, text)
        outreach.save_playbook(session, playbook_id, definition, actor=viewer.principal.actor, now=now_of(request))
    except TouchlineError as exc:
        return _editor(request, playbook_id, text, exc, version=head.current_version)
    return RedirectResponse(f"/console/playbooks/{seg(playbook_id)}?saved=1", status_code=303)


def _set_enabled(request: Request, playbook_id: str, enabled: bool, session: Session, viewer: Viewer) -> RedirectResponse:
    """The current definition with ``enabled`` changed, saved as the API saves it (a new version)."""
    out = outreach.playbook_out(session, outreach.get_playbook(session, playbook_id))
    definition = outreach.PlaybookDefinition.model_validate({**out.definition, "enabled": enabled})
    outreach.save_playbook(session, playbook_id, definition, actor=viewer.principal.actor, now=now_of(request))
    return RedirectResponse(f"/console/playbooks/{seg(playbook_id)}", status_code=303)


@router.post("/playbooks/{playbook_id}/enable")
def enable_playbook(
    request: Request, playbook_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep
) -> Response:
    return _set_enabled(request, playbook_id, True, session, viewer)


@router.post("/playbooks/{playbook_id}/disable")
def disable_playbook(
    request: Request, playbook_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep
) -> Response:
    return _set_enabled(request, playbook_id, False, session, viewer)


@router.get("/playbooks/{playbook_id}/versions")
def playbook_versions(
    request: Request,
    playbook_id: str,
    a: int = Query(0, ge=0, le=2**31 - 1, description="the older version"),
    b: int = Query(0, ge=0, le=2**31 - 1, description="the newer version"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """Two versions' definitions as YAML, and the unified diff from ``a`` to ``b``
    (default: the one before the current, and the current)."""
    head = outreach.get_playbook(session, playbook_id)
    versions = outreach.playbook_out(session, head).versions
    b = b or head.current_version
    a = a or max(1, b - 1)
    old, new = outreach.playbook_out(session, head, a), outreach.playbook_out(session, head, b)
    diff = definition_diff(old.definition, new.definition, a, b)
    return render(request, "playbook_versions.html", head=head, versions=versions, a=a, b=b, diff=diff)


def _dry_run_page(request: Request, session: Session, playbook_id: str, q: str, account_id: str = "", result: Any = None) -> HTMLResponse:
    out = outreach.playbook_out(session, outreach.get_playbook(session, playbook_id))
    found, total = ingest.find_accounts(session, q, offset=0, limit=PICKER_SHOWN) if q.strip() else ([], 0)
    account = ingest.accounts(session, [account_id]).get(account_id) if account_id else None
    return render(
        request,
        "playbook_dry_run.html",
        out=out,
        name=out.definition.get("name", playbook_id),
        q=q,
        found=found,
        total=total,
        account=account,
        account_id=account_id,
        result=result,
        reasons=SKIP_REASONS,
    )


@router.get("/playbooks/{playbook_id}/dry-run")
def playbook_dry_run_picker(
    request: Request,
    playbook_id: str,
    q: str = Query("", max_length=200, description="find the account to pick by name, id or email domain"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    """The picker: accounts found by name, id or email domain, each a button that runs the dry-run."""
    return _dry_run_page(request, session, playbook_id, q)


@router.post("/playbooks/{playbook_id}/dry-run")
def playbook_dry_run(
    request: Request, playbook_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep
) -> Response:
    """A POST, not a GET: the engine's steps may write (rolled back), which a read-only
    transaction (a GET's, on PostgreSQL) refuses."""
    if form.problems:
        raise Unprocessable(form.problem_text())
    account_id, q = form.get("account_id", ""), form.get("q", "")
    result = outreach.dry_run_playbook(session, playbook_id, account_id, now=now_of(request), settings=context_of(request).settings)
    return _dry_run_page(request, session, playbook_id, q, account_id, result)
