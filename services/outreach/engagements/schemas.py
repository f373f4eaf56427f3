"""Engagements and the CSM roster over the API: what comes in (validated here: a bad
value is a 422 naming the field) and what goes out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from shared.limits import UtcDatetime

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
GOALS = ("recover_usage", "discover_expansion", "onboarding_rescue", "custom")
OUTCOMES = ("recovered", "expanded", "churned", "no_response", "other")
STATUSES = ("queued", "assigned", "active", "resolved", "expired", "cancelled", "held_out")
TOUCH_KINDS = ("call", "email", "meeting", "resource")
Goal = Literal[GOALS]  # type: ignore[valid-type]
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class WorkingHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], description="0 = Monday ... 6 = Sunday")
    start: str = Field("09:00", description="local time, HH:MM")
    end: str = Field("17:00", description="local time, HH:MM")
    hours_per_week: float | None = Field(None, ge=0, le=168, description="default: from days, start and end")

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in v):
            raise ValueError("days are 0 (Monday) to 6 (Sunday)")
        return sorted(set(v))

    @field_validator("start", "end")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("a time looks like 09:00")
        return v

    def weekly_hours(self) -> float:
        if self.hours_per_week is not None:
            return self.hours_per_week
        (sh, sm), (eh, em) = (map(int, self.start.split(":")), map(int, self.end.split(":")))
        return max(0.0, (eh * 60 + em - sh * 60 - sm) / 60) * len(self.days)


class CsmIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Grace Hopper",
                    "email": "grace@touchline.example",
                    "timezone": "Europe/London",
                    "working_hours": {"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"},
                    "capacity": 12,
                    "segments": ["smb", "mid_market"],
                    "skills": ["recover_usage", "discover_expansion"],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    timezone: str = "UTC"
    working_hours: WorkingHours = Field(default_factory=WorkingHours)
    capacity: int = Field(10, ge=0, le=1000, description="most open engagements at once")
    segments: list[str] = Field(
        default_factory=list,
        description="segments covered: account segments (the account's segment) or named segments (GET /v1/segments: "
        "the account a member now), in one list; empty: all",
    )
    skills: list[str] = Field(default_factory=list, description="engagement skills covered (a goal or a custom skill)")
    active: bool = True
    away_from: UtcDatetime | None = None
    away_until: UtcDatetime | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/London") from None
        return v

    @model_validator(mode="after")
    def _away(self) -> Self:
        if self.away_from and self.away_until and self.away_until <= self.away_from:
            raise ValueError("away_until must be after away_from")
        return self


class CsmPatch(BaseModel):
    """Change some fields of a roster entry (absent fields stay as they are). Only
    ``away_from`` and ``away_until`` take null (no longer away); the others hold a value
    always, so null for one of them is a 422, not a cleared column."""

    model_config = ConfigDict(extra="forbid")
    # Optional but never null: SkipJsonSchema keeps null out of the documented schema.
    name: str | SkipJsonSchema[None] = Field(None, min_length=1, max_length=200)
    email: str | SkipJsonSchema[None] = Field(None, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    timezone: str | SkipJsonSchema[None] = None
    working_hours: WorkingHours | SkipJsonSchema[None] = None
    capacity: int | SkipJsonSchema[None] = Field(None, ge=0, le=1000)
    segments: list[str] | SkipJsonSchema[None] = None
    skills: list[str] | SkipJsonSchema[None] = None
    active: bool | SkipJsonSchema[None] = None
    away_from: UtcDatetime | None = None
    away_until: UtcDatetime | None = None

    @field_validator("name", "email", "timezone", "working_hours", "capacity", "segments", "skills", "active", mode="before")
    @classmethod
    def _not_null(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            raise ValueError(f"{info.field_name} cannot be null; leave it out to keep the current value")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return v if v is None else CsmIn._zone(v)

    @model_validator(mode="after")
    def _away(self) -> Self:
        if self.away_from and self.away_until and self.away_until <= self.away_from:
            raise ValueError("away_until must be after away_from")
        return self


class CsmOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    email: str
    timezone: str
    working_hours: dict[str, Any]
    capacity: int
    segments: list[str]
    skills: list[str]
    active: bool
    away_from: datetime | None
    away_until: datetime | None
    available: bool = Field(description="active and not inside an away window now")
    open_engagements: int
    created_at: datetime
    updated_at: datetime


class CsmPage(BaseModel):
    items: list[CsmOut]
    next_cursor: str | None = Field(None, description="pass back as ?cursor= for the next page; null on the last")


class OpenIn(BaseModel):
    """CS Ops opening an engagement by hand."""

    model_config = ConfigDict(extra="forbid")
    account_id: str = Field(min_length=1, max_length=128)
    goal: Goal = "recover_usage"
    title: str = Field("", max_length=300)
    note: str = Field("", max_length=10_000, description="why: becomes the first note")
    skill: str | None = Field(None, max_length=64, description="default: the goal")
    priority: float | None = Field(None, ge=0, le=1000, description="override the computed priority")
    time_box_days: float | None = Field(None, gt=0, le=365)
    csm_id: str | None = Field(None, description="assign to this CSM now instead of queueing")


class TouchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal[TOUCH_KINDS] = Field(description="call, email, meeting or resource (a sent resource)")  # type: ignore[valid-type]
    user_id: str | None = Field(None, max_length=128, description="the contact touched, if one")
    summary: str = Field("", max_length=10_000)


class EmailIn(BaseModel):
    """An email to one of the account's contacts: a customer template, or a subject and a
    message in the CSM's words (plain text)."""

    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=128, description="the contact, one of the account's users with an email address")
    template: str | None = Field(None, max_length=128, description="a customer template's id; subject and text are then ignored")
    subject: str = Field("", max_length=300)
    text: str = Field("", max_length=100_000)


