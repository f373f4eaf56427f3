"""The built-in send step: for each recipient, decide (holdout, contact policy,
template present), render (the template in the sandbox), build (the channel's message
row). Every recipient ends as a row: queued, sent (in-app) or skipped with its reason.
Reads and writes go through the batch (``ctx.batch``): set-based for a whole signal
batch, the rows inserted when the batch is flushed.
"""

from __future__ import annotations

from typing import Any

from services.outreach.links.rewriting import message_links
from services.outreach.models import Template
from services.outreach.playbooks.messages import MessageRows, email_message, inapp_message, webhook_message
from services.outreach.playbooks.recipients import Recipient, resolve_recipients
from services.outreach.playbooks.steps.definitions import SendStep, describe
from services.outreach.playbooks.steps.registry import StepContext, StepOutcome, register
from services.outreach.policy import service as policy
from services.outreach.policy.tokens import email_hash, unsubscribe_url
from services.outreach.templates.context import account_context, brief_context, build_context, recipient_context
from services.outreach.templates.rendering import PARTS, TemplateProblem, render
from services.outreach.templates.sandbox import RenderBudget
from shared.clock import utc


@register("send", SendStep, batched=True)
def run_send(ctx: StepContext, step: SendStep) -> StepOutcome:
    template = ctx.batch.template(step.template) if step.template else None
    out = MessageRows(
        ctx.enrollment, step.id, step.channel, step.template, ctx.now, audience="internal" if internal(step, template) else "customer"
    )
    rows = send_rows(ctx, step, out, template)
    ctx.batch.write_messages(rows)
    counts: dict[str, int] = {}
    for row in rows:
        k = row["skip_reason"] or row["state"]
        counts[k] = counts.get(k, 0) + 1
    return StepOutcome(note={"messages": counts})


def send_rows(
    ctx: StepContext, step: SendStep, out: MessageRows, template: Template | None, *, render: bool = True
) -> list[dict[str, Any]]:
    """The rows of one send to one account (``ctx.enrollment``'s): its recipients, each
    decided (holdout, contact gate, template), rendered and built, or skipped with the
    reason. A playbook's send step and a broadcast (services/outreach/broadcasts) both
    write through here. ``render=False`` (a broadcast's preview, which counts rows and
    stores none) decides and builds each row without its content: no render, no
    unsubscribe or tracked link sealed."""
    e = ctx.enrollment
    recipients = resolve_recipients(
        ctx.batch, account_id=e.account_id, account=ctx.account, channel=step.channel, to=step.to, url=step.url, now=ctx.now
    )
    rows: list[dict[str, Any]] = []
    if not recipients:
        rows.append(out.skipped(Recipient(None, ""), "no_recipients"))
    elif e.holdout:
        rows.extend(out.skipped(r, "held_out") for r in recipients)
    else:
        for r, reason in zip(recipients, decide(ctx, step, recipients, template), strict=True):
            if reason:
                rows.append(out.skipped(r, reason))
                continue
            unsub = (
                unsubscribe_url(ctx.settings, email=r.address, account_id=e.account_id, message_id=out.key(r))
                if step.channel == "email" and render
                else ""
            )
            try:
                content = render_for(ctx, step, template, r, unsub) if render else {}
            except TemplateProblem as problem:
                rows.append(out.skipped(r, "render_error", last_error=problem.as_dict()["message"]))
                continue
            rows.append(build(ctx, step, out, r, content, unsub))
    return rows


def internal(step: SendStep, template: Template | None) -> bool:
    """Does this step send a message for the team (a webhook, or an internal template
    to the account owner) rather than to the customer?"""
    return step.channel == "webhook" or (template is not None and template.audience == "internal")


