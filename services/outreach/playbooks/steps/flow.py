"""The built-in control-flow steps: wait, branch, end."""

from __future__ import annotations

from services.outreach.playbooks.steps.definitions import BranchStep, EndStep, WaitStep
from services.outreach.playbooks.steps.registry import StepContext, StepOutcome, register
from services.outreach.playbooks.terms import parse_duration


@register("wait", WaitStep, batched=True)
def run_wait(ctx: StepContext, step: WaitStep) -> StepOutcome:
    # The next step index is stored now; the enrolment sleeps until due_at.
    return StepOutcome(next=ctx.index + 1, wait_until=ctx.now + parse_duration(step.duration))


@register("branch", BranchStep, batched=True)
def run_branch(ctx: StepContext, step: BranchStep) -> StepOutcome:
    met, evidence = ctx.batch.condition(step.if_, ctx.enrollment.account_id)
    target = ctx.steps.target(step.then if met else step.else_, ctx.index)
    note = {"condition": met, "evidence": evidence}
    return StepOutcome.go_to(target, note)


@register("end", EndStep, batched=True)
def run_end(ctx: StepContext, step: EndStep) -> StepOutcome:
    return StepOutcome(end=step.outcome)
