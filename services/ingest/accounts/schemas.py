"""Request and response shapes of the accounts and users API. An account is answered
as ingest's snapshot of it (:class:`services.ingest.snapshots.AccountInfo`, what the
other services read too)."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from services.ingest.snapshots import AccountInfo
from shared.events import AccountTraits, UserTraits


def _non_finite(value: Any, path: str = "") -> str | None:
    """The JSON pointer of the first NaN or infinite number in ``value`` (Python's json
    reads NaN, Infinity and 1e400 as such; PostgreSQL's jsonb refuses them), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}/{str(k).replace('~', '~0').replace('/', '~1')}")
        if found is not None:
            return found
    return None


class _FiniteTraits(BaseModel):
    """Unknown traits are stored as they came (jsonb): a NaN or Infinity among them was a
    500 on PostgreSQL at the insert; now it is a 422 naming the trait."""

    @model_validator(mode="after")
    def _finite_extras(self) -> _FiniteTraits:
        where = _non_finite(self.model_extra or {})
        if where is not None:
            raise ValueError(f"the trait at {where} is NaN or Infinity, which JSON (RFC 8259) has not: send null, a number or a string")
        return self


class AccountIn(_FiniteTraits, AccountTraits):
    """Traits to set on an account. Known traits are typed; any other key is kept in ``traits``."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "name": "Acme Inc",
                    "plan": "pro",
                    "arr": 24000,
                    "seats": 25,
                    "segment": "smb",
                    "lifecycle_stage": "onboarding",
                    "renewal_date": "2027-03-01",
                }
            ]
        },
    )


class UserIn(_FiniteTraits, UserTraits):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"email": "ada@acme.test", "name": "Ada", "role": "champion", "timezone": "Europe/London"}]},
    )


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    id: str
    email: str | None
    name: str | None
    role: str | None
    timezone: str | None
    traits: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


class Page(BaseModel):
    next_cursor: str | None = None


class AccountPage(Page):
    items: list[AccountInfo]


class UserPage(Page):
    items: list[UserOut]


class UsageDay(BaseModel):
    day: date
    events: int
    by_event: dict[str, int]
    active_users: int


class UsageTotals(BaseModel):
    events: int
    by_event: dict[str, int]
    active_users: int
    active_days: int


class UsageOut(BaseModel):
    account_id: str
    user_id: str | None = None
    start: date
    end: date
    totals: UsageTotals
    last_seen: dict[str, datetime]
    days: list[UsageDay]
