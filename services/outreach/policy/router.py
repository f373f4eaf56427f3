"""Suppression list, erasure of a contact, and the public unsubscribe endpoints.

``/unsubscribe/{token}`` is outside ``/v1`` and needs no key: the signed token is
the credential. GET shows a confirmation page and changes nothing (mail scanners
prefetch links); POST unsubscribes. Mailbox providers POST
``List-Unsubscribe=One-Click`` to the same URL (RFC 8058).
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from services.outreach.models import Suppression
from services.outreach.policy import repository as repo
from services.outreach.policy import service
from services.outreach.policy.tokens import email_hash, read_token
from shared import audit
from shared.api import NO_FRAMING, ClockDep, PathId, SessionDep, SettingsDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, responses
from shared.pagination import next_key
from shared.settings import Settings

router = APIRouter(tags=["contact policy"])


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    detail: str = Field("", max_length=1000)


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    email_hash: str
    email: str | None
    reason: str
    detail: str
    created_at: datetime


class ErasureOut(BaseModel):
    account_id: str
    user_id: str
    suppressed: bool
    messages_scrubbed: int


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_cursor: str | None = None


@router.get("/v1/suppressions", response_model=SuppressionPage, responses=AUTH_ERRORS, summary="Suppressed addresses, in pages")
def list_suppressions(
    reason: str | None = None,
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    session: Session = SessionDep,
    _p: Principal = require("ops"),
) -> SuppressionPage:
    items = repo.list_suppressions(session, reason=reason, limit=limit, after=cursor)
    return SuppressionPage(items=items, next_cursor=next_key(items, limit, lambda s: s.email_hash))


@router.post(
    "/v1/suppressions",
    response_model=SuppressionOut,
    status_code=201,
    responses=AUTH_ERRORS,
    summary="Suppress an address by hand (idempotent: an existing entry keeps its first reason)",
)
def add_suppression(
    body: SuppressionIn, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("ops")
) -> Suppression | None:
    h = email_hash(body.email)
    repo.add_suppression(session, email_hash=h, email=body.email.lower(), reason="manual", detail=body.detail, now=clock.now())
    audit.record(session, actor=principal.actor, action="suppress", object_type="suppression", object_id=h, now=clock.now())
    return repo.get_suppression(session, h)


@router.delete(
    "/v1/suppressions/{email}",
    status_code=204,
    response_model=None,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Lift a suppression (for example after a bounced mailbox was fixed)",
)
def remove_suppression(email: str, session: Session = SessionDep, clock: Clock = ClockDep, principal: Principal = require("ops")) -> None:
    h = email_hash(email)
    if not repo.remove_suppression(session, h):
        raise NotFound(f"{email} is not suppressed")
    audit.record(session, actor=principal.actor, action="unsuppress", object_type="suppression", object_id=h, now=clock.now())


@router.post(
    "/v1/accounts/{account_id}/users/{user_id}/erase",
    response_model=ErasureOut,
    responses=AUTH_ERRORS,
    summary="Erase a contact on request: scrub their personal data, never contact them again",
)
def erase_contact(
    account_id: PathId,
    user_id: PathId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    principal: Principal = require("ops"),
) -> ErasureOut:
    now = clock.now()
    erasure = service.erase_contact(session, account_id, user_id, now)
    audit.record(
        session,
        actor=principal.actor,
        action="erase_contact",
        # The account is the object: "account/user" would not fit the 128 characters of
        # object_id when both ids are long (a 500 on PostgreSQL).
        object_type="account",
        object_id=account_id,
        now=now,
        details={"user_id": user_id, "messages_scrubbed": erasure.messages_scrubbed},
    )
    return ErasureOut(account_id=account_id, user_id=user_id, suppressed=erasure.suppressed, messages_scrubbed=erasure.messages_scrubbed)


# A person opens these links in a browser: answers are HTML pages, errors included.
_LINK_NOT_VALID: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "the link is damaged or was not issued by us (an HTML page)",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<meta name='viewport' content='width=device-width'></head><body style='font-family:sans-serif;"
        f"max-width:32rem;margin:3rem auto'><main><h1>{html.escape(title)}</h1>{body}</main></body></html>",
        status_code=status,
        headers=NO_FRAMING,
    )


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    include_in_schema=True,
    tags=["public"],
    responses=_LINK_NOT_VALID,
    summary="Unsubscribe confirmation page (changes nothing: link scanners prefetch GETs)",
)
def unsubscribe_page(token: str, settings: Settings = SettingsDep) -> HTMLResponse:
    data = read_token(settings.secret, token)
    if data is None:
        return _page("Link not valid", "<p>This unsubscribe link is damaged or was not issued by us.</p>", 400)
    return _page(
        "Unsubscribe",
        f"<p>Stop emails to <b>{html.escape(data['email'])}</b>?</p>"
        f"<form method='post'><input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        f"<button type='submit'>Unsubscribe</button></form>",
    )


@router.post(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    tags=["public"],
    responses=_LINK_NOT_VALID,
    summary="One-click unsubscribe (RFC 8058); the signed token is the credential",
)
def unsubscribe(token: str, session: Session = SessionDep, clock: Clock = ClockDep, settings: Settings = SettingsDep) -> HTMLResponse:
    data = read_token(settings.secret, token)
    if data is None:
        return _page("Link not valid", "<p>This unsubscribe link is damaged or was not issued by us.</p>", 400)
    repo.add_suppression(
        session,
        email_hash=email_hash(data["email"]),
        email=data["email"],
        reason="unsubscribed",
        detail=f"one-click from message {data.get('message_id')}",
        now=clock.now(),
    )
    return _page("You are unsubscribed", f"<p>We will not email <b>{html.escape(data['email'])}</b> again.</p>")
