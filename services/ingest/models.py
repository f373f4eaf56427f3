"""Tables owned by ingest: accounts, users (contacts), the raw event store (also the
dedupe index), daily usage rollups and last-seen markers. Days are UTC days."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Float, ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, JSONType, UTCDateTime


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        Index("ix_accounts_segment", "segment"),
        Index("ix_accounts_lifecycle_stage", "lifecycle_stage"),
        Index("ix_accounts_plan", "plan"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    plan: Mapped[str | None] = mapped_column(String(64))
    arr: Mapped[float | None] = mapped_column(Float)
    seats: Mapped[int | None] = mapped_column(Integer)
    segment: Mapped[str | None] = mapped_column(String(64))
    lifecycle_stage: Mapped[str | None] = mapped_column(String(64))
    lifecycle_stage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    renewal_date: Mapped[date | None] = mapped_column(Date)
    signup_date: Mapped[date | None] = mapped_column(Date)
    owner_email: Mapped[str | None] = mapped_column(String(254))
    # What the contract outcomes say (docs/events.md, "contract"): active or churned, as of
    # the effective date of the latest one; null before the first.
    contract_state: Mapped[str | None] = mapped_column(String(16))
    contract_state_since: Mapped[date | None] = mapped_column(Date)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Event time of the last trait change applied: an older identify/group arriving late
    # does not overwrite a newer one.
    traits_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        Index("ix_users_email", "email"),
    )

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str | None] = mapped_column(String(64))
    traits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    traits_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RawEvent(Base):
    """Every accepted event, kept for backtests; its primary key is the dedupe index."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_account_ts", "account_id", "timestamp"),
        # Append-only by received_at: a BRIN index on PostgreSQL costs almost nothing per
        # insert and is all retention pruning needs.
        Index("ix_events_received_at", "received_at", postgresql_using="brin"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    properties: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContractOutcome(Base):
    """A contract outcome (renewed, churned, contracted, expanded) of an account, from a
    ``contract`` event or recorded over the API; keyed by its event id, so a re-sent one is
    stored once. Kept as long as the account is (raw events are pruned; these are not)."""

    __tablename__ = "contract_outcomes"
    __table_args__ = (
        ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        Index("ix_contract_outcomes_account", "account_id", "effective_date"),
        Index("ix_contract_outcomes_effective_date", "effective_date"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    arr_before: Mapped[float] = mapped_column(Float)
    arr_after: Mapped[float] = mapped_column(Float)
    effective_date: Mapped[date] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16))  # "event" (Kafka or POST /v1/events) or "api"
    recorded_by: Mapped[str | None] = mapped_column(String(128))  # the API key's name, for "api"
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())  # the event's timestamp
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UsageDaily(Base):
    """Count of each track event per account per UTC day."""

    __tablename__ = "usage_daily"
    __table_args__ = (Index("ix_usage_daily_day", "day"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    event_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class UserActivityDaily(Base):
    """One row per active user per account per UTC day: distinct active users over
    any window, and per-user active days, are counts over these rows."""

    __tablename__ = "user_activity_daily"
    __table_args__ = (Index("ix_user_activity_daily_day", "day"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class AccountEventSeen(Base):
    __tablename__ = "account_event_seen"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserEventSeen(Base):
    __tablename__ = "user_event_seen"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
