"""The CSM roster for CS Ops: each CSM with their open load against capacity and
availability; add a CSM, change a CSM's capacity, and set a CSM away or deactivate
them (they leave the pool), first showing what would happen to their open engagements
(the roster service's own patch, run in a savepoint rolled back), then applying it on
*Confirm*; reactivate a CSM; edit a CSM's name, email, time
zone, skills, segments and working hours (issue 23, item 1) as ``PATCH /v1/csms/{id}``
does. Errors are the API's (CsmIn, CsmPatch, capacity below load), shown beside the
form or the field they concern."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.outreach import interface as outreach
from shared.api import SessionDep, context_of
from shared.errors import NotFound, TouchlineError

router = APIRouter()


def _page(request: Request, session: Session, *, status_code: int = 200, errors: dict[str, str] | None = None, **ctx: Any) -> HTMLResponse:
    csms = outreach.list_csms(session)
    loads = outreach.csm_open_load(session, [c.id for c in csms])
    ctx.setdefault("add", {"id": "", "name": "", "email": "", "timezone": "UTC", "capacity": "10", "skills": "", "segments": ""})
    ctx.setdefault("preview", None)
    return render(request, "roster.html", status_code=status_code, csms=csms, loads=loads, errors=errors or {}, now=now_of(request), **ctx)


def _messages(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


@router.get("/roster")
def roster(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    return _page(request, session)


@router.post("/roster")
def add_csm(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    values = {k: form.get(k, "").strip() for k in ("id", "name", "email", "timezone", "capacity", "skills", "segments")}
    if form.problems:
        return _page(request, session, status_code=422, errors={"add": form.problem_text()}, add=values)
    if not values["id"] or outreach.get_csm(session, values["id"]) is not None:
        return _page(request, session, status_code=422, errors={"add": "id: a new roster id (this one is taken or empty)"}, add=values)
    try:
        body = outreach.CsmIn(
            name=values["name"],
            email=values["email"],
            timezone=values["timezone"] or "UTC",
            capacity=int(values["capacity"] or 0),
            skills=_words(values["skills"]),
            segments=_words(values["segments"]),
        )
        with session.begin_nested():  # a refusal leaves nothing half-done behind the page that says so
            outreach.put_csm(
                session, values["id"], body, actor=viewer.principal.actor, now=now_of(request), settings=context_of(request).settings
            )
    except ValueError as exc:  # a ValidationError is one
        text = _messages(exc) if isinstance(exc, ValidationError) else f"capacity: a whole number ({exc})"
        return _page(request, session, status_code=422, errors={"add": text}, add=values)
    except TouchlineError as exc:
        return _page(request, session, status_code=exc.status_code, errors={"add": str(exc.detail)}, add=values)
    return RedirectResponse("/console/roster", status_code=303)


@router.post("/roster/{csm_id}/capacity")
def set_capacity(request: Request, csm_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    try:
        body = outreach.CsmPatch(capacity=int(form.get("capacity", "")))
        with session.begin_nested():  # a refusal leaves nothing half-done behind the page that says so
            outreach.patch_csm(
                session, csm_id, body, actor=viewer.principal.actor, now=now_of(request), settings=context_of(request).settings
            )
    except ValueError as exc:
        text = _messages(exc) if isinstance(exc, ValidationError) else "capacity: a whole number"
        return _page(request, session, status_code=422, errors={f"capacity-{csm_id}": text})
    except TouchlineError as exc:
        if exc.status_code == 404:
            raise
        return _page(request, session, status_code=exc.status_code, errors={f"capacity-{csm_id}": str(exc.detail)})
    return RedirectResponse("/console/roster", status_code=303)


def _when(text: str) -> datetime | None:
    """A datetime-local field (UTC) or empty."""
    if not text.strip():
        return None
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)


def _preview_or_apply(
    request: Request, session: Session, viewer: Viewer, csm_id: str, body: Any, *, apply: bool, preview: dict[str, Any]
) -> Response:
    """Apply ``body`` to the CSM (then back to the roster), or show what it would do to
    their open engagements (``preview`` holds what the confirm form sends back); a refusal
    is shown beside the CSM."""
    settings, now, actor = context_of(request).settings, now_of(request), viewer.principal.actor
    try:
        if apply:
            with session.begin_nested():  # a refusal leaves nothing half-done behind the page that says so
                outreach.patch_csm(session, csm_id, body, actor=actor, now=now, settings=settings)
            return RedirectResponse(f"/console/roster#csm-{seg(csm_id)}", status_code=303)
        moves = outreach.preview_csm_patch(session, csm_id, body, actor=actor, now=now, settings=settings)
    except TouchlineError as exc:
        if exc.status_code == 404:
            raise
        return _page(request, session, status_code=exc.status_code, errors={f"away-{csm_id}": str(exc.detail)})
    return _page(request, session, preview={**preview, "csm_id": csm_id, "moves": moves})


@router.post("/roster/{csm_id}/away")
def set_away(request: Request, csm_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """``action=preview`` shows what the change does to the CSM's open engagements;
    ``action=confirm`` applies it."""
    away = {"from": form.get("away_from", ""), "until": form.get("away_until", "")}
    try:
        body = outreach.CsmPatch(away_from=_when(away["from"]) or now_of(request), away_until=_when(away["until"]))
    except ValueError as exc:
        text = _messages(exc) if isinstance(exc, ValidationError) else f"away: a date and time ({exc})"
        return _page(request, session, status_code=422, errors={f"away-{csm_id}": text})
    preview = {"kind": "away", "away_from": away["from"], "away_until": away["until"]}
    return _preview_or_apply(request, session, viewer, csm_id, body, apply=form.get("action") == "confirm", preview=preview)


@router.post("/roster/{csm_id}/active")
def set_active(request: Request, csm_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """``active=false`` deactivates a CSM as ``PATCH /v1/csms/{id}`` with ``active: false``
    does (their open engagements are reassigned or re-queued): ``action=preview`` shows
    where each would go, ``action=confirm`` applies it. ``active=true`` brings them back
    at once (nothing moves; the next engagements may be offered to them)."""
    value = form.get("active", "")
    if value not in ("true", "false"):
        return _page(request, session, status_code=422, errors={f"away-{csm_id}": f"active: true or false; got {value[:20]!r}"})
    body = outreach.CsmPatch(active=value == "true")
    apply = value == "true" or form.get("action") == "confirm"
    return _preview_or_apply(request, session, viewer, csm_id, body, apply=apply, preview={"kind": "deactivate"})


DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EDIT_FIELDS = ("name", "email", "timezone", "skills", "segments", "start", "end", "hours_per_week")


def _edit_values(csm: Any) -> dict[str, Any]:
    hours = outreach.WorkingHours.model_validate(csm.working_hours or {})
    return {
        "name": csm.name,
        "email": csm.email,
        "timezone": csm.timezone,
        "skills": ", ".join(csm.skills or []),
        "segments": ", ".join(csm.segments or []),
        "days": list(hours.days),
        "start": hours.start,
        "end": hours.end,
        "hours_per_week": "" if hours.hours_per_week is None else f"{hours.hours_per_week:g}",
    }


def _edit_page(
    request: Request, csm: Any, values: dict[str, Any], *, status_code: int = 200, errors: dict[str, str] | None = None
) -> HTMLResponse:
    return render(request, "roster_edit.html", status_code=status_code, csm=csm, values=values, errors=errors or {}, days=DAYS)


def _field_of(loc: tuple[Any, ...]) -> str | None:
    """A CsmPatch error's location as the form's field (``working_hours.WorkingHours.start``
    -> start); None for the optional field's null branch, which says nothing to the user."""
    if loc and loc[0] == "working_hours":
        if "none" in loc:
            return None
        return next((str(p) for p in loc if p in ("days", "start", "end", "hours_per_week")), "days")
    return str(loc[0]) if loc else "form"


