"""The console session's pure checks, fast enough to kill their mutants before the
console's seeded world is built (make mutation): a CSRF token is bound to the nonce it
was made for (the session id, or the pre-sign-in nonce), and a session cookie names its
session only when we sealed it, for that purpose, under this secret. The same over HTTP:
tests/integration/services/console/test_console_edges.py."""

from __future__ import annotations

from services.console.session import cookie_for, csrf_ok, csrf_token, session_id_of
from shared.sealed import seal

SECRET = "s" * 32
OTHER = "o" * 32


def test_a_csrf_token_passes_only_with_its_own_nonce_and_secret():
    token = csrf_token(SECRET, "session-a")
    assert csrf_ok(SECRET, "session-a", token)
    assert not csrf_ok(SECRET, "session-b", token)  # another session's token
    assert not csrf_ok(SECRET, "pre-nonce", token)  # the pre-sign-in nonce's
    assert not csrf_ok(OTHER, "session-a", token)
    assert not csrf_ok(SECRET, "session-a", token[:-1])
    assert not csrf_ok(SECRET, "session-a", None) and not csrf_ok(SECRET, None, token)
    assert not csrf_ok(SECRET, "", csrf_token(SECRET, "")) and not csrf_ok(SECRET, "session-a", "")
    assert csrf_token(SECRET, "session-a") != csrf_token(SECRET, "session-b")


def test_a_session_cookie_names_its_session_only_when_sealed_by_us_for_sessions():
    cookie = cookie_for(SECRET, "sid-1")
    assert session_id_of(SECRET, cookie) == "sid-1"
    assert session_id_of(OTHER, cookie) is None
    assert session_id_of(SECRET, None) is None and session_id_of(SECRET, "") is None
    assert session_id_of(SECRET, seal(SECRET, "console-link", {"s": "sid-1"})) is None  # another purpose
    for payload in ({"s": ""}, {"s": 7}, {"s": None}, {"x": "sid-1"}):
        assert session_id_of(SECRET, seal(SECRET, "console-session", payload)) is None, payload
