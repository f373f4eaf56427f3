"""Tables owned by outreach. One module so Alembic and the tests see them all; the
behaviour lives in the feature folders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, JSONType, UTCDateTime


class Template(Base):
    """A message template: subject, HTML body and text body (Jinja2, sandboxed)."""

    __tablename__ = "outreach_templates"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str] = mapped_column(Text, default="")
    # "customer" copy or an "internal" message (to the account owner, a pooled CSM): a
    # playbook may send each only to its own kind of recipient (docs/outreach.md).
    audience: Mapped[str] = mapped_column(String(16), default="customer", server_default="customer")
    # Extra sample values (e.g. the evidence keys of the rule it is written for) merged
    # into the sample context the template is validated against on save.
    sample_context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Playbook(Base):
    """The head of a playbook: its current version and whether it enrols."""

    __tablename__ = "playbooks"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    current_version: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlaybookVersion(Base):
    """An immutable version of a playbook definition; enrolments point at one."""

    __tablename__ = "playbook_versions"

    playbook_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200), default="")


class SignalReceipt(Base):
    """Every signal outreach has processed: the dedupe index of the enrolment consumer."""

    __tablename__ = "outreach_signal_receipts"

    signal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    rule_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enrolled: Mapped[int] = mapped_column(Integer, default=0)


class OutreachDecision(Base):
    """What outreach did with a signal, one row per signal, written in the same
    transaction as its receipt and enrolments: ``enrolled`` (treated in at least one
    playbook), ``held_out`` (only as a holdout), ``skipped`` with a reason, or
    ``no_matching_playbook``. ``playbooks`` lists each matching playbook's outcome.
    The rules service's orphan sweeper republishes a signal that has none."""

    __tablename__ = "outreach_decisions"
    __table_args__ = (Index("ix_outreach_decisions_account", "account_id", "decided_at"),)

    signal_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    rule_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    playbooks: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Enrollment(Base):
    """One account in one playbook version. ``active_key`` is ``playbook_id:account_id``
    while the enrolment runs and NULL after: the unique index on it is what keeps an
    account in a playbook at most once at a time (NULLs never collide). ``due_at`` is
    the durable timer: the step at ``step_index`` runs once the clock passes it."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("active_key", name="uq_enrollments_active_key"),
        Index("ix_enrollments_due", "status", "due_at"),
        Index("ix_enrollments_playbook", "playbook_id", "status"),
        Index("ix_enrollments_account", "account_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    playbook_id: Mapped[str] = mapped_column(String(128))
    playbook_version: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(String(128))
    signal_id: Mapped[str] = mapped_column(String(128))
    signal: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # active, converted, completed, failed
    active_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    history: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    outcome_detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Message(Base):
    """The outbox: one row per (enrolment, step, recipient), whatever happened to it.
    ``id`` is the deterministic idempotency key (uuid5), so redoing a step is a no-op.
    States: queued, sending, sent, failed, skipped (with ``skip_reason``), uncertain (the
    peer may or may not have it: no reply to SMTP's final dot; an operator decides)."""

    __tablename__ = "messages"
    __table_args__ = (
        # The sender's claim order, ties by id, so a claim stops at its limit (migration 0028).
        Index("ix_messages_state_due", "state", "next_attempt_at", "id"),
        Index("ix_messages_account", "account_id", "created_at"),
        Index("ix_messages_contact", "account_id", "user_id", "created_at"),
        # Covering the playbook report's and funnel's grouped counts (migration 0025).
        Index("ix_messages_playbook", "playbook_id", "state", "skip_reason", "step_id"),
        Index("ix_messages_enrollment", "enrollment_id"),
        Index("ix_messages_inapp", "channel", "account_id", "user_id"),
        Index("ix_messages_resource", "resource_id"),
        Index("ix_messages_broadcast", "broadcast_id", "state"),
        # The message list, newest first (migration 0023), covering the overview's counts (0025).
        Index("ix_messages_created", "created_at", "id", "channel", "state", "skip_reason"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    enrollment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    playbook_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    step_id: Mapped[str] = mapped_column(String(128), default="")
    # One "touch" is one step execution toward one account, whatever its recipient count:
    # account frequency caps count touches, so a broadcast to ten users is one touch.
    touch_key: Mapped[str] = mapped_column(String(300), default="")
    account_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    channel: Mapped[str] = mapped_column(String(16))  # email, webhook, inapp
    # "customer" (a touch: counted by the contact policy) or "internal" (to the team: an
    # engagement notice, an owner brief, a webhook), never counted against the customer.
    audience: Mapped[str] = mapped_column(String(16), default="customer", server_default="customer")
    recipient: Mapped[str] = mapped_column(String(2000), default="")
    template_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The library resource a recommend step chose for this recipient (its reasons are in
    # payload["recommendation"]); the contact never gets the same one twice.
    resource_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The broadcast that sent it (docs/broadcasts.md); such a message has no enrolment.
    broadcast_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    html_body: Mapped[str] = mapped_column(Text, default="")
    text_body: Mapped[str] = mapped_column(Text, default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16))
    skip_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The fencing token of the claim that holds the row (new for every claim): a sender
    # renews, records and releases only rows still carrying its token, so a sender
    # whose lease was taken over cannot overwrite the new owner's outcome.
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Broadcast(Base):
    """A one-off or scheduled send of a customer template to the members of a named
    segment (docs/broadcasts.md). ``status``: ``scheduled`` (waiting for ``send_at``),
    ``sending`` (chunks of accounts in progress: ``cursor`` is the last account done),
    ``sent``, ``cancelled``. Its messages carry its id (``messages.broadcast_id``), one
    per (broadcast, account, address): the id is keyed, so a chunk sent twice writes
    nothing new."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_due", "status", "send_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    template_id: Mapped[str] = mapped_column(String(128))
    segment_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16), default="email")
    to: Mapped[list[Any]] = mapped_column(JSONType, default=list)  # recipients, as a send step's ``to``
    holdout_percent: Mapped[float] = mapped_column(Float, default=0)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    cursor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    accounts_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancelled_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Resource(Base):
    """A piece of the content library (docs/content.md): an article, video, webinar,
    course, checklist or template at a public URL, tagged with whom and what it is for.
    The ``recommend`` step routes one to each recipient; every tag is a list, empty
    meaning "anyone"."""

    __tablename__ = "content_resources"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(16))  # article, video, webinar, course, checklist, template
    title: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(2000))
    summary: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(16), default="en")
    goals: Mapped[list[Any]] = mapped_column(JSONType, default=list)  # adoption, win-back, expansion, renewal
    use_cases: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    industries: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    company_sizes: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    lifecycle_stages: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    segments: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    roles: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    features: Mapped[list[Any]] = mapped_column(JSONType, default=list)  # event names of the product features it teaches
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Suppression(Base):
    """Addresses outreach never writes to. Keyed by the SHA-256 of the lower-cased
    address so an erased contact stays suppressed without keeping the address."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    reason: Mapped[str] = mapped_column(String(32))  # unsubscribed, hard_bounce, manual, erased
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# ---- pooled-CSM engagements (services/outreach/engagements) ----------------------

OPEN_ENGAGEMENT_STATUSES = ("queued", "assigned", "active")


class Csm(Base):
    """A pooled CSM on the roster. ``capacity`` is the most engagements they hold open
    at once; ``assign_seq`` is the round-robin clock (the CSM assigned longest ago
    has the lowest value and wins a tie on load)."""

    __tablename__ = "csms"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    working_hours: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    capacity: Mapped[int] = mapped_column(Integer, default=10)
    segments: Mapped[list[Any]] = mapped_column(JSONType, default=list)  # empty: every segment
    skills: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    away_from: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    away_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    assign_seq: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Engagement(Base):
    """A time-boxed piece of human follow-up on one account toward one goal.

    At most one *open* engagement (queued, assigned, active) per account and goal: a
    partial unique index, so two workers escalating the same account at once cannot
    both insert. ``held_out`` rows are accounts the escalation holdout kept from a
    CSM; they are measured like the others so the lift can be computed."""

    __tablename__ = "engagements"
    __table_args__ = (
        Index(
            "uq_engagements_open_account_goal",
            "account_id",
            "goal",
            unique=True,
            sqlite_where=text("status IN ('queued', 'assigned', 'active')"),
            postgresql_where=text("status IN ('queued', 'assigned', 'active')"),
        ),
        Index("ix_engagements_queue", "status", "priority"),
        Index("ix_engagements_csm", "csm_id", "status"),
        Index("ix_engagements_due", "status", "due_at"),
        Index("ix_engagements_reminder", "next_reminder_at"),
        Index("ix_engagements_account", "account_id", "opened_at"),
        # The pool's counts and forecast (migration 0025).
        Index("ix_engagements_status_outcome", "status", "outcome"),
        Index("ix_engagements_opened_counts", "opened_at", "status", "playbook_id", "closed_at", "due_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128))
    goal: Mapped[str] = mapped_column(String(32))  # recover_usage, discover_expansion, onboarding_rescue, custom
    status: Mapped[str] = mapped_column(String(16))  # queued assigned active resolved expired cancelled held_out
    csm_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    skill: Mapped[str | None] = mapped_column(String(64), nullable=True)
    segment: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[float] = mapped_column(Float, default=0)
    priority_detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    title: Mapped[str] = mapped_column(String(300), default="")
    reason: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # the signal, its evidence, what automation tried
    signal_ids: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    rule_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    playbook_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    enrollment_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    opened_by: Mapped[str] = mapped_column(String(200), default="")
    time_box_days: Mapped[float] = mapped_column(Float, default=30)
    extension_days: Mapped[float] = mapped_column(Float, default=0)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reminders_sent: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    assignments: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    outcome_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # csm, automatic
    measured: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # the automatic outcome measurement
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EngagementEvent(Base):
    """The engagement's timeline: every status transition (from, to, who, when), note,
    logged touch, reminder, attached signal and extension."""

    __tablename__ = "engagement_events"
    __table_args__ = (Index("ix_engagement_events_engagement", "engagement_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    engagement_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # transition, note, touch, reminder, signal_attached, extended
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class SurveyAnswer(Base):
    """A contact's answer to a survey (docs/surveys.md): one row per survey and contact,
    the latest answer winning (a second answer replaces the first). Written by the public
    answer page, its ``survey_answered`` event beside it in the outbox."""

    __tablename__ = "survey_answers"
    __table_args__ = (Index("ix_survey_answers_survey_day", "survey_id", "answered_at"),)

    survey_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scale: Mapped[str] = mapped_column(String(8))  # nps (0-10) or csat (1-5)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    playbook_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    answers: Mapped[int] = mapped_column(Integer, default=1)  # how many times it was answered (or changed)
    first_answered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime())
