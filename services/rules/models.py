"""Tables owned by the rules service: rules and their versions, signals, cooldown
claims and scheduled-tick state."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, Float, ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, JSONType, UTCDateTime
from shared.signals import Signal


class Rule(Base):
    """The head of a rule: its current version, state and the columns lists filter on.
    The definition itself lives in :class:`RuleVersion` (every change is a new version)."""

    __tablename__ = "rules"
    __table_args__ = (Index("ix_rules_kind", "kind"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    trigger_type: Mapped[str] = mapped_column(String(16))  # "events" or "schedule"
    trigger_events: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    current_version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped by every change (new version, enable, disable, delete): workers compare
    # count(*) and sum(revision) to know when to reload their event-name index.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RuleVersion(Base):
    __tablename__ = "rule_versions"
    __table_args__ = (ForeignKeyConstraint(["rule_id"], ["rules.id"]),)

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


class SignalDayCount(Base):
    """Signals fired per UTC day and kind: kept by their one writer (``insert_signals``)
    in the signals' own transaction, so it equals their count (migration 0026 backfilled
    it; signals are never deleted). The overview's 30-day chart reads it instead of
    grouping ~300,000 signals at 1,000,000."""

    __tablename__ = "signal_day_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


class AccountLastSignal(Base):
    """When each account's latest rule signal fired (a segment's entering or leaving is
    left out), kept like :class:`SignalDayCount`: an account has a rule signal since T
    exactly when this is at or after T (the accounts list's "rule signal in 30 days")."""

    __tablename__ = "account_last_signals"
    __table_args__ = (Index("ix_account_last_signals_fired", "fired_at", "account_id"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SignalRecord(Base):
    """A firing. ``signal_id`` is deterministic (rule, account, firing key), so a
    redelivered event or a re-run tick inserts nothing new."""

    __tablename__ = "signals"
    __table_args__ = (
        Index("ix_signals_account_fired", "account_id", "fired_at"),
        Index("ix_signals_rule_fired", "rule_id", "fired_at"),
        Index("ix_signals_kind_fired", "kind", "fired_at"),
        Index("ix_signals_fired_at", "fired_at"),
        Index("ix_signals_decision_due", "decision_due_at"),
        # The console's list sorted by rule or kind, ties by id (migration 0027).
        Index("ix_signals_rule_id", "rule_id", "signal_id"),
        Index("ix_signals_kind_id", "kind", "signal_id"),
    )

    signal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    rule_version: Mapped[int] = mapped_column(Integer)
    rule_name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    trigger: Mapped[str] = mapped_column(String(16))  # "event" or "schedule"
    event_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The orphan sweeper's schedule: when to check next that outreach recorded a decision
    # for this signal; NULL once it has (or for signals older than the sweeper).
    decision_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    republished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def to_signal(self) -> Signal:
        """The signal as published on cs.signals (the outbox payload, and the sweeper's republish)."""
        return Signal(
            signal_id=self.signal_id,
            rule_id=self.rule_id,
            rule_version=self.rule_version,
            rule_name=self.rule_name,
            account_id=self.account_id,
            user_id=self.user_id,
            kind=self.kind,
            severity=self.severity,
            fired_at=self.fired_at,
            evidence=self.evidence,
        )


class RuleCooldown(Base):
    """One row per (rule, account): the claim that makes "once per cooldown" hold even
    with two workers racing (a conditional upsert; only one wins)."""

    __tablename__ = "rule_cooldowns"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime] = mapped_column(UTCDateTime())


class RuleTick(Base):
    """When each scheduled rule last ran and is next due: a restart does not re-run a tick."""

    __tablename__ = "rule_ticks"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_tick_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class HealthModelVersion(Base):
    """Every version of the health model (one model; the highest version is current).
    Who changed it is in the audit log (object_type ``health_model``)."""

    __tablename__ = "health_model_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


class HealthScore(Base):
    """An account's health on one UTC day (the daily job, or on demand: the last scoring
    of the day wins), with each component's value, band and points, and the change
    against the scores 7 and 30 days before."""

    __tablename__ = "health_scores"
    __table_args__ = (Index("ix_health_scores_day_score", "day", "score"),)

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    label: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_version: Mapped[int] = mapped_column(Integer)
    components: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    change_7d: Mapped[float | None] = mapped_column(Float, nullable=True)
    change_30d: Mapped[float | None] = mapped_column(Float, nullable=True)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HealthRun(Base):
    """The daily scoring's claim per UTC day and its progress: the accounts are scored in
    chunks in id order, ``cursor`` the last account stored (moved in the transaction that
    stores the chunk's scores, only from the value the chunk started at), ``finished_at``
    set with the last chunk. So two rules workers store each chunk once, and a restarted
    worker resumes after the last stored chunk and never scores a finished day again."""

    __tablename__ = "health_runs"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    model_version: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    cursor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Segment(Base):
    """The head of a named segment (docs/segments.md): its current version and state.
    The definition lives in :class:`SegmentVersion`; who changed it is in the audit log
    (object_type ``segment``)."""

    __tablename__ = "segments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SegmentVersion(Base):
    __tablename__ = "segment_versions"
    __table_args__ = (ForeignKeyConstraint(["segment_id"], ["segments.id"]),)

    segment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


class SegmentMember(Base):
    """An account in a segment now, since when, and by which version of its definition.
    Kept set-based by the membership refresh (services/rules/evaluation/segments.py):
    a row inserted is a ``segment_entered`` signal, a row deleted a ``segment_left``."""

    __tablename__ = "segment_members"
    __table_args__ = (Index("ix_segment_members_account", "account_id"),)

    segment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)


class SegmentSize(Base):
    """A segment's size on one UTC day: its number of members at the day's last
    whole-population refresh (the tick)."""

    __tablename__ = "segment_sizes"

    segment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime())
