"""A CSM sends a resource of the library to a contact from an engagement, through the
contact gate a playbook's message goes through (suppressions, erasure, the contact and
account caps, quiet hours; not the engagement hold, since the CSM is the one holding
the account) and never a resource the contact already received. The message is a
customer email (a touch: the caps count it like an automated one), rendered from a
template that names the resource (default: the starter ``resource-pick``), queued for
the sender, and on the engagement's timeline as a ``resource`` touch."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.content import repository as repo
from services.outreach.content import routing
from services.outreach.engagements.email import GATE_REASONS, Refused, gate, queue
from services.outreach.engagements.transitions import event
from services.outreach.links.rewriting import message_links
from services.outreach.models import Engagement
from services.outreach.policy.tokens import unsubscribe_url
from services.outreach.templates import repository as template_repo
from services.outreach.templates.context import account_context, build_context, recipient_context, resource_context
from services.outreach.templates.rendering import PARTS, TemplateProblem, render
from services.outreach.templates.sandbox import RenderBudget
from shared.errors import Conflict, NotFound, Unprocessable
from shared.settings import Settings

NAMESPACE = uuid.UUID("2f4a3c1e-7d55-4c1b-9a0e-5b8e6f1d2c37")


def send_resource(
    session: Session, e: Engagement, *, resource_id: str, user_id: str, template_id: str, actor: str, now: datetime, settings: Settings
) -> dict[str, Any]:
    """Queue ``resource_id`` for contact ``user_id`` of the engagement's account. Refusals
    write nothing and say why (409 ``contact_policy`` with the reason)."""
    if e.status not in ("assigned", "active"):
        raise Conflict(f"engagement {e.id} is {e.status}; only an assigned or active engagement can send", code="engagement_not_open")
    resource = repo.get(session, resource_id)
    if resource is None:
        raise NotFound(f"no resource {resource_id!r} in the content library")
    template = template_repo.get(session, template_id)
    if template is None or template.audience != "customer":
        raise Unprocessable(
            f"{template_id!r} is not a customer template; name one that renders {{{{ resource.title }}}}", code="unknown_template"
        )
    contact = ingest.contact(session, e.account_id, user_id)
    if contact is None:
        raise Unprocessable(f"no contact {user_id!r} in account {e.account_id!r}", code="unknown_contact")

    reason = gate(session, e.account_id, contact, now, settings)
    if reason:
        raise Refused({"reason": reason, "message": f"the contact gate holds {user_id} back: {GATE_REASONS.get(reason, reason)}"})
    if resource_id in repo.received_of(session, [e.account_id]).get(e.account_id, {}).get(user_id, set()):
        raise Refused({"reason": "already_received", "message": f"{user_id} already received {resource_id}"})
    assert contact.email is not None  # the gate refuses a contact without one

    mid = str(uuid.uuid5(NAMESPACE, f"{e.id}\x1f{resource_id}\x1f{user_id}"))
    unsub = unsubscribe_url(settings, email=contact.email, account_id=e.account_id, message_id=mid)
    why = f"sent by {actor} from engagement {e.id}"
    account = ingest.account(session, e.account_id)
    variables = build_context(
        account=account_context(account) or {"id": e.account_id, "name": e.account_id},
        recipient=recipient_context(contact),
        signal=dict((e.reason or {}).get("signal") or {}),
        playbook={"id": f"engagement:{e.id}", "name": e.title or "Engagement", "version": 0},
        unsubscribe_url=unsub,
        settings=settings,
        resource=resource_context(resource, why),
    )
    try:
        rendered = render({p: getattr(template, p) for p in PARTS}, variables, RenderBudget.from_settings(settings))
    except TemplateProblem as problem:
        raise Unprocessable(problem.as_dict(), code="template_invalid") from None
    content = message_links(
        {"subject": rendered.subject, "html_body": rendered.html_body, "text_body": rendered.text_body},
        settings,
        now=now,
        message_id=mid,
        account_id=e.account_id,
        user_id=user_id,
        resource_id=resource_id,
    )
    payload: dict[str, Any] = {
        "unsubscribe_url": unsub,
        "engagement_id": e.id,
        "recommendation": {**routing.describe(resource), "sent_by": actor, "engagement_id": e.id, "why": why},
    }
    defer = queue(
        session,
        e,
        contact,
        mid=mid,
        step_id="engagement.resource",
        touch_key=f"engagement:{e.id}:resource:{resource_id}:{user_id}",
        template_id=template_id,
        resource_id=resource_id,
        content=content,
        payload=payload,
        now=now,
        settings=settings,
    )
    event(session, e, "touch", actor=actor, now=now, touch="resource", user_id=user_id, resource_id=resource_id, message_id=mid)
    e.updated_at = now
    session.flush()
    return {"message_id": mid, "resource_id": resource_id, "state": "queued", "next_attempt_at": (defer or now).isoformat()}
