"""Sealed tokens: what a link or a cookie carries back to us, opaque and tamper-proof.

A sealed token is ``base64url(nonce || AES-256-GCM(key, nonce, json(obj), aad=purpose))``.
The key is derived from the secret (:attr:`Settings.secret`) for one purpose, so a token
minted for one use (an unsubscribe link, a console session) is refused as any other. GCM
authenticates what it encrypts: a changed byte, a token sealed under another secret or
another purpose all unseal to ``None``.

Why sealed rather than signed (issue 18, finding 8): a signed token is readable, and the
unsubscribe links carried the address and the account id in base64 JSON to anyone who
saw the URL (mail logs, link scanners, browser history, a forwarded mail). Why sealed
rather than a random id looked up in a table: these tokens are minted in the hot path
of outreach (one per message, in the signal worker's batch) and must work for years
(an unsubscribe link in an old mail); sealing needs no write, no table that grows with
every mail, and no lookup to refuse a forged one. What it cannot do is revoke a single
token: state that must end on the server (console sessions) keeps a row of its own and
seals only that row's id.

Nonces are random (96 bits): safe for far more tokens per key than Touchline mints.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import secrets
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared import b64url

NONCE_BYTES = 12
MAX_TOKEN_CHARS = 4096
# json.dumps(obj, separators=(",", ":"), sort_keys=True), without building an encoder per
# call (two tokens a customer email, in the signal worker's batch).
_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


@lru_cache(maxsize=32)
def _aead(secret: str, purpose: str) -> AESGCM:
    return AESGCM(hmac.new(secret.encode(), b"touchline/sealed/v1/" + purpose.encode(), hashlib.sha256).digest())


def seal(secret: str, purpose: str, obj: dict[str, Any]) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    plaintext = _JSON.encode(obj).encode()
    return b64url.encode(nonce + _aead(secret, purpose).encrypt(nonce, plaintext, purpose.encode()))


def unseal(secret: str, purpose: str, token: str | None) -> dict[str, Any] | None:
    """The sealed object, or None if ``token`` is not one we sealed for ``purpose``."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        raw = b64url.decode(token)
        if len(raw) <= NONCE_BYTES:
            return None
        obj = json.loads(_aead(secret, purpose).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode()))
    except (binascii.Error, ValueError, InvalidTag):  # ValueError: JSON and non-ASCII input alike
        return None
    return obj if isinstance(obj, dict) else None
