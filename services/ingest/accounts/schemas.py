"""Request and response shapes of the accounts and users API. An account is answered
as ingest's snapshot of it (:class:`services.ingest.snapshots.AccountInfo`, what the
other services read too)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.ingest.snapshots import AccountInfo
from shared.events import AccountTraits, UserTraits


class AccountIn(AccountTraits):
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


class UserIn(UserTraits):
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
