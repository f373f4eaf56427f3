"""The built-in step types' definitions: send, recommend, wait, branch, end."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from services.outreach.content.schemas import GOALS, KINDS, Goal, Kind
from services.outreach.playbooks.conditions import parse_exit_condition
from services.outreach.playbooks.steps.registry import StepBase
from services.outreach.playbooks.terms import parse_duration

RECIPIENT_ROLES = ("champion", "admin", "power_user", "buyer", "member")
RECIPIENT_SPECIAL = ("owner", "all_users", "active_users")
# How far back active_users may look: as far back as usage is kept (the raw-event
# retention's default); a larger window overflowed the date arithmetic when the step ran.
MAX_ACTIVE_DAYS = 400


class SendStep(StepBase):
    type: Literal["send"]
    channel: Literal["email", "webhook", "inapp"] = "email"
    template: str | None = None
    to: list[str] = Field(
        default_factory=list,
        description=(
            "recipients: roles (champion, admin, power_user, buyer, member), owner (the account's owner address), "
            "all_users, or active_users:<window> (e.g. active_users:7d)"
        ),
    )
    url: str | None = Field(None, description="webhook: where to POST")
    format: Literal["json", "slack"] = "json"
    delivery: Literal["at_most_once", "at_least_once"] = Field(
        "at_most_once",
        description=(
            "email: when the SMTP server takes the message but its reply is lost (timeout or dropped connection "
            "after the final dot), at_most_once parks it as 'uncertain' for an operator; at_least_once resends it "
            "(same Message-ID). Webhooks are always at-least-once with an Idempotency-Key."
        ),
    )

    def describe(self) -> str:
        if self.channel == "webhook":
            return f"post a webhook to the CS team ({self.id})"
        return f"{self.channel} {self.template} to {', '.join(self.to)} ({self.id})"

    @field_validator("to")
    @classmethod
    def _recipients(cls, to: list[str]) -> list[str]:
        for spec in to:
            name, _, window = spec.partition(":")
            if name not in RECIPIENT_ROLES + RECIPIENT_SPECIAL:
                raise ValueError(f"unknown recipient {spec!r}; use {', '.join(RECIPIENT_ROLES + RECIPIENT_SPECIAL)}")
            if name == "active_users":
                if not window or not window.endswith("d") or not window[:-1].isdigit():
                    raise ValueError("active_users needs a window in days, e.g. active_users:7d")
                if int(window[:-1]) > MAX_ACTIVE_DAYS:
                    raise ValueError(f"active_users looks back at most {MAX_ACTIVE_DAYS} days; got {spec!r}")
        return to

    @model_validator(mode="after")
    def _channel_needs(self) -> SendStep:
        if self.channel == "webhook":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("a webhook step needs an http(s) url")
        else:
            if not self.template:
                raise ValueError(f"an {self.channel} step names its template")
            if not self.to:
                raise ValueError(f"an {self.channel} step says who receives it in 'to'")
            if "owner" in self.to and len(self.to) > 1:
                raise ValueError(
                    "the owner is an internal address: send to the owner in a step of its own, with an internal template "
                    "(audience: internal), and to the customer's contacts in another"
                )
        return self


class RecommendStep(SendStep):
    """A send step that first picks, for each recipient, the best resource of the content
    library (docs/content.md) and renders its template with it as ``resource``."""

    type: Literal["recommend"]  # type: ignore[assignment]
    channel: Literal["email", "inapp"] = "email"
    goal: Goal | None = Field(None, description=f"the goal resources must serve ({', '.join(GOALS)}); default: from the signal's kind")
    kinds: list[Kind] = Field(default_factory=list, description=f"only these kinds ({', '.join(KINDS)}); empty: any")
    min_score: int = Field(1, ge=1, le=1000, description="the least score a resource needs to be chosen (docs/content.md)")
    fallback: str | None = Field(
        None, max_length=128, description="a resource id sent when none scores min_score (unless already received); none: skip"
    )

    def describe(self) -> str:
        return f"recommend a resource by {self.channel} ({self.template}) to {', '.join(self.to)} ({self.id})"

    @field_validator("to")
    @classmethod
    def _customers_only(cls, to: list[str]) -> list[str]:
        if "owner" in to:
            raise ValueError("a recommend step sends resources to the customer's contacts; the owner is an internal address")
        return to


class WaitStep(StepBase):
    type: Literal["wait"]
    duration: str

    def describe(self) -> str:
        return f"wait {self.duration} ({self.id})"

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class BranchStep(StepBase):
    type: Literal["branch"]
    if_: dict[str, Any] = Field(alias="if")
    then: str = Field(description="a step id, 'convert' (end as converted) or 'end'")
    else_: str | None = Field(None, alias="else", description="default: the next step")

    @field_validator("if_")
    @classmethod
    def _condition(cls, v: dict[str, Any]) -> dict[str, Any]:
        parse_exit_condition(v)
        return v

    def targets(self) -> list[str]:
        return [t for t in (self.then, self.else_) if t is not None]

    def describe(self) -> str:
        cond = self.if_
        what = " ".join(str(cond[k]) for k in ("metric", "event", "window", "op", "value") if k in cond) or "a condition"
        return f"check {what}: if true go to {self.then}, else {self.else_ or 'the next step'} ({self.id})"


class EndStep(StepBase):
    type: Literal["end"]
    outcome: Literal["completed", "converted"] = "completed"

    def describe(self) -> str:
        return f"end as {self.outcome} ({self.id})"


def describe(step: StepBase) -> str:
    return step.describe()
