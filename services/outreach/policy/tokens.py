"""Unsubscribe tokens: opaque and sealed (:mod:`shared.sealed`, purpose ``unsubscribe``),
so the link in a mail neither shows the address or the account it unsubscribes nor can be
forged or altered. Tokens do not expire: an unsubscribe link in a two-year-old email must
still work.

Links mailed before issue 18 carry the older, readable form ``<base64url(json)>.<base64url
(hmac-sha256)>`` (a dot tells them apart: sealed tokens have none). They are still honoured,
checked as before, so an old mail's link keeps working under the same
``TOUCHLINE_SECRET_KEY``; nothing mints them any more. (Development installs that ran on the
old placeholder secret now have a generated one: their old links stop working, as every
token signed with a public secret must.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from shared import b64url
from shared.sealed import seal, unseal
from shared.settings import Settings

PURPOSE = "unsubscribe"
LEGACY_PURPOSE = b"touchline/unsubscribe/v1"


def make_token(secret: str, *, email: str, account_id: str, message_id: str | None = None) -> str:
    return seal(secret, PURPOSE, {"e": email.lower(), "a": account_id, "m": message_id})


def read_token(secret: str, token: str) -> dict[str, Any] | None:
    """The token's payload, or None if it is malformed, altered or not ours."""
    data = _read_legacy(secret, token) if "." in token else unseal(secret, PURPOSE, token)
    if data is None or not isinstance(data.get("e"), str):
        return None
    return {"email": data["e"], "account_id": data.get("a"), "message_id": data.get("m")}


@lru_cache(maxsize=8)
def _legacy_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), LEGACY_PURPOSE, hashlib.sha256).digest()


def _read_legacy(secret: str, token: str) -> dict[str, Any] | None:
    try:
        body, _, sig = token.partition(".")
        payload = b64url.decode(body)
        if not hmac.compare_digest(hmac.new(_legacy_key(secret), payload, hashlib.sha256).digest(), b64url.decode(sig)):
            return None
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def unsubscribe_url(settings: Settings, *, email: str, account_id: str, message_id: str | None = None) -> str:
    return f"{settings.public_url}/unsubscribe/{make_token(settings.secret, email=email, account_id=account_id, message_id=message_id)}"


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()
