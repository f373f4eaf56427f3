"""The ``open_engagement`` playbook step, registered in the step registry like the other
built-ins: escalate the enrolment's account to a pooled CSM (the engagements feature,
services/outreach/engagements/, does the work; this module adapts it to a step).

    {"id": "escalate", "type": "open_engagement", "goal": "recover_usage", "time_box": "30d",
     "skill": "recover_usage", "priority": 80, "holdout_percent": 20,
     "wait_for_outcome": true, "on_outcome": {"recovered": "convert", "default": "end"}}

- ``holdout_percent``: the escalation holdout. That share of accounts (deterministic
  per playbook and account, independent of the message holdout) is not escalated;
  a ``held_out`` engagement row records them and is measured at the end of the
  time-box like the others, so the pool report can show the lift of a CSM.
- Accounts in the playbook's message holdout are never escalated (that would taint
  the message holdout).
- The step waits while a message of the enrolment has not left yet (deferred to the
  end of the contact's quiet hours, retrying, being sent): a customer has not ignored an
  email still on its way, and the reason the CSM reads shows what was really sent. It
  looks again when the last of them is due (at least a minute on).
- ``wait_for_outcome``: the enrolment waits here until the engagement closes (it is
  woken at once when it does, and checks daily otherwise), then goes to
  ``on_outcome[outcome]`` (or ``on_outcome["default"]``, or the next step).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from services.outreach.engagements import opening
from services.outreach.engagements import repository as repo
from services.outreach.engagements.schemas import OUTCOMES, Goal
from services.outreach.playbooks.holdouts import escalation_bucket_key, is_held_out
from services.outreach.playbooks.steps.registry import StepBase, StepContext, StepOutcome, register
from services.outreach.playbooks.terms import parse_duration
from shared.errors import TouchlineError

RECHECK = timedelta(days=1)
UNSENT_RECHECK = timedelta(minutes=1)


class OpenEngagementStep(StepBase):
    type: Literal["open_engagement"]
    goal: Goal = "recover_usage"
    time_box: str | None = Field(None, description="default TOUCHLINE_ENGAGEMENT_TIME_BOX_DAYS, e.g. 30d")
    skill: str | None = Field(None, max_length=64, description="the skill a CSM needs; default: the goal")
    priority: float | None = Field(None, ge=0, le=1000, description="override the computed priority")
    title: str = Field("", max_length=300)
    holdout_percent: float = Field(0, ge=0, le=100, description="escalation holdout: share of accounts not escalated")
    wait_for_outcome: bool = False
    on_outcome: dict[str, str] = Field(
        default_factory=dict, description=("with wait_for_outcome: outcome (or 'default') -> step id, 'convert' or 'end'")
    )

    def describe(self) -> str:
        box = self.time_box or "the default time-box"
        held = f", {self.holdout_percent:g}% held out" if self.holdout_percent else ""
        return f"open a {self.goal} engagement for a pooled CSM ({box}{held}) ({self.id})"

    @field_validator("time_box")
    @classmethod
    def _box(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("on_outcome")
    @classmethod
    def _outcomes(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if k not in OUTCOMES + ("default",):
                raise ValueError(f"on_outcome key {k!r} is not an outcome ({', '.join(OUTCOMES)}) or 'default'")
        return v

    def targets(self) -> list[str]:
        return list(self.on_outcome.values())


@register("open_engagement", OpenEngagementStep)
def run_open_engagement(ctx: StepContext, step: OpenEngagementStep) -> StepOutcome:
    return escalate(ctx, step)


def escalate(ctx: StepContext, step: OpenEngagementStep) -> StepOutcome:
    """The step's decisions, outside the decorated function: mutmut 3 does not mutate a
    decorated function, and ``make mutation`` covers these (docs/testing.md)."""
    enrollment, now = ctx.enrollment, ctx.now
    waiting_for = next(
        (h.get("engagement_id") for h in reversed(enrollment.history or []) if h.get("step") == step.id and h.get("engagement_id")), None
    )
    if waiting_for is not None and step.wait_for_outcome:
        e = repo.get(ctx.session, waiting_for)
        return _route(ctx, step, e)
    if enrollment.holdout:
        return StepOutcome(note={"engagement": "not escalated: the enrolment is in the message holdout"})
    unsent_until = repo.enrollment_unsent_until(ctx.session, enrollment.id)
    if unsent_until is not None:
        return StepOutcome(
            next=ctx.index,
            wait_until=max(unsent_until, now) + UNSENT_RECHECK,
            note={"engagement": "waiting: the enrolment's messages have not all left yet"},
        )
    held = is_held_out(escalation_bucket_key(enrollment.playbook_id), enrollment.account_id, step.holdout_percent)
    try:
        e, opened = opening.open_engagement(
            ctx.session,
            account_id=enrollment.account_id,
            goal=step.goal,
            actor=f"playbook:{enrollment.playbook_id}",
            now=now,
            settings=ctx.settings,
            signal=dict(enrollment.signal or {}),
            key=f"{enrollment.id}\x1f{step.id}",
            playbook_id=enrollment.playbook_id,
            enrollment_id=enrollment.id,
            skill=step.skill,
            priority_override=step.priority,
            title=step.title,
            holdout=held,
            time_box_days=parse_duration(step.time_box).total_seconds() / 86400 if step.time_box else None,
        )
    except TouchlineError as err:
        return StepOutcome(note={"engagement": f"not opened: {err.detail}"})
    note = {"engagement_id": e.id, "engagement": "held_out" if held else ("opened" if opened else "attached")}
    if step.wait_for_outcome:
        return StepOutcome(next=ctx.index, wait_until=now + RECHECK, note=note)
    return StepOutcome(note=note)


def _route(ctx: StepContext, step: OpenEngagementStep, e: Any) -> StepOutcome:
    if e is None or e.closed_at is None:
        return StepOutcome(
            next=ctx.index,
            wait_until=ctx.now + RECHECK,
            note={"engagement_id": getattr(e, "id", None), "engagement": "waiting for the outcome"},
        )
    name = step.on_outcome.get(e.outcome or "") or step.on_outcome.get("default")
    target = ctx.steps.target(name, ctx.index)
    note = {"engagement_id": e.id, "engagement": "closed", "outcome": e.outcome, "outcome_source": e.outcome_source}
    return StepOutcome.go_to(target, note)
