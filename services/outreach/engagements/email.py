"""A CSM emails a contact from an engagement: from a template or in their own words.

The email takes the path automation's does: the contact gate first (no address, erased,
suppressed, the contact's and the account's frequency caps; quiet hours defer it to the
end of the contact's night, never drop it), its links through the signed redirect
(services/outreach/links), then a ``queued`` row in the message outbox that the sender
(services/outreach/delivery/worker.py) delivers like any other, with the unsubscribe link
and header. It is recorded as the engagement's touch (kind ``email``),
and, being a customer message, counts against the caps like one. A refusal is an error
naming the gate's reason (409 ``contact_policy``, as sharing a library resource from an
engagement answers: services/outreach/content/sharing.py), and nothing is stored.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.engagements import repository as repo
from services.outreach.engagements.opening import NAMESPACE
from services.outreach.engagements.service import require_open
from services.outreach.engagements.transitions import event
from services.outreach.links.rewriting import message_links
from services.outreach.models import Engagement
from services.outreach.policy import repository as policy_repo
from services.outreach.policy import service as policy
from services.outreach.policy.tokens import email_hash, unsubscribe_url
from services.outreach.templates import repository as templates
from services.outreach.templates.context import account_context, build_context, recipient_context
from services.outreach.templates.rendering import PARTS, TemplateProblem, render
from services.outreach.templates.sandbox import RenderBudget
from shared.errors import Conflict, NotFound, Unprocessable
from shared.settings import Settings

STEP_ID = "engagement.email"


class Refused(Conflict):
    """The contact gate said no: its reason, as a skipped message carries it (sharing a
    library resource from an engagement answers the same: services/outreach/content/sharing.py
    goes through :func:`gate` and :func:`queue` too)."""

    code = "contact_policy"


GATE_REASONS = {
    "no_email": "this contact has no email address",
    "erased": "this contact was erased on request",
    "suppressed": "this address is suppressed (unsubscribed, bounced or suppressed by hand)",
    "contact_cap": "this contact has had as many messages as the contact cap allows for now",
    "account_cap": "this account has had as many touches as the account cap allows for now",
}


def gate(session: Session, account_id: str, contact: ingest.Contact, now: datetime, settings: Settings) -> str | None:
    """The contact gate's reason to refuse this contact an email now (None: it may go)."""
    if not contact.email:
        return "no_email"
    if (contact.traits or {}).get("erased"):
        return "erased"
    if policy_repo.suppressed(session, [email_hash(contact.email)]):
        return "suppressed"
    counts = policy.TouchCounts(session, [account_id], now)
    none = policy.Caps()
    return policy.check_account(
        counts, account_id=account_id, playbook_id="", playbook_caps=none, settings=settings, now=now
    ) or policy.check_contact(
        counts, account_id=account_id, user_id=contact.id, playbook_id="", playbook_caps=none, settings=settings, now=now
    )


def queue(
    session: Session,
    e: Engagement,
    contact: ingest.Contact,
    *,
    mid: str,
    step_id: str,
    touch_key: str,
    template_id: str | None,
    resource_id: str | None,
    content: dict[str, str],
    payload: dict[str, Any],
    now: datetime,
    settings: Settings,
) -> datetime | None:
    """Queue a CSM's customer email (rendered ``content``, its links tracked) in the
    message outbox for the sender, deferred to the end of the contact's quiet hours if
    they are in them (``payload`` then says so). Returns that deferral (None: now)."""
    assert contact.email is not None  # the gate refuses a contact without one
    defer = policy.quiet_until(contact.timezone, now, settings)
    if defer:
        payload["deferred"] = "quiet_hours"
    row = {
        "id": mid,
        "enrollment_id": None,
        "playbook_id": None,
        "step_id": step_id,
        "touch_key": touch_key,
        "account_id": e.account_id,
        "user_id": contact.id,
        "channel": "email",
        "audience": "customer",
        "recipient": contact.email,
        "template_id": template_id,
        "resource_id": resource_id,
        **content,
        "payload": payload,
        "state": "queued",
        "skip_reason": None,
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": defer or now,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
    }
    repo.insert_messages(session, [row])
    return defer