@router.get("/roster/{csm_id}/edit")
def edit_csm(request: Request, csm_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    csm = outreach.get_csm(session, csm_id)
    if csm is None:
        raise NotFound(f"no CSM {csm_id!r}")
    return _edit_page(request, csm, _edit_values(csm))


@router.post("/roster/{csm_id}/edit")
def save_csm(request: Request, csm_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """The fields as ``PATCH /v1/csms/{id}`` takes them: skills, segments and working
    hours change who is offered the next engagements; open ones stay with the CSM."""
    csm = outreach.get_csm(session, csm_id)
    if csm is None:
        raise NotFound(f"no CSM {csm_id!r}")
    values: dict[str, Any] = {f: form.get(f, "").strip() for f in EDIT_FIELDS}
    values["days"] = [i for i in range(len(DAYS)) if form.get(f"day-{i}") == "on"]
    if form.problems:
        return _edit_page(request, csm, values, status_code=422, errors=dict(form.problems))
    hours: dict[str, Any] = {"days": values["days"], "start": values["start"], "end": values["end"]}
    if values["hours_per_week"]:
        hours["hours_per_week"] = values["hours_per_week"]
    try:
        body = outreach.CsmPatch.model_validate(
            {
                "name": values["name"],
                "email": values["email"],
                "timezone": values["timezone"],
                "skills": _words(values["skills"]),
                "segments": _words(values["segments"]),
                "working_hours": hours,
            }
        )
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for e in exc.errors():
            field, message = _field_of(tuple(e["loc"])), e["msg"].removeprefix("Value error, ")
            if field is not None:
                errors[field] = f"{errors[field]}; {message}" if field in errors else message
        errors = errors or {"form": _messages(exc)}
        return _edit_page(request, csm, values, status_code=422, errors=errors)
    outreach.patch_csm(session, csm_id, body, actor=viewer.principal.actor, now=now_of(request), settings=context_of(request).settings)
    return RedirectResponse(f"/console/roster#csm-{seg(csm_id)}", status_code=303)