class EmailOut(BaseModel):
    message_id: str
    state: str = Field(description="queued: the sender delivers it")
    next_attempt_at: datetime = Field(description="now, or the end of the contact's quiet hours")


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=10_000)


class ExtendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: float = Field(gt=0, le=365)
    reason: str = Field("", max_length=2000)


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Outcome
    note: str = Field("", max_length=10_000)


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csm_id: str | None = Field(None, description="the new CSM; null puts the engagement back in the queue")
    reason: str = Field("", max_length=2000)


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class EngagementOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    account_id: str
    goal: str
    title: str
    status: str
    csm_id: str | None
    skill: str | None
    segment: str | None
    priority: float
    priority_detail: dict[str, Any]
    signal_ids: list[str]
    reason: dict[str, Any] = Field(
        description=(
            "why it was opened: the signal, its evidence, and what automation had tried at opening (messages sent, "
            "skipped and why, every playbook path)"
        )
    )
    rule_id: str | None
    playbook_id: str | None
    enrollment_id: str | None
    opened_by: str
    time_box_days: float
    extension_days: float
    due_at: datetime | None
    next_reminder_at: datetime | None
    outcome: str | None
    outcome_source: str | None
    measured: dict[str, Any]
    opened_at: datetime
    assigned_at: datetime | None
    accepted_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime


class EngagementPage(BaseModel):
    items: list[EngagementOut]
    next_cursor: str | None = Field(None, description="pass back as ?cursor= for the next page; null on the last")


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: datetime
    actor: str
    kind: str
    from_status: str | None
    to_status: str | None
    details: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None = Field(None, description="pass back as ?cursor= for the next page; null on the last")


