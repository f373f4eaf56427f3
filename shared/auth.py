"""API keys with roles. A key looks like ``tl_<prefix>_<secret>``: the prefix finds the
row, the secret is only ever stored as a SHA-256 hash (keys are 256-bit random, so a
slow password hash buys nothing) and compared in constant time.

Roles: ``ingest`` (product apps sending events), ``ops`` (CS Ops authoring rules,
templates, playbooks), ``csm`` (pooled CSMs working their engagements), ``admin``
(everything, including keys). ``admin`` passes every role check.

A request holds at most one pooled connection, authentication included: a key is
checked on the request's own session when it already holds a connection, else in a
short read of its own, closed before the route's session takes one. A key verified in
the last ``TOUCHLINE_AUTH_CACHE_SECONDS`` (5 s) is not looked up again; revoking a key
forgets it at once in the process that revokes it, and within that bound everywhere
else (`touchline keys revoke` runs in a process of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import signin
from shared.db import read_transaction
from shared.errors import Forbidden, Unauthorized
from shared.models import ApiKey

ROLES = ("ingest", "ops", "csm", "admin")


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: str
    csm_id: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.name}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, role: str, name: str, now: datetime, csm_id: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext key, which is never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=role, prefix=prefix, key_hash=_hash(secret), csm_id=csm_id, created_at=now)
    session.add(row)
    session.flush()
    return row, f"tl_{prefix}_{secret}"


def _parts(presented: str) -> tuple[str, str] | None:
    """(prefix, secret) of something shaped like a key, else None."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "tl" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def authenticate(session: Session, presented: str) -> Principal | None:
    parts = _parts(presented)
    if parts is None:
        return None
    prefix, secret = parts
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(secret)):
        return None
    return Principal(key_id=row.id, name=row.name, role=row.role, csm_id=row.csm_id)


class VerifiedKeys:
    """Keys verified in the last ``ttl`` seconds, by the SHA-256 of the presented key
    (never the key itself), so a busy client costs no query per request. Only keys that
    passed are kept: a wrong key is looked up each time (and never costs a connection
    when it is not even shaped like a key). Bounded: past ``max_entries`` the oldest go."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            hit = self._entries.get(digest)
            if hit is None:
                return None
            if hit[1] <= time.monotonic():
                del self._entries[digest]
                return None
            return hit[0]

    def put(self, digest: str, principal: Principal, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._entries.pop(digest, None)
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = (principal, time.monotonic() + ttl)

    def forget(self, key_id: int) -> None:
        with self._lock:
            for digest in [d for d, (p, _) in self._entries.items() if p.key_id == key_id]:
                del self._entries[digest]


VERIFIED = VerifiedKeys()


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def count_keys(session: Session) -> int:
    """How many keys exist, revoked ones included (`touchline run` mints a first admin key when none does)."""
    return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def revoke_key(session: Session, key_id: int, now: datetime) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    row.revoked_at = now
    VERIFIED.forget(key_id)
    return True


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return value.strip()
    return request.headers.get("x-api-key")


def require(*roles: str) -> Any:
    """Dependency: the caller holds a valid key with one of ``roles`` (or admin)."""
    allowed = frozenset(roles) | {"admin"}

    def dependency(request: Request) -> Principal:
        return authorize(request, allowed)

    dependency.__name__ = f"require_{'_'.join(roles) or 'admin'}"
    return Depends(dependency)


def authorize(request: Request, allowed: frozenset[str]) -> Principal:
    """The check behind :func:`require`, run on every request (a module-level function,
    so it is what runs per request, not a closure built once at import)."""
    presented = _presented_key(request)
    if not presented:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (create one with `touchline keys create`)")
    principal = signin.guard_api(request, presented, lambda: _verified(request, presented))  # throttled, logged, counted
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    if principal.role not in allowed:
        raise Forbidden(f"this route needs role {' or '.join(sorted(allowed))}; your key has role {principal.role!r}")
    request.state.principal = principal
    return principal


def _verified(request: Request, presented: str) -> Principal | None:
    """The key's principal: from :data:`VERIFIED`, else looked up on the connection the
    request already holds, else in a short read of its own (closed at once, so the
    request never holds two; never SQLite's write lock)."""
    from shared.api import context_of  # late import: avoids a cycle

    digest = _hash(presented)
    principal = VERIFIED.get(digest)
    if principal is not None or _parts(presented) is None:  # junk costs no connection
        return principal
    ctx = context_of(request)
    held: Session | None = getattr(request.state, "db_session", None)
    if held is not None and held.in_transaction():
        principal = authenticate(held, presented)
    else:
        with read_transaction(ctx.session_factory) as session:
            principal = authenticate(session, presented)
    if principal is not None:
        VERIFIED.put(digest, principal, ctx.settings.auth_cache_seconds)
    return principal
