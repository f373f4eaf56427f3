"""Unsubscribe tokens (issue 18, finding 8): sealed, so opaque and unforgeable; the
readable tokens mailed by earlier versions still work under the same secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from services.outreach.policy.tokens import make_token, read_token
from shared.sealed import seal

SECRET = "s" * 40


def _legacy(secret: str, payload: dict) -> str:
    """A token as versions before issue 18 minted it."""
    key = hmac.new(secret.encode(), b"touchline/unsubscribe/v1", hashlib.sha256).digest()
    body = json.dumps(payload, separators=(",", ":")).encode()
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return f"{b64(body)}.{b64(hmac.digest(key, body, 'sha256'))}"


def test_a_token_reads_back_and_shows_nothing():
    token = make_token(SECRET, email="Ada@Acme.test", account_id="acme-corp", message_id="m-1")
    assert read_token(SECRET, token) == {"email": "ada@acme.test", "account_id": "acme-corp", "message_id": "m-1"}
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    # Whole values as needles: a short one ("ada") turns up in random ciphertext about one
    # token in a hundred, which made this test fail by chance.
    for readable in (token, raw.decode("latin-1")):
        assert "ada@acme.test" not in readable.lower() and "acme-corp" not in readable.lower()
    assert token != make_token(SECRET, email="ada@acme.test", account_id="acme-corp", message_id="m-1")  # fresh nonce


def test_forged_altered_and_foreign_tokens_are_refused():
    token = make_token(SECRET, email="ada@acme.test", account_id="acme")
    assert read_token("o" * 40, token) is None  # another secret
    for i in (0, len(token) // 2, len(token) - 1):
        flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert read_token(SECRET, flipped) is None
    assert read_token(SECRET, seal(SECRET, "console-link", {"e": "ada@acme.test"})) is None  # another purpose
    for junk in ("", "x", "x.y", "é", "A" * 5000, "....."):
        assert read_token(SECRET, junk) is None


def test_links_mailed_by_earlier_versions_still_unsubscribe():
    old = _legacy(SECRET, {"e": "ada@acme.test", "a": "acme", "m": "m-9"})
    assert read_token(SECRET, old) == {"email": "ada@acme.test", "account_id": "acme", "message_id": "m-9"}
    assert read_token("o" * 40, old) is None
    assert read_token(SECRET, _legacy("dev-insecure-change-me", {"e": "bob@acme.test"})) is None
