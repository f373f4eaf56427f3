"""Sign in (API key form or one-time link) and sign out."""

from __future__ import annotations

import secrets
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services.console import session as sessions
from services.console.web import (
    Form,
    FormDep,
    Viewer,
    context_of,
    current_viewer,
    home_of,
    now_of,
    optional_viewer,
    render,
    secret_of,
)
from shared import auth as keys
from shared.api import SessionDep

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only same-site console paths: never an open redirect."""
    if not target:
        return "/console/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith("/console") or target.startswith("//"):
        return "/console/"
    return target


def _home(principal: keys.Principal) -> str:
    return home_of(principal)


def _cookie_args(request: Request) -> dict:
    return {"httponly": True, "samesite": "lax", "secure": request.url.scheme == "https", "path": sessions.COOKIE_PATH}


def _with_pre_cookie(request: Request, response: Response) -> Response:
    """Before sign-in the CSRF nonce lives in a cookie of its own."""
    if getattr(request.state, "pre_nonce", None):
        response.set_cookie(sessions.PRE_COOKIE, request.state.pre_nonce, max_age=3600, **_cookie_args(request))
    return response


def _ensure_pre_nonce(request: Request) -> None:
    if not request.cookies.get(sessions.PRE_COOKIE):
        request.state.pre_nonce = secrets.token_urlsafe(16)
        # csrf_for() reads the cookie; make this very response's token match the cookie we set.
        request.cookies[sessions.PRE_COOKIE] = request.state.pre_nonce


def _start_session(request: Request, principal_id: int, target: str) -> Response:
    settings = context_of(request).settings
    s = sessions.new_session(principal_id, now_of(request), settings.console_session_minutes)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        sessions.SESSION_COOKIE,
        sessions.encode_session(secret_of(request), s),
        max_age=settings.console_session_minutes * 60,
        **_cookie_args(request),
    )
    response.delete_cookie(sessions.PRE_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None, viewer: Viewer | None = Depends(optional_viewer)):
    if viewer is not None:
        return RedirectResponse(_safe_next(next) if next else _home(viewer.principal), status_code=303)
    _ensure_pre_nonce(request)
    return _with_pre_cookie(request, render(request, "sign_in.html", next=_safe_next(next), error=None))


@router.post("/sign-in")
def sign_in(request: Request, session: Session = SessionDep, form: Form = FormDep):
    principal = keys.authenticate(session, form.get("api_key", "").strip())
    error = None
    if principal is None:
        error = "That key is not valid, or it was revoked."
    elif principal.role == "ingest":
        error = "Ingest keys are for product apps sending events; sign in with an ops, csm or admin key."
    if error or principal is None:
        return render(request, "sign_in.html", status_code=401, next=_safe_next(form.get("next")), error=error)
    return _start_session(request, principal.key_id, _safe_next(form.get("next")) if form.get("next") else _home(principal))


@router.get("/link")
def link_page(request: Request, token: str | None = None, session: Session = SessionDep):
    """Show whom the link signs in as; redeeming it takes a POST, so a mail scanner that
    follows links does not use it up."""
    row = sessions.link_key(session, secret_of(request), token, now_of(request))
    _ensure_pre_nonce(request)
    if row is None:
        page = render(request, "link.html", status_code=400, token=None, who=None)
    else:
        page = render(request, "link.html", token=token, who=f"{row.name} ({row.role})")
    return _with_pre_cookie(request, page)


@router.post("/link")
def redeem(request: Request, session: Session = SessionDep, form: Form = FormDep):
    row = sessions.redeem_link(session, secret_of(request), form.get("token"), now_of(request))
    if row is None:
        return render(request, "link.html", status_code=400, token=None, who=None)
    principal = keys.Principal(key_id=row.id, name=row.name, role=row.role, csm_id=row.csm_id)
    return _start_session(request, row.id, _home(principal))


@router.post("/sign-out")
def sign_out(request: Request, _viewer: Viewer = Depends(current_viewer), _form: Form = FormDep):
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response
