"""The ``survey`` step: the send step's path (holdout, the contact gate, render, build)
sending each recipient a survey, NPS (0-10) or CSAT (1-5), with one-click score links
(docs/surveys.md). The template renders ``survey``: the question, each score's link
(``survey.scores``: ``score`` and ``url``), the comment page (``survey.comment_url``)
and the scale's labels. Every link is sealed for its recipient (the token is the
credential), so the step sends to the customer's contacts only, never the owner.
Batched like the send step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from services.outreach.playbooks.messages import MessageRows
from services.outreach.playbooks.recipients import Recipient, resolve_recipients
from services.outreach.playbooks.steps.definitions import SendStep
from services.outreach.playbooks.steps.registry import StepContext, StepOutcome, register
from services.outreach.playbooks.steps.send import build, decide, render_for
from services.outreach.policy.tokens import unsubscribe_url
from services.outreach.surveys.links import survey_context
from services.outreach.templates.rendering import TemplateProblem


class SurveyStep(SendStep):
    """Send a survey (NPS or CSAT) with one-click score links."""

    type: Literal["survey"]  # type: ignore[assignment]
    channel: Literal["email", "inapp"] = "email"
    survey: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$", description="the survey's id: its answers and results"
    )
    scale: Literal["nps", "csat"] = Field("nps", description="nps: 0-10; csat: 1-5")
    question: str | None = Field(None, max_length=300, description="default: the scale's standard question")

    def describe(self) -> str:
        return f"{self.scale} survey {self.survey} by {self.channel} ({self.template}) to {', '.join(self.to)} ({self.id})"

    @field_validator("to")
    @classmethod
    def _customers_only(cls, to: list[str]) -> list[str]:
        if "owner" in to:
            raise ValueError("a survey step asks the customer's contacts; the owner is an internal address")
        return to


@register("survey", SurveyStep, batched=True)
def run_survey(ctx: StepContext, step: SurveyStep) -> StepOutcome:
    e = ctx.enrollment
    template = ctx.batch.template(step.template) if step.template else None
    out = MessageRows(e, step.id, step.channel, step.template, ctx.now, audience="customer")
    recipients = resolve_recipients(
        ctx.batch, account_id=e.account_id, account=ctx.account, channel=step.channel, to=step.to, url=None, now=ctx.now
    )
    rows: list[dict[str, Any]] = []
    recorded = {"payload": {"survey": {"id": step.survey, "scale": step.scale}}}
    if not recipients:
        rows.append(out.skipped(Recipient(None, ""), "no_recipients"))
    elif e.holdout:
        rows.extend(out.skipped(r, "held_out", **recorded) for r in recipients)
    else:
        for r, reason in zip(recipients, decide(ctx, step, recipients, template), strict=True):
            if reason is None and r.user_id is None:
                reason = "no_contact"  # an answer belongs to a contact
            if reason is None and r.user_id is not None and ctx.batch.answered(step.survey, e.account_id, r.user_id):
                reason = "already_answered"  # asked again, they would only replace their answer
            if reason:
                rows.append(out.skipped(r, reason))
                continue
            assert r.user_id is not None
            unsub = (
                unsubscribe_url(ctx.settings, email=r.address, account_id=e.account_id, message_id=out.key(r))
                if step.channel == "email"
                else ""
            )
            survey = survey_context(
                ctx.settings,
                now=ctx.now,
                survey_id=step.survey,
                scale=step.scale,
                question=step.question,
                account_id=e.account_id,
                user_id=r.user_id,
                message_id=out.key(r),
                playbook_id=e.playbook_id,
            )
            try:
                content = render_for(ctx, step, template, r, unsub, survey=survey)
            except TemplateProblem as problem:
                rows.append(out.skipped(r, "render_error", last_error=problem.as_dict()["message"]))
                continue
            row = build(ctx, step, out, r, content, unsub)
            row["payload"] = {**row["payload"], **recorded["payload"]}
            rows.append(row)
    ctx.batch.write_messages(rows)
    counts: dict[str, int] = {}
    for row in rows:
        k = row["skip_reason"] or row["state"]
        counts[k] = counts.get(k, 0) + 1
    return StepOutcome(note={"messages": counts, "survey": step.survey})
