"""Notices to CSMs (assignment, reminders) through the existing outbox: an email
rendered from a template CS Ops can edit (``engagement-assigned``,
``engagement-reminder``; the starter text is used until one is saved) and, when
``TOUCHLINE_ENGAGEMENT_WEBHOOK_URL`` is set, a signed webhook (JSON or Slack).

A notice is not a touch on the customer: its row carries no ``account_id`` (the
account is in its payload), so the contact policy never counts it, and it is sent at
once (no quiet hours: it goes to a colleague, not a customer).

An assignment pass writes hundreds of notices in one transaction; ``Notices`` lets it
read every account and template once and insert every row in one statement (one round
trip per pass instead of four per engagement: see docs/performance.md, "Engagements").
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.ingest.interface import AccountInfo
from services.outreach.engagements import repository as repo
from services.outreach.models import Csm, Engagement, Template
from services.outreach.starter_content import starter_templates
from services.outreach.templates import repository as template_repo
from services.outreach.templates.context import account_context, build_context
from services.outreach.templates.rendering import PARTS, TemplateProblem, render
from shared.clock import time_left
from shared.settings import Settings

NAMESPACE = uuid.UUID("5d7b8a0e-3f5c-4e2a-8d1b-9c6e4f2a7b10")
# A hand-opened engagement has no signal: templates still find every signal field.
EMPTY_SIGNAL = {
    "signal_id": "",
    "rule_id": "",
    "rule_version": 0,
    "rule_name": "",
    "kind": "",
    "severity": "",
    "fired_at": "",
    "user_id": None,
    "evidence": {},
}


@lru_cache(maxsize=8)
def _starter(template_id: str) -> SimpleNamespace:
    body = starter_templates().get(template_id) or {}
    return SimpleNamespace(**{p: body.get(p, "") for p in PARTS})


class Notices:
    """Notice rows collected in one transaction and written by ``flush``, with each
    account and template read once. Call ``flush`` before the transaction commits."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session, self.settings = session, settings
        self.rows: list[dict[str, Any]] = []
        self._accounts: dict[str, AccountInfo | None] = {}
        self._templates: dict[str, Template | SimpleNamespace] = {}

    def prefetch_accounts(self, account_ids: Iterable[str]) -> None:
        wanted = set(account_ids) - set(self._accounts)
        found = ingest.accounts(self.session, wanted)
        self._accounts.update({a: found.get(a) for a in wanted})

    def account(self, account_id: str) -> AccountInfo | None:
        if account_id not in self._accounts:
            self._accounts[account_id] = ingest.account(self.session, account_id)
        return self._accounts[account_id]

    def template(self, template_id: str) -> Template | SimpleNamespace:
        """The saved template CS Ops may have edited, else the starter text (parsed once)."""
        if template_id not in self._templates:
            self._templates[template_id] = template_repo.get(self.session, template_id) or _starter(template_id)
        return self._templates[template_id]

    def flush(self) -> None:
        repo.insert_messages(self.session, self.rows)
        self.rows = []


def engagement_context(e: Engagement, csm: Csm, settings: Settings, now: datetime, days_left: float | None = None) -> dict[str, Any]:
    due = e.due_at.isoformat() if e.due_at else None
    return {
        "engagement": {
            "id": e.id,
            "goal": e.goal,
            "title": e.title,
            "priority": e.priority,
            "due_at": due,
            "days_left": round(days_left, 1)
            if days_left is not None
            else (round((e.due_at - now).total_seconds() / 86400, 1) if e.due_at else None),
            # in the unit that fits ("7 days", "5 hours"): what a subject line shows
            "time_left": time_left((e.due_at - now).total_seconds()) if e.due_at else None,
            "time_box_days": e.time_box_days,
            "url": f"{settings.public_url}/v1/engagements/{e.id}",
        },
        "csm": {"id": csm.id, "name": csm.name, "email": csm.email, "timezone": csm.timezone},
    }


