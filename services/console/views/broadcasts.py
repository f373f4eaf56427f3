"""Broadcasts (CS Ops): the list, a create form whose first press shows the preview
(audience, holdout, the messages the contact gate would skip and why) and whose second
sends or schedules what was previewed, a broadcast's page with its report (each figure
linked to the message list it counts), and cancelling one (a scheduled one sends
nothing; one being sent, or sent with messages still queued, stops and withdraws them). Through
outreach's door, exactly as the API (docs/broadcasts.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep, context_of
from shared.errors import TouchlineError, Unprocessable

router = APIRouter()
SHOWN = 50
FIELDS = ("name", "template", "segment_id", "channel", "to", "send_at", "holdout_percent")
EMPTY = {"name": "", "template": "", "segment_id": "", "channel": "email", "to": "all_users", "send_at": "", "holdout_percent": "0"}


def _definition(values: dict[str, str]) -> dict[str, Any]:
    """The form as the API's body: ``to`` comma-separated, ``send_at`` a UTC time (the
    datetime-local input has no zone), the holdout a number; what cannot be read is
    passed on as it is, so the definition's own check names it."""
    out: dict[str, Any] = {k: values[k] for k in ("name", "template", "segment_id", "channel")}
    out["to"] = [t.strip() for t in values["to"].split(",") if t.strip()]
    if values["send_at"].strip():
        raw = values["send_at"].strip()
        try:
            parsed = datetime.fromisoformat(raw)
            out["send_at"] = raw if parsed.tzinfo else raw + "Z"
        except ValueError:
            out["send_at"] = raw
    try:
        out["holdout_percent"] = float(values["holdout_percent"] or 0)
    except ValueError:
        out["holdout_percent"] = values["holdout_percent"]
    return out


def _beside(exc: TouchlineError) -> dict[str, str]:
    """A 422's problems by form field (the pointer's first part); the rest under ``form``."""
    out: dict[str, str] = {}
    detail = exc.detail if isinstance(exc.detail, list) else [{"pointer": "", "message": str(exc.detail)}]
    for d in detail:
        field = str(d.get("pointer", "")).strip("/").split("/")[0]
        key = field if field in FIELDS else "form"
        out[key] = f"{out[key]}; {d['message']}" if key in out else str(d["message"])
    return out


def _page(
    request: Request,
    session: Session,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    preview: Any = None,
    preview_id: str = "",
    status_code: int = 200,
    status: str = "",
    before: str = "",
) -> HTMLResponse:
    rows = outreach.list_broadcasts(session, status=status or None, limit=SHOWN + 1, after=before or None)
    return render(
        request,
        "broadcasts.html",
        status_code=status_code,
        rows=rows[:SHOWN],
        older=rows[SHOWN - 1].id if len(rows) > SHOWN else None,
        status=status,
        statuses=outreach.BROADCAST_STATUSES,
        templates=[t for t in outreach.list_templates(session) if t.audience == "customer"],
        segments=rules.list_segments(session),
        values=values or dict(EMPTY),
        errors=errors or {},
        preview=preview,
        preview_id=preview_id,
    )


@router.get("/broadcasts")
def broadcasts(
    request: Request,
    status: str = Query("", pattern="^(|scheduled|sending|sent|cancelled)$"),
    before: str = Query("", max_length=36),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    return _page(request, session, status=status, before=before)


@router.post("/broadcasts")
def preview_or_create(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """``action=preview`` shows what it would do (nothing stored); ``action=create`` (the
    button under a preview) creates it with the previewed id, so its holdout is the one
    shown."""
    values = {f: form.get(f, "") for f in FIELDS}
    if form.problems:  # the API's input limits, beside their fields, before any lookup
        errors = {name if name in FIELDS else "form": message for name, message in form.problems.items()}
        return _page(request, session, values=values, errors=errors, status_code=422)
    now = now_of(request)
    try:
        body = outreach.parse_broadcast(_definition(values))
        if form.get("action") == "create":
            preview_id = form.get("preview_id", "")
            b = outreach.create_broadcast(
                session,
                context_of(request).settings,
                body,
                actor=viewer.principal.actor,
                now=now,
                broadcast_id=preview_id if _uuid(preview_id) else None,
            )
            return RedirectResponse(f"/console/broadcasts/{seg(b.id)}?created=1", status_code=303)
        preview_id = outreach.new_broadcast_id()
        preview = outreach.preview_broadcast(session, context_of(request).settings, body, now=now, broadcast_id=preview_id)
    except Unprocessable as exc:
        return _page(request, session, values=values, errors=_beside(exc), status_code=422)
    except TouchlineError as exc:
        return _page(request, session, values=values, errors={"form": str(exc.detail)}, status_code=exc.status_code)
    return _page(request, session, values=values, preview=preview, preview_id=preview_id)


def _uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@router.get("/broadcasts/{broadcast_id}")
def broadcast(
    request: Request, broadcast_id: str, created: bool = False, session: Session = SessionDep, viewer: Viewer = OPS
) -> HTMLResponse:
    b = outreach.get_broadcast(session, broadcast_id)
    report = outreach.broadcast_report(session, broadcast_id)
    return render(request, "broadcast.html", b=outreach.broadcast_out(b), report=report, created=created)


@router.post("/broadcasts/{broadcast_id}/cancel")
def cancel(request: Request, broadcast_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    outreach.cancel_broadcast(session, broadcast_id, actor=viewer.principal.actor, now=now_of(request))
    return RedirectResponse(f"/console/broadcasts/{seg(broadcast_id)}", status_code=303)
