"""A console session over its table, without the console's seeded world (so that make
mutation kills the mutants of ``signed_in`` in a second, not after building the world):
a session signs in until it ends or expires, and not once its key is revoked or expired.
Over HTTP: tests/integration/services/console/test_console_security.py."""

from __future__ import annotations

from datetime import timedelta

from services.console.session import cookie_for, end_session, signed_in, start_session
from shared import auth
from shared.db import transaction
from shared.models import ApiKey

SECRET = "s" * 32


def _start(session_factory, now, minutes=60, **key_fields) -> tuple[int, str]:
    with transaction(session_factory) as s:
        key, _plaintext = auth.create_key(s, role="csm", csm_id="ann", name="ann's key", now=now)
        for k, v in key_fields.items():
            setattr(key, k, v)
        s.flush()
        return key.id, start_session(s, key, now, minutes)


def _who(session_factory, sid, at):
    with session_factory() as s:
        return signed_in(s, SECRET, cookie_for(SECRET, sid), at)


def test_a_session_lasts_until_it_expires_or_ends(session_factory, clock):
    now = clock.now()
    key_id, sid = _start(session_factory, now)
    got = _who(session_factory, sid, now + timedelta(minutes=59, seconds=59))
    assert got is not None and got[0] == sid
    assert (got[1].key_id, got[1].role, got[1].csm_id, got[1].name) == (key_id, "csm", "ann", "ann's key")
    assert _who(session_factory, sid, now + timedelta(minutes=60)) is None  # expired at its time
    with transaction(session_factory) as s:
        end_session(s, sid, now + timedelta(minutes=1))
    assert _who(session_factory, sid, now + timedelta(minutes=2)) is None  # signed out, though not expired
    assert _who(session_factory, "no-such-session", now) is None
    with session_factory() as s:
        assert signed_in(s, SECRET, None, now) is None and signed_in(s, "o" * 32, cookie_for(SECRET, sid), now) is None


def test_a_session_ends_with_its_key(session_factory, clock):
    now = clock.now()
    key_id, sid = _start(session_factory, now)
    assert _who(session_factory, sid, now) is not None
    with transaction(session_factory) as s:
        s.get(ApiKey, key_id).revoked_at = now + timedelta(minutes=5)
    assert _who(session_factory, sid, now + timedelta(minutes=6)) is None  # revoked: refused at once
    _key, short = _start(session_factory, now, expires_at=now + timedelta(minutes=10))
    assert _who(session_factory, short, now + timedelta(minutes=9)) is not None
    assert _who(session_factory, short, now + timedelta(minutes=10)) is None  # never outlives its key