def _notice(batch: Notices, e: Engagement, csm: Csm, kind: str, now: datetime, *, tag: str, days_left: float | None = None) -> None:
    settings = batch.settings
    account = batch.account(e.account_id)
    first = (csm.name or "").split()[0] if (csm.name or "").strip() else "there"
    ctx = build_context(
        account=account_context(account) or {"id": e.account_id, "name": e.account_id},
        recipient={"id": csm.id, "email": csm.email, "name": csm.name, "first_name": first, "role": "csm", "timezone": csm.timezone},
        signal={**EMPTY_SIGNAL, **dict((e.reason or {}).get("signal") or {})},
        playbook={"id": e.playbook_id or "", "name": e.playbook_id or "", "version": 0},
        unsubscribe_url="",
        settings=settings,
    )
    ctx.update(engagement_context(e, csm, settings, now, days_left))
    template_id = f"engagement-{kind}"
    step = f"engagement.{kind}"
    key = f"{e.id}\x1f{kind}\x1f{e.assignments}\x1f{tag}"
    base: dict[str, Any] = {
        "enrollment_id": None,
        "playbook_id": None,
        "step_id": step,
        "touch_key": f"notice:{e.id}",
        "account_id": e.account_id,  # listed with the account; internal, so never a customer touch
        "audience": "internal",
        "user_id": None,
        "template_id": template_id,
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
        "skip_reason": None,
    }
    rows = []
    try:
        template = batch.template(template_id)
        rendered = render({p: getattr(template, p) for p in PARTS}, ctx)
        rows.append(
            {
                **base,
                "id": str(uuid.uuid5(NAMESPACE, f"{key}\x1femail\x1f{csm.email.lower()}")),
                "channel": "email",
                "recipient": csm.email,
                "subject": rendered.subject,
                "html_body": rendered.html_body,
                "text_body": rendered.text_body,
                "state": "queued",
                "next_attempt_at": now,
                "payload": {"engagement_id": e.id, "account_id": e.account_id, "csm_id": csm.id},
            }
        )
    except TemplateProblem as problem:
        rows.append(
            {
                **base,
                "id": str(uuid.uuid5(NAMESPACE, f"{key}\x1femail\x1f{csm.email.lower()}")),
                "channel": "email",
                "recipient": csm.email,
                "subject": "",
                "html_body": "",
                "text_body": "",
                "state": "skipped",
                "skip_reason": "render_error",
                "last_error": problem.as_dict()["message"],
                "next_attempt_at": None,
                "payload": {"engagement_id": e.id, "account_id": e.account_id, "csm_id": csm.id},
            }
        )
    if settings.engagement_webhook_url:
        name = (account.name if account else None) or e.account_id
        summary = (
            f"{csm.name}: {e.title} (priority {e.priority:g}, due {e.due_at:%Y-%m-%d})"
            if kind == "assigned"
            else f"Reminder for {csm.name}: {e.title} is due {e.due_at:%Y-%m-%d}"
        )
        body = {
            "event": f"touchline.engagement.{kind}",
            "engagement": ctx["engagement"],
            "csm": ctx["csm"],
            "account": {"id": e.account_id, "name": name},
            "summary": summary,
        }
        rows.append(
            {
                **base,
                "id": str(uuid.uuid5(NAMESPACE, f"{key}\x1fwebhook")),
                "channel": "webhook",
                "recipient": settings.engagement_webhook_url,
                "subject": "",
                "html_body": "",
                "text_body": summary,
                "state": "queued",
                "next_attempt_at": now,
                "payload": {"format": settings.engagement_webhook_format, "body": body},
            }
        )
    batch.rows.extend(rows)


def assigned(session: Session, e: Engagement, csm: Csm, now: datetime, settings: Settings, batch: Notices | None = None) -> None:
    """The assignment notice; written at once unless a ``batch`` collects it."""
    own = batch is None
    batch = batch or Notices(session, settings)
    _notice(batch, e, csm, "assigned", now, tag=csm.id)
    if own:
        batch.flush()


def reminder(session: Session, e: Engagement, csm: Csm, now: datetime, settings: Settings, *, days_left: float, tag: str) -> None:
    batch = Notices(session, settings)
    _notice(batch, e, csm, "reminder", now, tag=tag, days_left=days_left)
    batch.flush()
