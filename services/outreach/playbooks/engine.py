"""The playbook engine: enrol an account on a signal, run its steps until a wait (a
durable ``due_at`` on the enrolment) or the end, and the built-in step types.

Everything here runs inside the caller's transaction (the consumer batch or the
timer tick) and only flushes: the messages a step writes and the enrolment's new
position commit together, so a crash redoes the step and its keyed messages dedupe.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from services.ingest.models import Account
from services.outreach.delivery import repository as delivery_repo
from services.outreach.engagements import repository as engagement_repo
from services.outreach.delivery.service import message_key
from services.outreach.models import Enrollment
from services.outreach.playbooks import repository as repo
from services.outreach.playbooks.conditions import accounts_meeting, evaluate_exit_condition
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.playbooks.steps import (
    BranchStep,
    EndStep,
    REGISTRY,
    ParsedSteps,
    SendStep,
    StepOutcome,
    WaitStep,
    register,
    wait_until,
)
from services.outreach.policy import service as policy
from services.outreach.policy.repository import suppressed
from services.outreach.policy.tokens import email_hash, unsubscribe_url
from services.outreach.templates import repository as template_repo
from services.outreach.templates.rendering import (
    PARTS,
    RenderBudget,
    TemplateProblem,
    account_context,
    build_context,
    recipient_context,
    render,
)
from shared.metrics import MESSAGES_ENQUEUED

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("0b6f0d64-8d0c-4c43-a7d4-6a2b1d6f3e90")
MAX_STEPS_PER_RUN = 50
MAX_HISTORY = 200


# ---- holdouts -------------------------------------------------------------

def holdout_bucket(playbook_id: str, account_id: str) -> float:
    """A number in [0, 100) fixed by the playbook and the account, so a replay (or
    another worker) assigns the account to the same group."""
    digest = hashlib.sha256(f"{playbook_id}\x1f{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def is_held_out(playbook_id: str, account_id: str, percent: float) -> bool:
    return percent > 0 and holdout_bucket(playbook_id, account_id) < percent


# ---- definitions ------------------------------------------------------------

@dataclass
class Compiled:
    playbook_id: str
    version: int
    definition: PlaybookDefinition
    steps: ParsedSteps
    caps: policy.Caps


@lru_cache(maxsize=256)
def _compile_cached(playbook_id: str, version: int, definition_json: str) -> Compiled:
    import json

    definition = PlaybookDefinition.model_validate(json.loads(definition_json))
    c = definition.caps
    caps = policy.Caps(contact=policy.Cap(c.contact.max, c.contact.days) if c.contact else None,
                       account=policy.Cap(c.account.max, c.account.days) if c.account else None)
    return Compiled(playbook_id, version, definition, definition.parsed_steps(), caps)


def compile_version(playbook_id: str, version: int, definition: dict) -> Compiled:
    import json

    # Versions are immutable, so (id, version) alone would do; the JSON guards tests that reuse ids.
    return _compile_cached(playbook_id, version, json.dumps(definition, sort_keys=True))


def load_compiled(session: Session, playbook_id: str, version: int) -> Compiled:
    row = repo.get_version(session, playbook_id, version)
    if row is None:
        raise LookupError(f"playbook {playbook_id} v{version} does not exist")
    return compile_version(playbook_id, version, row.definition)


# ---- enrolment --------------------------------------------------------------

def enrollment_id(playbook_id: str, account_id: str, signal_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{playbook_id}\x1f{account_id}\x1f{signal_id}"))


def enroll(session: Session, compiled: Compiled, signal, account: Account | None, now: datetime, settings) -> Enrollment | None:
    """Enrol the signal's account unless it is already active in this playbook; run
    the first steps at once. Returns the enrolment, or None if it was already active."""
    eid = enrollment_id(compiled.playbook_id, signal.account_id, signal.signal_id)
    held_out = is_held_out(compiled.playbook_id, signal.account_id, compiled.definition.holdout_percent)
    inserted = repo.insert_enrollment(session, {
        "id": eid, "playbook_id": compiled.playbook_id, "playbook_version": compiled.version,
        "account_id": signal.account_id, "signal_id": signal.signal_id, "signal": signal.model_dump(mode="json"),
        "holdout": held_out, "status": "active", "active_key": f"{compiled.playbook_id}\x1f{signal.account_id}",
        "step_index": 0, "due_at": now, "history": [], "outcome_detail": {}, "enrolled_at": now,
    })
    if not inserted:
        return None
    enrollment = repo.get_enrollment(session, eid)
    advance(session, enrollment, compiled, now, settings, account=account)
    return enrollment


@dataclass
class StepContext:
    session: Session
    settings: Any
    now: datetime
    enrollment: Enrollment
    compiled: Compiled
    index: int
    account: Account | None


def _end(enrollment: Enrollment, status: str, now: datetime, detail: dict | None = None) -> None:
    enrollment.status, enrollment.ended_at, enrollment.active_key, enrollment.due_at = status, now, None, None
    if status == "converted":
        enrollment.converted_at = now
    if detail:
        enrollment.outcome_detail = detail


def _log(enrollment: Enrollment, now: datetime, step, result: str, **extra) -> None:
    entry = {"at": now.isoformat(), "step": getattr(step, "id", step), "type": getattr(step, "type", None), "result": result}
    entry.update(extra)
    enrollment.history = (list(enrollment.history or []) + [entry])[-MAX_HISTORY:]


def advance(session: Session, enrollment: Enrollment, compiled: Compiled, now: datetime, settings,
            account: Account | None = None) -> None:
    """Run due steps until a wait or the end."""
    if account is None:
        account = session.get(Account, enrollment.account_id)
    steps = compiled.steps.steps
    for _ in range(MAX_STEPS_PER_RUN):
        if enrollment.status != "active" or enrollment.due_at is None or enrollment.due_at > now:
            return
        if compiled.definition.exit_condition is not None:
            met, evidence = evaluate_exit_condition(session, compiled.definition.exit_condition, enrollment.account_id, now)
            if met:
                _log(enrollment, now, "exit_condition", "converted")
                _end(enrollment, "converted", now, {"reason": "exit_condition", "evidence": evidence})
                return
        i = enrollment.step_index
        if i >= len(steps):
            _log(enrollment, now, "end", "completed")
            _end(enrollment, "completed", now, {"reason": "last_step"})
            return
        step = steps[i]
        outcome = REGISTRY[step.type].run(StepContext(session, settings, now, enrollment, compiled, i, account), step)
        if outcome.end:
            _log(enrollment, now, step, outcome.end, **outcome.note)
            _end(enrollment, outcome.end, now, {"reason": f"step {step.id}", **outcome.note})
            return
        enrollment.step_index = outcome.next if outcome.next is not None else i + 1
        if outcome.wait_until is not None:
            enrollment.due_at = outcome.wait_until
            _log(enrollment, now, step, "waiting", until=outcome.wait_until.isoformat(), **outcome.note)
        else:
            _log(enrollment, now, step, "done", **outcome.note)
    _end(enrollment, "failed", now, {"reason": f"more than {MAX_STEPS_PER_RUN} steps without a wait: a branch loop?"})


def sweep_conversions(session: Session, now: datetime, limit: int) -> int:
    """End as converted every running enrolment whose playbook's exit condition holds
    now, one set-based evaluation per playbook version. Returns how many converted."""
    by_version: dict[tuple[str, int], list[Enrollment]] = {}
    for e in repo.active_enrollments(session, limit):
        by_version.setdefault((e.playbook_id, e.playbook_version), []).append(e)
    converted = 0
    for (playbook_id, version), enrollments in by_version.items():
        condition = load_compiled(session, playbook_id, version).definition.exit_condition
        if condition is None:
            continue
        met = accounts_meeting(session, condition, [e.account_id for e in enrollments], now)
        for e in enrollments:
            if e.account_id in met:
                _log(e, now, "exit_condition", "converted")
                _end(e, "converted", now, {"reason": "exit_condition", "checked_by": "conversion sweep"})
                converted += 1
    session.flush()
    return converted


# ---- built-in steps -----------------------------------------------------------

def run_wait(ctx: StepContext, step: WaitStep) -> StepOutcome:
    # The next step index is stored now; the enrolment sleeps until due_at.
    return StepOutcome(next=ctx.index + 1, wait_until=wait_until(step, ctx.now))


def run_branch(ctx: StepContext, step: BranchStep) -> StepOutcome:
    met, evidence = evaluate_exit_condition(ctx.session, step.if_, ctx.enrollment.account_id, ctx.now)
    target = ctx.compiled.steps.target(step.then if met else step.else_, ctx.index)
    note = {"condition": met, "evidence": evidence}
    if target == "convert":
        return StepOutcome(end="converted", note=note)
    if target == "end":
        return StepOutcome(end="completed", note=note)
    return StepOutcome(next=target, note=note)


def run_end(ctx: StepContext, step: EndStep) -> StepOutcome:
    return StepOutcome(end=step.outcome)


@dataclass
class Recipient:
    user_id: str | None
    address: str  # email address, user id (in-app) or URL (webhook)
    user: Any = None


def resolve_recipients(ctx: StepContext, step: SendStep) -> list[Recipient]:
    if step.channel == "webhook":
        return [Recipient(None, step.url)]
    s, account_id = ctx.session, ctx.enrollment.account_id
    users: dict[str, Any] = {}
    owner = False
    roles = [spec for spec in step.to if ":" not in spec and spec not in ("owner", "all_users")]
    if roles:
        for u in repo.users_by_role(s, account_id, roles):
            users[u.id] = u
    for spec in step.to:
        name, _, window = spec.partition(":")
        if name == "owner":
            owner = True
        elif name == "all_users":
            for u in repo.users_by_role(s, account_id, None):
                users[u.id] = u
        elif name == "active_users":
            today = ctx.now.date()
            for u in repo.active_users(s, account_id, today - timedelta(days=int(window[:-1]) - 1), today):
                users[u.id] = u
    out = []
    for u in users.values():
        address = u.id if step.channel == "inapp" else (u.email or "")
        out.append(Recipient(u.id, address, u))
    if owner and step.channel == "email" and ctx.account is not None and ctx.account.owner_email:
        if all(r.address.lower() != ctx.account.owner_email.lower() for r in out):
            out.append(Recipient(None, ctx.account.owner_email))
    return out


def run_send(ctx: StepContext, step: SendStep) -> StepOutcome:
    e, now, settings = ctx.enrollment, ctx.now, ctx.settings
    touch = f"{e.id}\x1f{step.id}"
    recipients = resolve_recipients(ctx, step)
    base = {"enrollment_id": e.id, "playbook_id": e.playbook_id, "step_id": step.id, "touch_key": touch,
            "account_id": e.account_id, "channel": step.channel, "template_id": step.template, "subject": "",
            "html_body": "", "text_body": "", "payload": {}, "attempts": 0, "created_at": now, "updated_at": now}
    rows: list[dict[str, Any]] = []

    def row(r: Recipient, state: str, reason: str | None = None, **extra) -> dict[str, Any]:
        d = {**base, "id": message_key(e.id, step.id, r.address or f"user:{r.user_id}"), "user_id": r.user_id,
             "recipient": r.address, "state": state, "skip_reason": reason, "next_attempt_at": None}
        d.update(extra)
        return d

    if not recipients:
        rows.append(row(Recipient(None, ""), "skipped", "no_recipients"))
    elif e.holdout:
        rows.extend(row(r, "skipped", "held_out") for r in recipients)
    else:
        customer = step.channel != "webhook"
        # One touch budget for machines and people: a CSM holds the account, automation steps back.
        account_reason = "in_engagement" if customer and not ctx.compiled.definition.operational \
            and engagement_repo.has_open(ctx.session, e.account_id) else None
        account_reason = account_reason or (policy.check_account(
            ctx.session, account_id=e.account_id, playbook_id=e.playbook_id, playbook_caps=ctx.compiled.caps,
            settings=settings, now=now) if customer else None)
        blocked = suppressed(ctx.session, [email_hash(r.address) for r in recipients if r.address]) if step.channel == "email" else set()
        template = template_repo.get(ctx.session, step.template) if step.template else None
        for r in recipients:
            reason = account_reason
            if reason is None and step.channel == "email" and not r.address:
                reason = "no_email"
            if reason is None and step.channel == "email" and email_hash(r.address) in blocked:
                reason = "suppressed"
            if reason is None and r.user is not None and (r.user.traits or {}).get("erased"):
                reason = "erased"
            if reason is None and customer:
                reason = policy.check_contact(ctx.session, account_id=e.account_id, user_id=r.user_id,
                                              playbook_id=e.playbook_id, playbook_caps=ctx.compiled.caps,
                                              settings=settings, now=now)
            if reason is None and step.template and template is None:
                reason = "template_missing"
            if reason:
                rows.append(row(r, "skipped", reason))
                continue
            key = message_key(e.id, step.id, r.address or f"user:{r.user_id}")
            unsub = unsubscribe_url(settings, email=r.address, account_id=e.account_id, message_id=key) \
                if step.channel == "email" else ""
            content: dict[str, Any] = {}
            if template is not None:
                ctx_vars = build_context(
                    account=account_context(ctx.account) or {"id": e.account_id, "name": e.account_id},
                    recipient=recipient_context(r.user, email=r.address if step.channel == "email" else None,
                                                role=None if r.user else "owner"),
                    signal=dict(e.signal or {}),
                    playbook={"id": e.playbook_id, "name": ctx.compiled.definition.name, "version": e.playbook_version},
                    unsubscribe_url=unsub, settings=settings)
                try:
                    rendered = render({p: getattr(template, p) for p in PARTS}, ctx_vars, RenderBudget.from_settings(settings))
                except TemplateProblem as problem:
                    rows.append(row(r, "skipped", "render_error", last_error=problem.as_dict()["message"]))
                    continue
                content = {"subject": rendered.subject, "html_body": rendered.html_body, "text_body": rendered.text_body}
            if step.channel == "email":
                defer = policy.quiet_until(getattr(r.user, "timezone", None), now, settings)
                rows.append(row(r, "queued", next_attempt_at=defer or now,
                                payload={"unsubscribe_url": unsub, **({"deferred": "quiet_hours"} if defer else {}),
                                         **({"delivery": step.delivery} if step.delivery != "at_most_once" else {})},
                                **content))
            elif step.channel == "inapp":
                # Stored for the product to fetch: delivered as soon as it is written.
                rows.append(row(r, "sent", sent_at=now, **content))
            else:
                summary = f"{ctx.compiled.definition.name}: {e.account_id} ({(e.signal or {}).get('kind', '')})"
                body = {"event": "touchline.playbook.step", "message_id": key, "playbook": {"id": e.playbook_id,
                        "version": e.playbook_version, "name": ctx.compiled.definition.name}, "step": step.id,
                        "account": account_context(ctx.account) or {"id": e.account_id}, "signal": e.signal,
                        "summary": summary}
                rows.append(row(r, "queued", next_attempt_at=now, payload={"format": step.format, "body": body},
                                text_body=content.get("text_body") or summary))
    new = delivery_repo.insert_messages(ctx.session, rows)
    for r in rows:
        if r["id"] in new:
            MESSAGES_ENQUEUED.labels(r["channel"], r["state"]).inc()
    counts: dict[str, int] = {}
    for r in rows:
        k = r["skip_reason"] or r["state"]
        counts[k] = counts.get(k, 0) + 1
    return StepOutcome(note={"messages": counts})


register("send", SendStep, run_send)
register("wait", WaitStep, run_wait)
register("branch", BranchStep, run_branch)
register("end", EndStep, run_end)
