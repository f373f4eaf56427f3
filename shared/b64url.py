"""Unpadded base64url (RFC 4648 section 5, the ``=`` padding dropped), the one text form of
bytes in Touchline's URLs, cookies and cursors: sealed tokens (shared/sealed.py), the console
session's signature (services/console/session.py), the legacy unsubscribe links
(services/outreach/policy/tokens.py) and list cursors (shared/pagination.py)."""

from __future__ import annotations

import base64


def encode(data: bytes) -> str:
    """``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(text: str, *, strict: bool = False) -> bytes:
    """The bytes of unpadded (or padded) base64url ``text``. By default characters outside
    the alphabet are skipped, as :func:`base64.urlsafe_b64decode` does; ``strict`` refuses
    them (:class:`binascii.Error`), though it takes the standard alphabet's ``+`` and ``/``
    too (as the list cursors always have). Either way a wrong length raises :class:`binascii.Error`
    and non-ASCII text :class:`ValueError`."""
    padded = text + "=" * (-len(text) % 4)
    if strict:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    return base64.urlsafe_b64decode(padded)
