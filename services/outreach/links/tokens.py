"""The tokens of the links a customer message carries back to us: a tracked link
(``/r/{token}``) and a survey's score and comment links (``/s/{token}``).

Each is a sealed token (:mod:`shared.sealed`: AES-256-GCM under a key derived by HMAC
from the app's secret for the token's one purpose), so nothing in it is readable (not
the target URL, the message, the account or the contact) and a changed byte, another
secret or another purpose unseals to nothing. Sealed rather than a row per link: links
are minted for every customer message in the signal worker's batch, and a click must
cost no lookup (docs/security.md, "Links and cookies are sealed").

Two more checks than :func:`shared.sealed.unseal`:

* **canonical text only.** base64url decoding skips foreign characters and ignores the
  last character's unused bits, so many strings decode to one token. The click's event
  id is derived from the token's text (a replayed request is one click), so a token
  must be the one text we minted (``encode(decode(t)) == t``), or a caller could make
  each replay look new.
* **an expiry** (``x``, epoch seconds) inside the seal: an expired token still names
  where it leads (the caller may redirect there) but records nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import b64url
from shared.sealed import seal, unseal

LINK = "link"  # a tracked link: /r/{token}
SURVEY = "survey"  # a survey's score and comment links: /s/{token}
# A tracked link with a long URL stays well under this; anything longer is not ours.
MAX_TOKEN_CHARS = 2048
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Opened:
    """What a token we sealed says, and whether it is past its expiry."""

    data: dict[str, Any]
    expired: bool


def mint(secret: str, purpose: str, data: dict[str, Any], *, now: datetime, valid_for: timedelta) -> str:
    return seal(secret, purpose, {**data, "x": int((now + valid_for).timestamp())})


def open_token(secret: str, purpose: str, token: str, *, now: datetime) -> Opened | None:
    """The token's payload, or None if it is not one we sealed for ``purpose`` in its
    one canonical text (forged, altered, truncated, too long, another purpose)."""
    if not token or len(token) > MAX_TOKEN_CHARS or not _ALPHABET.fullmatch(token):
        return None
    try:
        if b64url.encode(b64url.decode(token)) != token:
            return None
    except ValueError:  # binascii.Error is a ValueError
        return None
    data = unseal(secret, purpose, token)
    if data is None or not isinstance(data.get("x"), int):
        return None
    return Opened(data, expired=now.timestamp() >= data["x"])