def decide(ctx: StepContext, step: SendStep, recipients: list[Recipient], template: Template | None) -> list[str | None]:
    """Why each recipient must not get this message (None: send). Messages for the team
    (webhooks, internal templates) are not customer touches, so the contact policy and
    the engagement hold do not apply to them. Customer copy never goes to an internal
    address (the account owner) nor an internal template to a customer's contact:
    ``wrong_audience`` (playbooks are checked on save; this holds for older versions)."""
    e, customer = ctx.enrollment, not internal(step, template)
    # One touch budget for machines and people: while a CSM holds the account, automation steps back.
    account_reason = "in_engagement" if customer and not ctx.operational and ctx.batch.has_open_engagement(e.account_id) else None
    account_reason = account_reason or (
        policy.check_account(
            ctx.batch.counts, account_id=e.account_id, playbook_id=e.playbook_id, playbook_caps=ctx.caps, settings=ctx.settings, now=ctx.now
        )
        if customer
        else None
    )
    hashes = {r.address: email_hash(r.address) for r in recipients if r.address} if step.channel == "email" else {}
    blocked = ctx.batch.suppressed(hashes.values()) if hashes else set()
    reasons: list[str | None] = []
    for r in recipients:
        reason = account_reason
        if reason is None and step.channel == "email" and not r.address:
            reason = "no_email"
        if reason is None and step.channel == "email" and hashes[r.address] in blocked:
            reason = "suppressed"
        if reason is None and r.user is not None and (r.user.traits or {}).get("erased"):
            reason = "erased"
        if reason is None and customer:
            reason = policy.check_contact(
                ctx.batch.counts,
                account_id=e.account_id,
                user_id=r.user_id,
                playbook_id=e.playbook_id,
                playbook_caps=ctx.caps,
                settings=ctx.settings,
                now=ctx.now,
            )
        if reason is None and step.template and template is None:
            reason = "template_missing"
        if reason is None and template is not None and step.channel != "webhook" and (r.user is None) != (template.audience == "internal"):
            reason = "wrong_audience"
        reasons.append(reason)
    return reasons


def render_for(
    ctx: StepContext,
    step: SendStep,
    template: Template | None,
    r: Recipient,
    unsub: str,
    resource: dict[str, Any] | None = None,
    survey: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The template rendered for one recipient (empty without a template), with the
    ``resource`` a recommend step chose or the ``survey`` a survey step sends; raises
    TemplateProblem."""
    if template is None:
        return {}
    e = ctx.enrollment
    variables = build_context(
        account=account_context(ctx.account) or {"id": e.account_id, "name": e.account_id},
        recipient=recipient_context(r.user, email=r.address if step.channel == "email" else None, role=None if r.user else "owner"),
        signal=dict(e.signal or {}),
        playbook={"id": e.playbook_id, "name": ctx.playbook_name, "version": e.playbook_version},
        unsubscribe_url=unsub,
        settings=ctx.settings,
        brief=_brief(ctx) if template.audience == "internal" else None,
        resource=resource,
        survey=survey,
    )
    rendered = render({p: getattr(template, p) for p in PARTS}, variables, RenderBudget.from_settings(ctx.settings))
    return {"subject": rendered.subject, "html_body": rendered.html_body, "text_body": rendered.text_body}


def _brief(ctx: StepContext) -> dict[str, Any]:
    """The internal brief: the signal's evidence, what this enrolment sent so far, and
    the steps after this one."""
    e = ctx.enrollment
    sent = [{**m, "at": utc(m["at"]).isoformat()} for m in ctx.batch.sent(e.id)]
    following = ctx.steps.steps[ctx.index + 1 :]
    return brief_context(
        account_id=e.account_id,
        signal=dict(e.signal or {}),
        sent=sent,
        next_steps=[describe(s) for s in following] or ["the playbook ends here"],
        settings=ctx.settings,
    )


def build(
    ctx: StepContext, step: SendStep, out: MessageRows, r: Recipient, content: dict[str, str], unsub: str, resource_id: str | None = None
) -> dict[str, Any]:
    if out.base["audience"] == "customer" and step.channel in ("email", "inapp"):
        # Every link of a customer message answers back through /r/ (docs/content.md).
        content = message_links(
            content,
            ctx.settings,
            now=ctx.now,
            message_id=out.key(r),
            account_id=ctx.enrollment.account_id,
            user_id=r.user_id,
            playbook_id=ctx.enrollment.playbook_id or None,
            resource_id=resource_id,
            broadcast_id=ctx.broadcast_id,
        )
    if step.channel == "email":
        defer = policy.quiet_until(r.user.timezone if r.user else None, ctx.now, ctx.settings)
        return email_message(out, r, content, unsubscribe_url=unsub, defer_until=defer, delivery=step.delivery)
    if step.channel == "inapp":
        return inapp_message(out, r, content)
    return webhook_message(out, r, content, fmt=step.format, playbook_name=ctx.playbook_name, account=ctx.account)
