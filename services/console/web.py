"""What every console view needs: the template environment (autoescaped, strict), the
signed-in viewer, role checks, CSRF-checked form parsing, and HTML error pages.

Views call the same repositories and services as the API routes, through each
service's door (``services.<service>.interface``); nothing here decides anything about
the domain."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from services.console import session as sessions
from services.rules.interface import SEGMENT_SIGNAL_PREFIX
from shared.api import SessionDep, context_of
from shared.auth import Principal
from shared.clock import time_left, utc

HERE = Path(__file__).parent
MAX_FORM_BYTES = 512 * 1024

MENU = [  # (label, path, roles that see it)
    ("Inbox", "/console/inbox", ("csm",)),
    ("Overview", "/console/", ("ops",)),
    ("Accounts", "/console/accounts", ("ops", "csm")),
    ("Rules", "/console/rules", ("ops",)),
    ("Health", "/console/health", ("ops",)),
    ("Segments", "/console/segments", ("ops",)),
    ("Signals", "/console/signals", ("ops",)),
    ("Playbooks", "/console/playbooks", ("ops",)),
    ("Messages", "/console/messages", ("ops",)),
    ("Templates", "/console/templates", ("ops",)),
    ("Broadcasts", "/console/broadcasts", ("ops",)),
    ("Library", "/console/resources", ("ops", "csm")),
    ("Surveys", "/console/surveys", ("ops", "csm")),
    ("Engagements", "/console/engagements", ("ops",)),
    ("Pool", "/console/pool", ("ops",)),
    ("Roster", "/console/roster", ("ops",)),
    ("Dead letters", "/console/dead-letters", ("ops",)),
    ("API keys", "/console/keys", ("admin",)),
]


# No inline script or style anywhere: every script and stylesheet is a file under
# /console/static. One exception, set by the template editor only when it shows a
# preview: e-mail HTML carries inline styles, and the sandboxed srcdoc iframe it renders
# in inherits this page's policy (scripts stay blocked everywhere).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
CSP_EMAIL_PREVIEW = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    pass


class ConsoleForbidden(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _fmt_dt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):  # an ISO timestamp from a JSON answer: the same minute-precision UTC form
        try:
            return _fmt_dt(utc(datetime.fromisoformat(value.replace("Z", "+00:00"))))
        except ValueError:
            return value
    return str(value)


def _fmt_num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    return str(value)


def _pct(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _evidence(value: Any) -> str:
    """One evidence entry as a person reads it: "15.2 (needs >= 14)"; an entry that is no
    comparison (a segment's change, an event trigger) in the API's notation, JSON, not
    Python's repr."""

    def shown(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else _fmt_num(v)

    if isinstance(value, dict) and "value" in value:
        needs = f" (needs {value.get('op', '')} {shown(value.get('threshold'))})" if "threshold" in value else ""
        return f"{shown(value['value'])}{needs}"
    return shown(value)


def _time_left(days: float | None) -> str:
    """Days left (negative: overdue) in the unit that fits, hours under two days: "30 hours",
    "5 days", "overdue by 2 days"."""
    return "—" if days is None else time_left(days * 86400, days_from=2)


def _prose(text: Any) -> Markup:
    """A message written for a terminal as a page shows it: escaped, with `code` in
    backticks set as <code> (no literal backticks on a page)."""
    return Markup(re.sub(r"`([^`\n]+)`", r"<code>\1</code>", str(escape(str(text)))))


def _step_result(entry: Any, last: bool, status: str) -> str:
    """A step path's entry as it stands now: a wait is "waiting" only while the
    enrolment still waits there (its last entry, still active); once it moved on or
    ended, "waited"."""
    result = str(entry.get("result", "")) if isinstance(entry, dict) else ""
    if result == "waiting" and not (last and status == "active"):
        return "waited"
    return result


def _url(path: str, **params: Any) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


def seg(value: Any) -> str:
    """One URL path segment: account and rule ids may hold any character."""
    return quote(str(value), safe="")


def signal_source(rule_id: str) -> str:
    """The console page of what fired a signal: its rule, or the named segment it entered
    or left (rule_id ``segment:<id>``, docs/segments.md)."""
    if rule_id.startswith(SEGMENT_SIGNAL_PREFIX):
        return f"/console/segments/{seg(rule_id[len(SEGMENT_SIGNAL_PREFIX) :])}"
    return f"/console/rules/{seg(rule_id)}"


env = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
)
env.filters.update(
    dt=_fmt_dt,
    num=_fmt_num,
    pct=_pct,
    pretty=_pretty,
    seg=seg,
    source=signal_source,
    evidence=_evidence,
    time_left=_time_left,
    prose=_prose,
    step_result=_step_result,
)
env.globals.update(url=_url)


@dataclass
class Viewer:
    principal: Principal
    nonce: str  # the session's id: its CSRF nonce, and what sign-out ends

    @property
    def role(self) -> str:
        return self.principal.role

    def can(self, *roles: str) -> bool:
        return self.principal.role == "admin" or self.principal.role in roles


def secret_of(request: Request) -> str:
    return context_of(request).settings.secret


def now_of(request: Request) -> datetime:
    return context_of(request).clock.now()


def optional_viewer(request: Request, session: Session = SessionDep) -> Viewer | None:
    found = sessions.signed_in(session, secret_of(request), request.cookies.get(sessions.SESSION_COOKIE), now_of(request))
    if found is None:
        return None
    session_id, principal = found
    if principal.role == "ingest":
        return None
    viewer = Viewer(principal, session_id)
    request.state.viewer = viewer
    return viewer


def current_viewer(viewer: Viewer | None = Depends(optional_viewer)) -> Viewer:
    if viewer is None:
        raise SignInRequired()
    return viewer


def need(*roles: str) -> Any:
    """Dependency: a signed-in viewer with one of ``roles`` (admin passes every check)."""

    def dependency(viewer: Viewer = Depends(current_viewer)) -> Viewer:
        if not viewer.can(*roles):
            raise ConsoleForbidden(
                f"This page is for the {' or '.join(roles)} role; you are signed in as {viewer.principal.name} ({viewer.role})."
            )
        return viewer

    return Depends(dependency)


OPS = need("ops")
READER = need("ops", "csm")


def home_of(principal: Principal) -> str:
    if principal.role in ("ops", "admin"):
        return "/console/"
    return "/console/inbox" if principal.csm_id else "/console/accounts"


def csrf_for(request: Request) -> str:
    viewer = getattr(request.state, "viewer", None)
    nonce = viewer.nonce if viewer else request.cookies.get(sessions.PRE_COOKIE)
    return sessions.csrf_token(secret_of(request), nonce) if nonce else ""


class Form(dict[str, str]):
    """A posted console form, its CSRF token checked. ``problems`` holds the fields the
    API's input limits refuse, field -> what is wrong and how to fix it: a NUL character
    (the API's 422 ``nul_character``; PostgreSQL cannot store one) or a form larger than
    :data:`MAX_FORM_BYTES` (named on its largest field). A view that stores or looks up a
    field re-renders its form with these beside the fields before anything else: never a
    500, never stored."""

    def __init__(self, fields: dict[str, str], size: int):
        super().__init__(fields)
        self.problems: dict[str, str] = {name: NUL_PROBLEM for name, value in fields.items() if "\x00" in value}
        if size > MAX_FORM_BYTES and fields:
            largest = max(fields, key=lambda name: len(fields[name]))
            self.problems.setdefault(
                largest, f"makes the form {size // 1024} KiB; a console form takes at most {MAX_FORM_BYTES // 1024} KiB: shorten it"
            )

    def problem_text(self) -> str:
        return "; ".join(f"{name}: {message}" for name, message in self.problems.items())


NUL_PROBLEM = "contains a NUL character (\\u0000 or %00), which no field accepts: remove it"


async def read_form(request: Request, viewer: Viewer | None = Depends(optional_viewer)) -> Form:
    """Dependency: the urlencoded form of a POST, after its CSRF token and Origin are checked.

    The one async step of a console POST: it awaits the body and touches no database
    (the viewer whose nonce signs the token comes from :func:`optional_viewer`, which
    FastAPI runs in the thread pool). The view itself stays a plain ``def`` that FastAPI
    runs in the thread pool, where a synchronous database call (SQLite's ``BEGIN
    IMMEDIATE`` waits for the write lock) blocks one thread, never the event loop.
    Declare it after the view's viewer check (``form: Form = FormDep`` last), so a
    signed-out visitor is sent to sign in before any token is checked. The body is
    already bounded by TOUCHLINE_MAX_REQUEST_BYTES (shared/limits.py); a form over
    :data:`MAX_FORM_BYTES` is parsed anyway, so its view can say which field to shorten."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        raise ConsoleForbidden("This form was posted from another site.")
    body = await request.body()
    form = Form({k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}, len(body))
    nonce = viewer.nonce if viewer else request.cookies.get(sessions.PRE_COOKIE)
    if not sessions.csrf_ok(secret_of(request), nonce, form.get("csrf")):
        raise ConsoleForbidden("The form's security token is missing or stale. Go back, reload the page and try again.")
    return form


FormDep = Depends(read_form)


def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    menu = [
        (label, path)
        for label, path, roles in MENU
        if viewer and viewer.can(*roles) and (path != "/console/inbox" or viewer.principal.csm_id)
    ]
    home = home_of(viewer.principal) if viewer else "/console/"
    html = env.get_template(template).render(
        request=request, viewer=viewer, menu=menu, csrf=csrf_for(request), home=home, path=request.url.path, **ctx
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status_code: int, title: str, message: Any) -> HTMLResponse:
    """An error page. Raised before any view ran (a 404 for a path no view serves), it
    has no viewer: a session cookie that still opens offers the way back to the
    console, not a second sign-in (no database read: this runs on the event loop, so a
    genuine cookie counts even if its session has ended since; the console then asks to
    sign in)."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    signed_in = sessions.session_id_of(secret_of(request), cookie) is not None
    return render(request, "error.html", status_code=status_code, title=title, message=message, signed_in=signed_in)


def markup(svg: str) -> Markup:
    """Mark SVG built by :mod:`services.console.charts` (which escapes every label) as safe."""
    return Markup(svg)
