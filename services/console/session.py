"""Console sign-in: server-side sessions in sealed cookies, CSRF tokens and one-time
sign-in links.

A session is a row in ``console_sessions`` (key id, expiry, ended) named by a random
256-bit id; the cookie seals that id (:mod:`shared.sealed`: nobody can read or alter it),
and the row is keyed by the id's SHA-256, so reading the table signs nobody in. Every
request loads the row and the API key: signing out ends the session for every copy of
the cookie; revoking the key ends all its sessions; a session lasts
``TOUCHLINE_CONSOLE_SESSION_MINUTES`` and never outlives its key's ``expires_at``.

CSRF: every form carries ``HMAC(secret, nonce)``. The nonce is the session's id, or
before sign-in a random one kept in its own cookie, so the sign-in form is covered too.

One-time links (``touchline console-link``) create a key of their own, which expires
``TOUCHLINE_CONSOLE_LINK_KEY_MINUTES`` after the link was made, and seal
``{key id, a fingerprint of its hash, expiry}`` into the link (opaque: a forwarded or
logged link shows no key id). Redeeming a link rotates the key's hash to a random value
nobody holds: the fingerprint no longer matches, so the link works once; the session it
opened keeps working because sessions name the key by id, until the key expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from shared import auth, b64url
from shared.models import ApiKey, ConsoleSession
from shared.sealed import seal, unseal

SESSION_COOKIE = "tl_console"
PRE_COOKIE = "tl_console_pre"
COOKIE_PATH = "/console"


def _sign(secret: str, purpose: str, payload: str) -> str:
    return b64url.encode(hmac.new(secret.encode(), f"{purpose}|{payload}".encode(), hashlib.sha256).digest())


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _usable(row: ApiKey | None, now: datetime) -> bool:
    return row is not None and row.revoked_at is None and (row.expires_at is None or row.expires_at > now)


def start_session(session: Session, key: ApiKey, now: datetime, minutes: int) -> str:
    """A new session for ``key``; returns its id (the cookie seals it: :func:`cookie_for`).
    Sessions that expired are deleted on the way: the table holds live sessions only."""
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    session_id = secrets.token_urlsafe(32)
    expires = now + timedelta(minutes=minutes)
    if key.expires_at is not None:
        expires = min(expires, key.expires_at)
    session.add(ConsoleSession(id_hash=_id_hash(session_id), key_id=key.id, created_at=now, expires_at=expires))
    session.flush()
    return session_id


def cookie_for(secret: str, session_id: str) -> str:
    return seal(secret, "console-session", {"s": session_id})


def session_id_of(secret: str, cookie: str | None) -> str | None:
    obj = unseal(secret, "console-session", cookie)
    sid = obj.get("s") if obj else None
    return sid if isinstance(sid, str) and sid else None


def signed_in(session: Session, secret: str, cookie: str | None, now: datetime) -> tuple[str, auth.Principal] | None:
    """The session id and the key behind a cookie, if its session is live (not ended,
    not expired) and its key still usable (not revoked, not expired)."""
    sid = session_id_of(secret, cookie)
    if sid is None:
        return None
    row = session.get(ConsoleSession, _id_hash(sid))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        return None
    key = session.get(ApiKey, row.key_id)
    if key is None or not _usable(key, now):
        return None
    return sid, auth.Principal(key_id=key.id, name=key.name, role=key.role, csm_id=key.csm_id)


def end_session(session: Session, session_id: str, now: datetime) -> None:
    row = session.get(ConsoleSession, _id_hash(session_id))
    if row is not None and row.ended_at is None:
        row.ended_at = now
        session.flush()


def csrf_token(secret: str, nonce: str) -> str:
    return _sign(secret, "console-csrf", nonce)


def csrf_ok(secret: str, nonce: str | None, presented: str | None) -> bool:
    if not nonce or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret, nonce), presented)


# ---- one-time links --------------------------------------------------------------


def _fingerprint(row: ApiKey) -> str:
    return row.key_hash[:24]


def create_link(
    session: Session,
    *,
    secret: str,
    base_url: str,
    role: str,
    csm_id: str | None,
    now: datetime,
    minutes: int,
    key_minutes: int,
    name: str | None = None,
) -> str:
    """Create a key for the link, expiring ``key_minutes`` from now, and return the URL
    that signs in with it once within ``minutes``."""
    if role == "csm" and not csm_id:
        raise ValueError("a csm link names the CSM: --csm <id>")
    row, _plaintext = auth.create_key(
        session, role=role, csm_id=csm_id, now=now, name=name or (f"console link for CSM {csm_id}" if csm_id else f"console link ({role})")
    )
    row.expires_at = now + timedelta(minutes=max(key_minutes, minutes))
    token = seal(secret, "console-link", {"k": row.id, "f": _fingerprint(row), "e": int((now + timedelta(minutes=minutes)).timestamp())})
    return f"{base_url.rstrip('/')}/console/link?token={token}"


def link_key(session: Session, secret: str, token: str | None, now: datetime) -> ApiKey | None:
    """The key a link signs in as, if the link is genuine, unexpired and unused."""
    obj = unseal(secret, "console-link", token)
    if obj is None or not isinstance(obj.get("e"), int) or obj["e"] <= now.timestamp():
        return None
    row = session.get(ApiKey, obj.get("k"))
    if row is None or not _usable(row, now) or not hmac.compare_digest(_fingerprint(row), str(obj.get("f"))):
        return None
    return row


def redeem_link(session: Session, secret: str, token: str | None, now: datetime) -> ApiKey | None:
    row = link_key(session, secret, token, now)
    if row is not None:
        row.key_hash = hashlib.sha256(secrets.token_bytes(32)).hexdigest()  # the link now matches nothing
        session.flush()
    return row
