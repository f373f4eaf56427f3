"""API keys with roles. A key looks like ``tl_<prefix>_<secret>``: the prefix finds the
row, the secret is only ever stored as a SHA-256 hash (keys are 256-bit random, so a
slow password hash buys nothing) and compared in constant time.

Roles: ``ingest`` (product apps sending events), ``ops`` (CS Ops authoring rules,
templates, playbooks), ``csm`` (pooled CSMs working their engagements), ``admin``
(everything, including keys). ``admin`` passes every role check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

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


def authenticate(session: Session, presented: str) -> Principal | None:
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "tl":
        return None
    _, prefix, secret = parts
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash(secret)):
        return None
    return Principal(key_id=row.id, name=row.name, role=row.role, csm_id=row.csm_id)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id: int, now: datetime) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    row.revoked_at = now
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
    from shared.api import session_factory_of  # late import: avoids a cycle

    presented = _presented_key(request)
    if not presented:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (create one with `touchline keys create`)")
    with read_transaction(session_factory_of(request)) as session:  # never SQLite's write lock
        principal = authenticate(session, presented)
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    if principal.role not in allowed:
        raise Forbidden(f"this route needs role {' or '.join(sorted(allowed))}; your key has role {principal.role!r}")
    request.state.principal = principal
    return principal