class MessageBrief(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    playbook_id: str | None
    step_id: str
    channel: str
    user_id: str | None
    recipient: str
    subject: str
    state: str
    skip_reason: str | None
    created_at: datetime
    sent_at: datetime | None


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str | None
    email: str | None
    role: str | None
    timezone: str | None


class EngagementDetail(EngagementOut):
    """Everything a CSM needs in one response."""

    account: dict[str, Any]
    usage_90d: list[dict[str, Any]] = Field(description="per day: distinct active users and event counts")
    contacts: dict[str, list[ContactOut]] = Field(description="contacts by role")
    messages_sent: list[MessageBrief]
    messages_skipped: list[MessageBrief] = Field(description="including those held back by this engagement (in_engagement)")
    touches: list[MessageBrief] = Field(description="touches logged by CSMs (channel csm), counted in the account's touch budget")
    timeline: list[EventOut]
    earlier_engagements: list[EngagementOut]


class CsmLoad(BaseModel):
    csm_id: str
    name: str
    available: bool
    capacity: int
    open: int
    utilisation: float | None


class PoolOut(BaseModel):
    csms: list[CsmLoad]
    capacity: int = Field(description="open engagements the available CSMs can hold")
    open: int
    queue_length: int
    oldest_queued_at: datetime | None
    queue_age_hours: float | None
    by_status: dict[str, int]
    by_outcome: dict[str, int]


class GroupRate(BaseModel):
    n: int
    recovered: int
    rate: float | None


class OutcomeRow(BaseModel):
    key: str
    engaged: GroupRate
    held_out: GroupRate | None = None
    lift: float | None = None
    confidence_interval: list[float] | None = None


class OutcomeReport(BaseModel):
    definition: str
    overall: OutcomeRow
    by_rule: list[OutcomeRow]
    by_playbook: list[OutcomeRow]
    by_csm: list[OutcomeRow]
    by_segment: list[OutcomeRow] = Field(
        default_factory=list,
        description="per named segment asked for (segment=, repeated): the engagements whose account was in it when "
        "the engagement opened, engaged against held out",
    )
    disagreements: list[str] = Field(
        default_factory=list,
        description="engagements whose CSM outcome contradicts the measurement (a CSM's recovered or expanded that "
        "measured unsuccessful, or churned or no_response that measured successful), by id",
    )
    method: Literal["newcombe-wilson-95"] = "newcombe-wilson-95"


class ForecastDemand(BaseModel):
    """What the pool, or one named segment of it, asks of the CSMs: the forecast's demand
    side, computed by one function for both (services/outreach/engagements/reporting.py)."""

    rules: list[dict[str, Any]]  # each rule counted: rule_id, kind, signals_per_week, source
    signals_per_week: float
    escalation_rate: float
    engagements_per_week: float
    hand_opened_per_week: float
    mean_open_weeks: float
    mean_open_from: dict[str, Any]  # closed and open engagements measured; time_box: none yet, the time-box used
    concurrent_open_expected: float
    hours_needed_per_week: float
    by_playbook: list[dict[str, Any]]


class ForecastSegment(ForecastDemand):
    """The forecast's demand among one named segment's accounts (``segment=``)."""

    segment_id: str
    signals_received: int = Field(description="signals received in the window from accounts in the segment when each arrived")
    engagements_opened: int = Field(description="engagements opened in the window (held-out rows included) on accounts in the segment then")


class ForecastOut(ForecastDemand):
    lookback_days: int
    window: dict[str, Any]  # start, end, days, clipped_to_history, source (received | replayed)
    accounts: int
    assumptions: dict[str, float]  # the shares, hours per engagement, time-box, proactive hours and capacity per CSM
    open_now: int  # open engagements now (assigned, active and queued): what open at once is compared with
    pool_capacity: int
    pool_proactive_hours_per_week: float
    csms_available: int
    csms_needed: int
    queue_grows: bool
    by_segment: list[ForecastSegment] = Field(
        default_factory=list,
        description="with segment=, per named segment: the same demand figures (signals, escalations, engagements "
        "per week, weeks open, open at once, hours needed) computed by the same function over the signals received "
        "and the engagements opened in the window by accounts that were members at that instant. The pool's capacity "
        "(pool_capacity, csms_available, pool_proactive_hours_per_week), csms_needed, queue_grows and open_now are "
        "pool-wide and have no per-segment value: CSMs are pooled, not assigned per segment",
    )
    method: str
