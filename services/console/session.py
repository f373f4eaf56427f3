"""Console sign-in: signed session cookies, CSRF tokens and one-time sign-in links.

A session is a cookie holding ``{key id, expiry, csrf nonce}``, sealed
(:mod:`shared.sealed`: AES-GCM under the secret, so it can be neither read nor altered);
nothing is stored on the server. Every request loads
the API key row again, so revoking the key ends its console sessions at once. Signing
out deletes the cookie; a copy taken before then stays valid until it expires
(``TOUCHLINE_CONSOLE_SESSION_MINUTES``), which is why sessions are short.

CSRF: every form carries ``HMAC(secret, nonce)``. The nonce is the session's, or before
sign-in a random one kept in its own cookie, so the sign-in form is covered too.

One-time links (``touchline console-link``) create a key of their own and seal
``{key id, a fingerprint of its hash, expiry}`` into the link (opaque: a forwarded or
logged link shows no key id). Redeeming a link rotates the key's
hash to a random value nobody holds: the fingerprint no longer matches, so the link
works once; the session it opened keeps working because sessions name the key by id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from shared import auth
from shared.sealed import seal, unseal
from shared.models import ApiKey

SESSION_COOKIE = "tl_console"
PRE_COOKIE = "tl_console_pre"
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class ConsoleSession:
    key_id: int
    expires: int  # unix seconds
    nonce: str


def _sign(secret: str, purpose: str, payload: str) -> str:
    return (
        base64.urlsafe_b64encode(hmac.new(secret.encode(), f"{purpose}|{payload}".encode(), hashlib.sha256).digest()).decode().rstrip("=")
    )


def new_session(key_id: int, now: datetime, minutes: int) -> ConsoleSession:
    return ConsoleSession(key_id, int((now + timedelta(minutes=minutes)).timestamp()), secrets.token_urlsafe(16))


def encode_session(secret: str, s: ConsoleSession) -> str:
    return seal(secret, "console-session", {"k": s.key_id, "e": s.expires, "n": s.nonce})


def decode_session(secret: str, cookie: str | None, now: datetime) -> ConsoleSession | None:
    obj = unseal(secret, "console-session", cookie)
    if obj is None:
        return None
    try:
        s = ConsoleSession(int(obj["k"]), int(obj["e"]), str(obj["n"]))
    except (KeyError, TypeError, ValueError):
        return None
    return s if s.expires > now.timestamp() else None


def csrf_token(secret: str, nonce: str) -> str:
    return _sign(secret, "console-csrf", nonce)


def csrf_ok(secret: str, nonce: str | None, presented: str | None) -> bool:
    if not nonce or not presented:
        return False
    return hmac.compare_digest(csrf_token(secret, nonce), presented)


def principal_for(session: Session, key_id: int) -> auth.Principal | None:
    """The key behind a session, unless it was revoked since."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    return auth.Principal(key_id=row.id, name=row.name, role=row.role, csm_id=row.csm_id)


# ---- one-time links --------------------------------------------------------------


def _fingerprint(row: ApiKey) -> str:
    return row.key_hash[:24]


def create_link(
    session: Session, *, secret: str, base_url: str, role: str, csm_id: str | None, now: datetime, minutes: int, name: str | None = None
) -> str:
    """Create a key for the link and return the URL that signs in with it once."""
    if role == "csm" and not csm_id:
        raise ValueError("a csm link names the CSM: --csm <id>")
    row, _plaintext = auth.create_key(
        session, role=role, csm_id=csm_id, now=now, name=name or (f"console link for CSM {csm_id}" if csm_id else f"console link ({role})")
    )
    token = seal(secret, "console-link", {"k": row.id, "f": _fingerprint(row), "e": int((now + timedelta(minutes=minutes)).timestamp())})
    return f"{base_url.rstrip('/')}/console/link?token={token}"


def link_key(session: Session, secret: str, token: str | None, now: datetime) -> ApiKey | None:
    """The key a link signs in as, if the link is genuine, unexpired and unused."""
    obj = unseal(secret, "console-link", token)
    if obj is None or not isinstance(obj.get("e"), int) or obj["e"] <= now.timestamp():
        return None
    row = session.get(ApiKey, obj.get("k"))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(_fingerprint(row), str(obj.get("f"))):
        return None
    return row


def redeem_link(session: Session, secret: str, token: str | None, now: datetime) -> ApiKey | None:
    row = link_key(session, secret, token, now)
    if row is not None:
        row.key_hash = hashlib.sha256(secrets.token_bytes(32)).hexdigest()  # the link now matches nothing
        session.flush()
    return row