def send_email(
    session: Session,
    e: Engagement,
    *,
    user_id: str,
    template_id: str | None,
    subject: str,
    text: str,
    actor: str,
    now: datetime,
    settings: Settings,
) -> dict[str, Any]:
    """Queue an email to one of the account's contacts and record it as a touch. With
    ``template_id`` the template is rendered for the contact (customer templates only);
    without, ``subject`` and ``text`` are sent as plain text. Raises Unprocessable
    (``unknown_contact``, ``template_*``, ``email_empty``), NotFound
    or Conflict (a closed engagement; ``contact_policy``: the gate refused, with its reason);
    flushes only."""
    require_open(e, "send email")
    contact = ingest.contact(session, e.account_id, user_id) if user_id else None
    if contact is None:
        raise Unprocessable(
            f"pick one of the account's contacts (no contact {user_id!r} in account {e.account_id!r})", code="unknown_contact"
        )
    reason = gate(session, e.account_id, contact, now, settings)
    if reason:  # as a shared resource's refusal says it (409 contact_policy)
        raise Refused({"reason": reason, "message": f"the contact gate holds this email back: {GATE_REASONS.get(reason, reason)}"})
    assert contact.email is not None  # the gate refuses a contact without one
    n = len([x for x in repo.events_of(session, e.id) if x.kind == "touch"]) + 1
    mid = str(uuid.uuid5(NAMESPACE, f"{e.id}\x1femail\x1f{n}"))
    unsub = unsubscribe_url(settings, email=contact.email, account_id=e.account_id, message_id=mid)
    if template_id:
        template = templates.get(session, template_id)
        if template is None:
            raise NotFound(f"no template {template_id!r}")
        if template.audience == "internal":
            raise Unprocessable(f"template {template_id!r} is written for the team, not a customer", code="template_wrong_audience")
        signal = (e.reason or {}).get("signal")
        variables = build_context(
            account=account_context(ingest.account(session, e.account_id)) or {"id": e.account_id, "name": e.account_id},
            recipient=recipient_context(contact),
            signal=dict(signal) if isinstance(signal, dict) else {},
            playbook={"id": "engagement", "name": "Engagement", "version": 0},
            unsubscribe_url=unsub,
            settings=settings,
        )
        try:
            rendered = render({p: getattr(template, p) for p in PARTS}, variables, RenderBudget.from_settings(settings))
        except TemplateProblem as problem:  # e.g. it reads the signal of an engagement opened by hand, which has none
            raise Unprocessable(
                f"template {template_id!r} cannot be written for this contact: {problem.as_dict()['message']}",
                code="template_render_failed",
            ) from None
        content = {"subject": rendered.subject, "html_body": rendered.html_body, "text_body": rendered.text_body}
    else:
        if not subject.strip() or not text.strip():
            raise Unprocessable("an email needs a subject and a message (or pick a template)", code="email_empty")
        content = {"subject": subject.strip()[:300], "html_body": "", "text_body": text}
    # Its links answer back like every customer message's (services/outreach/links).
    content = message_links(content, settings, now=now, message_id=mid, account_id=e.account_id, user_id=contact.id)
    payload: dict[str, Any] = {"unsubscribe_url": unsub, "engagement_id": e.id, "csm_id": e.csm_id, "kind": "email"}
    defer = queue(
        session,
        e,
        contact,
        mid=mid,
        step_id=STEP_ID,
        touch_key=f"engagement:{e.id}:email:{n}",
        template_id=template_id or None,
        resource_id=None,
        content=content,
        payload=payload,
        now=now,
        settings=settings,
    )
    event(
        session,
        e,
        "touch",
        actor=actor,
        now=now,
        touch="email",
        user_id=contact.id,
        summary=content["subject"],
        message_id=mid,
        template_id=template_id or None,
        deferred_until=defer,
    )
    e.updated_at = now
    session.flush()
    return {"message_id": mid, "deferred_until": defer}
