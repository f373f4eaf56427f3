"""The step type registry. A step type is a pydantic model for its definition plus a
function that runs it against an enrolment and says what happens next.

To add a step type (the next one is pooled-CSM "open_engagement"): define its model
with ``type: Literal["..."]``, write ``run(ctx, step) -> StepOutcome``, and call
:func:`register`. Nothing else in the engine changes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.outreach.playbooks.schemas import TERMINALS, parse_duration

RECIPIENT_ROLES = ("champion", "admin", "power_user", "buyer", "member")
RECIPIENT_SPECIAL = ("owner", "all_users", "active_users")


class StepBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field("", max_length=128)


class SendStep(StepBase):
    type: Literal["send"]
    channel: Literal["email", "webhook", "inapp"] = "email"
    template: str | None = None
    to: list[str] = Field(default_factory=list, description=(
        "recipients: roles (champion, admin, power_user, buyer, member), owner (the account's owner address), "
        "all_users, or active_users:<window> (e.g. active_users:7d)"))
    url: str | None = Field(None, description="webhook: where to POST")
    format: Literal["json", "slack"] = "json"
    delivery: Literal["at_most_once", "at_least_once"] = Field("at_most_once", description=(
        "email: when the SMTP server takes the message but its reply is lost (timeout or dropped connection "
        "after the final dot), at_most_once parks it as 'uncertain' for an operator; at_least_once resends it "
        "(same Message-ID). Webhooks are always at-least-once with an Idempotency-Key."))

    @field_validator("to")
    @classmethod
    def _recipients(cls, to):
        for spec in to:
            name, _, window = spec.partition(":")
            if name not in RECIPIENT_ROLES + RECIPIENT_SPECIAL:
                raise ValueError(f"unknown recipient {spec!r}; use {', '.join(RECIPIENT_ROLES + RECIPIENT_SPECIAL)}")
            if name == "active_users":
                if not window or not window.endswith("d") or not window[:-1].isdigit():
                    raise ValueError("active_users needs a window in days, e.g. active_users:7d")
        return to

    @model_validator(mode="after")
    def _channel_needs(self):
        if self.channel == "webhook":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("a webhook step needs an http(s) url")
        else:
            if not self.template:
                raise ValueError(f"an {self.channel} step names its template")
            if not self.to:
                raise ValueError(f"an {self.channel} step says who receives it in 'to'")
        return self


class WaitStep(StepBase):
    type: Literal["wait"]
    duration: str

    @field_validator("duration")
    @classmethod
    def _duration(cls, v):
        parse_duration(v)
        return v


class BranchStep(StepBase):
    type: Literal["branch"]
    if_: dict[str, Any] = Field(alias="if")
    then: str = Field(description="a step id, 'convert' (end as converted) or 'end'")
    else_: str | None = Field(None, alias="else", description="default: the next step")

    @field_validator("if_")
    @classmethod
    def _condition(cls, v):
        from services.outreach.playbooks.conditions import parse_exit_condition

        parse_exit_condition(v)
        return v


class EndStep(StepBase):
    type: Literal["end"]
    outcome: Literal["completed", "converted"] = "completed"


@dataclass
class StepOutcome:
    """What the engine does next: go to ``next`` (an index; None = the following
    step), wait until ``wait_until`` first, or end with ``end`` (completed, converted)."""

    next: int | None = None
    wait_until: datetime | None = None
    end: str | None = None
    note: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepType:
    model: type[StepBase]
    run: Callable[..., StepOutcome]


REGISTRY: dict[str, StepType] = {}


def register(name: str, model: type[StepBase], run: Callable[..., StepOutcome]) -> None:
    REGISTRY[name] = StepType(model, run)


@dataclass
class ParsedSteps:
    steps: list[StepBase]
    index: dict[str, int]

    def target(self, name: str | None, current: int) -> int | str:
        if name is None:
            return current + 1
        if name in TERMINALS:
            return name
        return self.index[name]


def parse_steps(raw: list[dict[str, Any]]) -> ParsedSteps:
    _ensure_builtin()
    steps: list[StepBase] = []
    for i, obj in enumerate(raw):
        where = f"step {i + 1}"
        if not isinstance(obj, dict) or obj.get("type") not in REGISTRY:
            kind = obj.get("type") if isinstance(obj, dict) else None
            raise ValueError(f"{where}: unknown step type {kind!r}; use one of {', '.join(sorted(REGISTRY))}")
        try:
            step = REGISTRY[obj["type"]].model.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            raise ValueError(f"{where} ({obj.get('id') or obj['type']}): {loc + ': ' if loc else ''}{first['msg']}") from None
        if not step.id:
            step.id = f"step-{i + 1}"
        steps.append(step)
    index: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.id in index or s.id in TERMINALS:
            raise ValueError(f"step {i + 1}: id {s.id!r} is used twice or is reserved")
        index[s.id] = i
    for s in steps:
        targets = (s.then, s.else_) if isinstance(s, BranchStep) else tuple(getattr(s, "branch_targets", list)())
        for target in targets:
            if target is not None and target not in index and target not in TERMINALS:
                raise ValueError(f"step {s.id!r}: branch target {target!r} is not a step id, 'convert' or 'end'")
    return ParsedSteps(steps, index)


def _ensure_builtin() -> None:
    if "send" not in REGISTRY:
        from services.outreach.playbooks import engine  # noqa: F401  (registers the built-in steps)
    if "open_engagement" not in REGISTRY:
        from services.outreach.engagements import step  # noqa: F401  (registers open_engagement)


def wait_until(step: WaitStep, now: datetime) -> datetime:
    return now + parse_duration(step.duration)
