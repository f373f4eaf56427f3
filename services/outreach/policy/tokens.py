"""Signed unsubscribe tokens: ``<base64url(json)>.<base64url(hmac-sha256)>``.

The key is derived from ``settings.secret`` for this one purpose, so a token can
neither be forged nor replayed as any other kind of Touchline credential. Tokens do
not expire: an unsubscribe link in a two-year-old email must still work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import lru_cache

PURPOSE = b"touchline/unsubscribe/v1"


@lru_cache(maxsize=8)
def _key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(..., separators=(",", ":")) builds per call


def make_token(secret_key: str, *, email: str, account_id: str, message_id: str | None = None) -> str:
    payload = _COMPACT.encode({"e": email.lower(), "a": account_id, "m": message_id}).encode()
    sig = hmac.digest(_key(secret_key), payload, "sha256")
    return f"{_b64(payload)}.{_b64(sig)}"


def read_token(secret_key: str, token: str) -> dict | None:
    """The token's payload, or None if it is malformed or its signature is wrong."""
    try:
        body, _, sig = token.partition(".")
        payload = _unb64(body)
        expected = hmac.new(_key(secret_key), payload, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(sig)):
            return None
        data = json.loads(payload)
        if not isinstance(data, dict) or not isinstance(data.get("e"), str):
            return None
        return {"email": data["e"], "account_id": data.get("a"), "message_id": data.get("m")}
    except (ValueError, UnicodeDecodeError):
        return None


def unsubscribe_url(settings, *, email: str, account_id: str, message_id: str | None = None) -> str:
    return f"{settings.public_url}/unsubscribe/{make_token(settings.secret, email=email, account_id=account_id, message_id=message_id)}"


def email_hash(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()
