"""API keys, for admins: the list (role, state, the public prefix, name), creating a key
(its secret shown once, on the page that answers the POST, never again), and revoking
one (which ends every console session signed in with it). The same functions as
``touchline keys`` (shared.auth); each change is audited."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from services.console.web import Form, FormDep, Viewer, need, now_of, render
from services.outreach import interface as outreach
from shared import audit, auth
from shared.api import SessionDep
from shared.errors import NotFound, Unprocessable

router = APIRouter()
ADMIN = need("admin")
NAME_MAX = 200


def _page(
    request: Request, session: Session, *, status_code: int = 200, created: str = "", error: str = "", form: dict[str, str] | None = None
) -> HTMLResponse:
    now = now_of(request)
    rows = [
        {
            "row": k,
            "state": "revoked" if k.revoked_at else "expired" if k.expires_at and k.expires_at <= now else "active",
        }
        for k in auth.list_keys(session)
    ]
    return render(
        request,
        "keys.html",
        status_code=status_code,
        keys=rows,
        roles=auth.ROLES,
        csms=outreach.list_csms(session),
        created=created,
        error=error,
        form=form or {"name": "", "role": "ops", "csm_id": ""},
    )


@router.get("/keys")
def keys(request: Request, session: Session = SessionDep, viewer: Viewer = ADMIN) -> HTMLResponse:
    return _page(request, session)


@router.post("/keys")
def create(request: Request, session: Session = SessionDep, viewer: Viewer = ADMIN, form: Form = FormDep) -> Response:
    values = {"name": form.get("name", "").strip(), "role": form.get("role", ""), "csm_id": form.get("csm_id", "").strip()}
    problem = form.problem_text() if form.problems else ""
    csm_ids = {c.id for c in outreach.list_csms(session)}
    if not problem and not 1 <= len(values["name"]) <= NAME_MAX:
        problem = f"name: 1 to {NAME_MAX} characters, to tell the key apart later"
    elif not problem and values["role"] not in auth.ROLES:
        problem = f"role: one of {', '.join(auth.ROLES)}"
    elif not problem and values["role"] == "csm" and values["csm_id"] not in csm_ids:
        problem = "csm: a csm key acts as one CSM of the roster: choose them"
    if problem:
        return _page(request, session, status_code=422, error=problem, form=values)
    row, key = auth.create_key(
        session, role=values["role"], name=values["name"], now=now_of(request), csm_id=values["csm_id"] if values["role"] == "csm" else None
    )
    audit.record(
        session,
        actor=viewer.principal.actor,
        action="create",
        object_type="api_key",
        object_id=str(row.id),
        now=now_of(request),
        details={"role": row.role, "name": row.name, "csm_id": row.csm_id},
    )
    return _page(request, session, created=key)


@router.post("/keys/{key_id}/revoke")
def revoke(request: Request, key_id: int, session: Session = SessionDep, viewer: Viewer = ADMIN, _form: Form = FormDep) -> Response:
    if key_id > 2**31 - 1:
        raise Unprocessable("no such key id")
    if not auth.revoke_key(session, key_id, now_of(request)):
        raise NotFound(f"no key #{key_id}")
    audit.record(session, actor=viewer.principal.actor, action="revoke", object_type="api_key", object_id=str(key_id), now=now_of(request))
    return RedirectResponse("/console/keys", status_code=303)
