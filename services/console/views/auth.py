"""Sign in (API key form or one-time link) and sign out."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services.console import session as sessions
from services.console.web import (
    Form,
    FormDep,
    Viewer,
    current_viewer,
    home_of,
    now_of,
    optional_viewer,
    render,
    secret_of,
)
from shared import audit, signin
from shared import auth as keys
from shared.api import SessionDep, context_of
from shared.models import ApiKey

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


def _cookie_args(request: Request) -> dict[str, Any]:
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


def _start_session(request: Request, session: Session, key: ApiKey, target: str, via: str) -> Response:
    """Open a session for ``key`` (a row of its own: sign-out ends it everywhere), audit
    the sign-in and set the cookie that seals the session's id."""
    settings, now = context_of(request).settings, now_of(request)
    session_id = sessions.start_session(session, key, now, settings.console_session_minutes)
    audit.record(
        session,
        actor=f"{key.role}:{key.name}",
        action="console_sign_in",
        object_type="api_key",
        object_id=str(key.id),
        now=now,
        details={"address": signin.client_address(request), "via": via},
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        sessions.SESSION_COOKIE,
        sessions.cookie_for(secret_of(request), session_id),
        max_age=settings.console_session_minutes * 60,
        **_cookie_args(request),
    )
    response.delete_cookie(sessions.PRE_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None, viewer: Viewer | None = Depends(optional_viewer)) -> Response:
    if viewer is not None:
        return RedirectResponse(_safe_next(next) if next else _home(viewer.principal), status_code=303)
    _ensure_pre_nonce(request)
    return _with_pre_cookie(request, render(request, "sign_in.html", next=_safe_next(next), error=None))


@router.post("/sign-in")
def sign_in(request: Request, session: Session = SessionDep, form: Form = FormDep) -> Response:
    """Sign in with a key, under the sign-in throttle (shared/signin.py): a try from an
    address that must wait is refused (429, Retry-After) before the key is looked up;
    each failure and success is logged and counted; a success is audited."""
    throttle, now = context_of(request).signin_throttle, now_of(request)
    presented, address, next_path = form.get("api_key", "").strip(), signin.client_address(request), _safe_next(form.get("next"))
    if form.problems:  # never looked up: PostgreSQL cannot even compare a NUL
        return render(request, "sign_in.html", status_code=422, next="/console/", error=f"The form {form.problem_text()}.")
    try:
        signin.check(throttle, "console", address, presented, now)
    except signin.TooManySignIns as exc:
        page = render(
            request,
            "sign_in.html",
            status_code=429,
            next=next_path,
            error=f"Too many failed sign-ins from your address. Try again in {exc.retry_after} seconds.",
        )
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    principal = keys.authenticate(session, presented)
    error = None
    if principal is None:
        error, reason = "That key is not valid, or it was revoked.", "unknown, wrong or revoked key"
    elif principal.role == "ingest":
        error, reason = "Ingest keys are for product apps sending events; sign in with an ops, csm or admin key.", "ingest key"
    if error or principal is None:
        signin.failed(throttle, "console", address, presented, reason, now)
        return render(request, "sign_in.html", status_code=401, next=next_path, error=error)
    signin.succeeded("console", address, presented, principal.key_id)
    key = session.get(ApiKey, principal.key_id)
    assert key is not None  # authenticate just read it
    # The form's default "next" is the console's root: that means "home", which for a
    # CSM is the inbox (the overview is CS Ops'), not a page that answers 403.
    target = next_path if form.get("next") and next_path not in ("/console", "/console/") else _home(principal)
    return _start_session(request, session, key, target, via="key")


@router.get("/link")
def link_page(request: Request, token: str | None = None, session: Session = SessionDep) -> Response:
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
def redeem(request: Request, session: Session = SessionDep, form: Form = FormDep) -> Response:
    row = sessions.redeem_link(session, secret_of(request), form.get("token"), now_of(request))
    if row is None:
        return render(request, "link.html", status_code=400, token=None, who=None)
    principal = keys.Principal(key_id=row.id, name=row.name, role=row.role, csm_id=row.csm_id)
    signin.succeeded("console", signin.client_address(request), f"tl_{row.prefix}_", row.id)
    return _start_session(request, session, row, _home(principal), via="link")


@router.post("/sign-out")
def sign_out(request: Request, session: Session = SessionDep, viewer: Viewer = Depends(current_viewer), _form: Form = FormDep) -> Response:
    """End the session on the server: every copy of its cookie stops working."""
    sessions.end_session(session, viewer.nonce, now_of(request))
    audit.record(
        session,
        actor=viewer.principal.actor,
        action="console_sign_out",
        object_type="api_key",
        object_id=str(viewer.principal.key_id),
        now=now_of(request),
        details={"address": signin.client_address(request)},
    )
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response
