"""The frozen shapes ingest hands out: an account (:class:`AccountInfo`, also the
accounts API's response), a contact and a stored event. A caller cannot change ingest's
state by assigning to what it read."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class AccountInfo:
    id: str
    name: str | None
    plan: str | None
    arr: float | None
    seats: int | None
    segment: str | None
    lifecycle_stage: str | None
    lifecycle_stage_changed_at: datetime | None
    renewal_date: date | None
    signup_date: date | None
    owner_email: str | None
    contract_state: str | None  # active or churned, from the contract outcomes; null before the first
    contract_state_since: date | None  # the effective date of the outcome that set it
    traits: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Contact:
    account_id: str
    id: str
    email: str | None
    name: str | None
    role: str | None
    timezone: str | None
    traits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    account_id: str
    user_id: str | None
    name: str
    timestamp: datetime
    properties: dict[str, Any]


@dataclass(frozen=True)
class ContractOutcomeInfo:
    """A contract outcome as ingest stores it (docs/events.md, "contract")."""

    event_id: str
    account_id: str
    kind: str
    arr_before: float
    arr_after: float
    effective_date: date
    note: str | None
    source: str
    recorded_by: str | None
    occurred_at: datetime
    received_at: datetime
