"""Saving (validate, then store) and previewing templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.ingest.interface import AccountInfo, Contact
from services.outreach.models import Template
from services.outreach.policy.tokens import unsubscribe_url
from services.outreach.templates import repository as repo
from services.outreach.templates.context import account_context, build_context, recipient_context, sample_context
from services.outreach.templates.rendering import PARTS, Rendered, TemplateProblem, render
from services.outreach.templates.sandbox import RenderBudget
from services.outreach.templates.schemas import TemplateIn
from shared import audit
from shared.errors import NotFound, Unprocessable
from shared.settings import Settings


def validate(parts: dict[str, str], settings: Settings, extra_sample: dict[str, Any] | None = None) -> Rendered:
    """Compile every part and render it against the sample context; a problem is a 422
    naming the part, the line and what is wrong."""
    try:
        return render(parts, sample_context(settings, extra_sample), RenderBudget.from_settings(settings))
    except TemplateProblem as problem:
        raise Unprocessable(problem.as_dict(), code="template_invalid") from None


def save(session: Session, template_id: str, body: TemplateIn, *, settings: Settings, actor: str, now: datetime) -> Template:
    parts = {p: getattr(body, p) for p in PARTS}
    validate(parts, settings, body.sample_context)
    row = repo.get(session, template_id)
    action = "update"
    if row is None:
        row = Template(id=template_id, version=0, created_at=now)
        session.add(row)
        action = "create"
    row.version = (row.version or 0) + 1
    for field in ("name", "description", "subject", "html_body", "text_body", "audience", "sample_context"):
        setattr(row, field, getattr(body, field))
    row.updated_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="template",
        object_id=template_id,
        now=now,
        version=row.version,
        details={"name": row.name},
    )
    return row


def get_or_404(session: Session, template_id: str) -> Template:
    row = repo.get(session, template_id)
    if row is None:
        raise NotFound(f"no template {template_id!r}; create it with PUT /v1/templates/{template_id}")
    return row


def preview(
    session: Session,
    template: Template,
    *,
    account: AccountInfo,
    user: Contact | None,
    signal: dict[str, Any] | None,
    settings: Settings,
    unsubscribe_url: str,
) -> tuple[Rendered, dict[str, Any]]:
    sample = sample_context(settings, template.sample_context)
    ctx = build_context(
        account=account_context(account),
        recipient=recipient_context(user, email=None if user else account.owner_email, role=None if user else "owner"),
        signal={**sample["signal"], **(signal or {})},
        playbook={"id": "preview", "name": "Preview", "version": 0},
        unsubscribe_url=unsubscribe_url,
        settings=settings,
    )
    try:
        return render({p: getattr(template, p) for p in PARTS}, ctx, RenderBudget.from_settings(settings)), ctx
    except TemplateProblem as problem:
        raise Unprocessable(problem.as_dict(), code="template_render_failed") from None


def preview_for(
    session: Session, template: Template, *, account_id: str, user_id: str | None, signal: dict[str, Any] | None, settings: Settings
) -> tuple[Rendered, dict[str, Any]]:
    """Render a template for a real account and contact (the owner when no user is named)."""
    account = ingest.account(session, account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    user = None
    if user_id:
        user = ingest.contact(session, account_id, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r} in account {account_id!r}")
    email = (user.email if user else account.owner_email) or "nobody@example.invalid"
    return preview(
        session,
        template,
        account=account,
        user=user,
        signal=signal,
        settings=settings,
        unsubscribe_url=unsubscribe_url(settings, email=email, account_id=account.id),
    )
