"""The ``recommend`` step: the send step's path (holdout, the contact gate, render,
build) with one more decision per recipient, which resource of the content library to
send (:mod:`services.outreach.content.routing`). The template renders with it as
``resource``; the message records it (``resource_id``) and why
(``payload["recommendation"]``: the matched tags, the score, what was considered). A
recipient for whom nothing qualifies is skipped with reason ``no_resource`` and the
why. Held-out recipients are skipped as ``held_out`` with the resource they would have
received, so the resource's effect can be measured against them. Batched: every read is
one statement for the whole signal batch.
"""

from __future__ import annotations

from typing import Any

from services.outreach.content import routing
from services.outreach.playbooks.messages import MessageRows
from services.outreach.playbooks.recipients import Recipient, resolve_recipients
from services.outreach.playbooks.steps.definitions import RecommendStep
from services.outreach.playbooks.steps.registry import StepContext, StepOutcome, register
from services.outreach.playbooks.steps.send import build, decide, render_for
from services.outreach.policy.tokens import unsubscribe_url
from services.outreach.templates.context import resource_context
from services.outreach.templates.rendering import TemplateProblem


@register("recommend", RecommendStep, batched=True)
def run_recommend(ctx: StepContext, step: RecommendStep) -> StepOutcome:
    e = ctx.enrollment
    template = ctx.batch.template(step.template) if step.template else None
    out = MessageRows(e, step.id, step.channel, step.template, ctx.now, audience="customer")
    recipients = resolve_recipients(
        ctx.batch, account_id=e.account_id, account=ctx.account, channel=step.channel, to=step.to, url=None, now=ctx.now
    )
    rows: list[dict[str, Any]] = []
    if not recipients:
        rows.append(out.skipped(Recipient(None, ""), "no_recipients"))
    else:
        reasons = [None] * len(recipients) if e.holdout else decide(ctx, step, recipients, template)
        for r, reason in zip(recipients, reasons, strict=True):
            if reason:
                rows.append(out.skipped(r, reason))
                continue
            choice = choose_for(ctx, step, r)
            recorded = {"resource_id": choice.resource.id if choice.resource else None, "payload": {"recommendation": choice.explanation}}
            if e.holdout:
                rows.append(out.skipped(r, "held_out", **recorded))
                continue
            if choice.resource is None:
                rows.append(out.skipped(r, "no_resource", **recorded))
                continue
            unsub = (
                unsubscribe_url(ctx.settings, email=r.address, account_id=e.account_id, message_id=out.key(r))
                if step.channel == "email"
                else ""
            )
            try:
                content = render_for(ctx, step, template, r, unsub, resource_context(choice.resource, choice.explanation["why"]))
            except TemplateProblem as problem:
                rows.append(out.skipped(r, "render_error", last_error=problem.as_dict()["message"], **recorded))
                continue
            row = build(ctx, step, out, r, content, unsub, resource_id=choice.resource.id)
            row["resource_id"] = choice.resource.id
            row["payload"] = {**row["payload"], "recommendation": choice.explanation}
            rows.append(row)
    ctx.batch.write_messages(rows)
    counts: dict[str, int] = {}
    for row in rows:
        k = row["skip_reason"] or row["state"]
        counts[k] = counts.get(k, 0) + 1
    picked = sorted({row["resource_id"] for row in rows if row["resource_id"] and row["state"] != "skipped"})
    return StepOutcome(note={"messages": counts, **({"resources": picked} if picked else {})})


def choose_for(ctx: StepContext, step: RecommendStep, r: Recipient) -> routing.Choice:
    """The resource for one recipient: the enrolment's goal (the step's, else its
    signal's kind's), the account's traits, segment and stage, the contact's role and
    language, the features the account never used; never one the contact received."""
    e = ctx.enrollment
    who = routing.profile(
        goal=routing.goal_for((e.signal or {}).get("kind"), step.goal),
        account=ctx.account,
        role=r.user.role if r.user else None,
        contact_traits=r.user.traits if r.user else None,
        seen_events=ctx.batch.features_seen(e.account_id),
    )
    return routing.choose(
        ctx.batch.resources(),
        who,
        received=ctx.batch.received(e.account_id, r.user_id or r.address),
        kinds=step.kinds,
        min_score=step.min_score,
        fallback=step.fallback,
    )
