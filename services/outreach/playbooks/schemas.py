"""Playbook definitions (the API and YAML share this shape) and API responses.

A definition is validated as a whole: step types come from the registry in
the ``steps`` package, step ids are unique, branch targets exist, templates are named.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from services.ingest.interface import AccountInfo
from services.outreach.playbooks.conditions import parse_exit_condition
from services.outreach.playbooks.steps import ParsedSteps, parse_steps
from services.rules.interface import SEGMENT_ENTERED, SEGMENT_SIGNAL_PREFIX
from shared.signals import Signal

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"


def _without_empty(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``data`` without the empty lists of ``keys``: fields added after playbooks were
    stored, left out of the canonical form while unused so that an unchanged playbook
    saved again is still the same version."""
    return {k: v for k, v in data.items() if not (k in keys and v == [])}


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[str] = Field(default_factory=list, description="rule ids whose signals enrol")
    kinds: list[str] = Field(default_factory=list, description="signal kinds that enrol (churn_risk, expansion, ...)")
    segments: list[str] = Field(
        default_factory=list,
        description="named segments (docs/segments.md) whose entering enrols; leaving one stops the enrolments it started",
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.rules and not self.kinds and not self.segments:
            raise ValueError("a trigger names at least one rule, one signal kind or one named segment")
        return self

    @model_serializer(mode="wrap")
    def _canonical(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_empty(handler(self), ("segments",))

    def matches(self, signal: Signal) -> bool:
        if self.segments and not (signal.kind == SEGMENT_ENTERED and signal.rule_id in self.segment_rule_ids):
            return False
        return (not self.rules or signal.rule_id in self.rules) and (not self.kinds or signal.kind in self.kinds)

    @property
    def segment_rule_ids(self) -> set[str]:
        """The rule ids the segments' signals carry (``segment:<id>``)."""
        return {SEGMENT_SIGNAL_PREFIX + s for s in self.segments}


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[str] = Field(default_factory=list, description="the account's segment field (smb, mid_market, ...)")
    plans: list[str] = Field(default_factory=list)
    lifecycle_stages: list[str] = Field(default_factory=list)
    named_segments: list[str] = Field(
        default_factory=list, description="saved segments (docs/segments.md): the account is a member of at least one of them"
    )

    @model_serializer(mode="wrap")
    def _canonical(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_empty(handler(self), ("named_segments",))

    def matches(self, account: AccountInfo | None, memberships: set[str] | None = None) -> bool:
        """``memberships``: the account's named segments (needed only with ``named_segments``)."""
        for wanted, attr in ((self.segments, "segment"), (self.plans, "plan"), (self.lifecycle_stages, "lifecycle_stage")):
            if wanted and (account is None or getattr(account, attr) not in wanted):
                return False
        return not self.named_segments or bool(set(self.named_segments) & (memberships or set()))


class CapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: int = Field(ge=1)
    days: float = Field(gt=0)


class PlaybookCaps(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contact: CapIn | None = Field(None, description="at most max messages per contact in days, from this playbook")
    account: CapIn | None = Field(None, description="at most max touches per account in days, from this playbook")


class PlaybookDefinition(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Win back silent accounts",
                    "trigger": {"rules": ["no-login-14d"], "kinds": ["churn_risk"]},
                    "audience": {"segments": ["smb"]},
                    "holdout_percent": 20,
                    "caps": {"contact": {"max": 1, "days": 3}},
                    "exit_condition": {"metric": "active_users", "window": "7d", "op": ">=", "value": 2},
                    "steps": [
                        {"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion", "admin"]},
                        {"id": "wait-3d", "type": "wait", "duration": "3d"},
                        {
                            "id": "back?",
                            "type": "branch",
                            "if": {"metric": "active_users", "window": "7d", "op": ">=", "value": 2},
                            "then": "convert",
                            "else": "nudge",
                        },
                        {"id": "nudge", "type": "send", "channel": "email", "template": "win-back-owner-brief", "to": ["owner"]},
                    ],
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=4000)
    enabled: bool = True
    trigger: Trigger
    audience: Audience = Field(default_factory=Audience)
    holdout_percent: float = Field(0, ge=0, le=100, description="share of enrolled accounts that receive nothing")
    operational: bool = Field(
        False,
        description=(
            "operational messages (billing, security, service notices) still go to accounts in an open engagement; "
            "other playbooks skip them with reason in_engagement"
        ),
    )
    caps: PlaybookCaps = Field(default_factory=PlaybookCaps)
    exit_condition: dict[str, Any] | None = Field(None, description="checked before every step: once true the enrolment ends as converted")
    steps: list[dict[str, Any]] = Field(min_length=1, max_length=100)

    @field_validator("exit_condition")
    @classmethod
    def _condition(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            parse_exit_condition(v)
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parse_steps(steps)  # raises ValueError with the step and the problem
        return steps

    def parsed_steps(self) -> ParsedSteps:
        return parse_steps(self.steps)


class PlaybookOut(BaseModel):
    id: str
    version: int
    enabled: bool
    definition: dict[str, Any]
    versions: list[int]
    created_at: datetime
    updated_at: datetime


class EnrollmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    playbook_id: str
    playbook_version: int
    account_id: str
    signal_id: str
    holdout: bool
    status: str
    step_index: int
    due_at: datetime | None
    enrolled_at: datetime
    ended_at: datetime | None
    converted_at: datetime | None
    history: list[dict[str, Any]]
    outcome_detail: dict[str, Any]


class PlaybookPage(BaseModel):
    items: list[PlaybookOut]
    next_cursor: str | None = None


class EnrollmentPage(BaseModel):
    items: list[EnrollmentOut]
    next_cursor: str | None = None


class GroupStats(BaseModel):
    enrolled: int
    converted: int
    conversion_rate: float | None


class SegmentLiftOut(BaseModel):
    segment_id: str
    treated: GroupStats
    holdout: GroupStats
    lift: float | None = Field(None, description="treated minus holdout conversion rate (absolute)")
    relative_lift: float | None = Field(None, description="lift / holdout conversion rate")
    confidence_interval: list[float] | None = Field(None, description="95% CI of the lift (Newcombe hybrid score)")


class SegmentReportOut(BaseModel):
    playbook_id: str
    enrolments: int = Field(description="the enrolments considered (the newest, up to the limit)")
    segments: list[SegmentLiftOut] = Field(description="per segment asked, its members at the time they were enrolled")
    method: Literal["newcombe-wilson-95"] = "newcombe-wilson-95"


class ReportOut(BaseModel):
    playbook_id: str
    enrolled: int
    active: int
    converted: int
    completed: int
    sent: int
    queued: int
    failed: int
    uncertain: int = Field(0, description="email the SMTP server may or may not have taken (no reply to the final dot)")
    skipped: dict[str, int]
    treated: GroupStats
    holdout: GroupStats
    lift: float | None = Field(None, description="treated minus holdout conversion rate (absolute)")
    relative_lift: float | None = Field(None, description="lift / holdout conversion rate")
    confidence_interval: list[float] | None = Field(None, description="95% CI of the lift (Newcombe hybrid score)")
    method: Literal["newcombe-wilson-95"] = "newcombe-wilson-95"
