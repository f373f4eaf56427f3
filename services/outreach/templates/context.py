"""What a template renders with: the account, the recipient, the signal, the playbook,
the unsubscribe link, the product and sender, and for internal templates the brief; and
the sample context a template is validated against on save."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from services.ingest.interface import AccountInfo, Contact
from services.outreach.surveys.links import SAMPLE_SURVEY
from shared.settings import Settings


def account_context(account: AccountInfo | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {
        "id": account.id,
        "name": account.name or account.id,
        "plan": account.plan,
        "arr": account.arr,
        "seats": account.seats,
        "segment": account.segment,
        "lifecycle_stage": account.lifecycle_stage,
        "renewal_date": account.renewal_date,
        "owner_email": account.owner_email,
        "traits": dict(account.traits or {}),
    }


def recipient_context(user: Contact | None = None, *, email: str | None = None, role: str | None = None) -> dict[str, Any]:
    name = getattr(user, "name", None) or ""
    return {
        "id": getattr(user, "id", None),
        "email": getattr(user, "email", None) or email,
        "name": name,
        "first_name": name.split()[0] if name.strip() else "there",
        "role": getattr(user, "role", None) or role,
        "timezone": getattr(user, "timezone", None),
    }


def build_context(
    *,
    account: dict[str, Any],
    recipient: dict[str, Any],
    signal: dict[str, Any],
    playbook: dict[str, Any],
    unsubscribe_url: str,
    settings: Settings,
    brief: dict[str, Any] | None = None,
    resource: dict[str, Any] | None = None,
    survey: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a template renders with. ``brief`` is for internal templates (a message to
    the account owner): the evidence as sentences, what automation already sent, what
    happens next and where to look (:func:`brief_context`); empty for customer copy.
    ``resource`` is the content library resource a recommend step chose (id, kind,
    title, url, summary, language, why); only a recommend step's message has it.
    ``survey`` is what a survey step sends (id, scale, question, scores with their
    one-click links, comment_url, low_label, high_label); only a survey step's message has it."""
    extra: dict[str, Any] = {"resource": resource} if resource is not None else {}
    if survey is not None:
        extra["survey"] = survey
    return {
        **extra,
        "account": account,
        "recipient": recipient,
        "signal": signal,
        "playbook": playbook,
        "unsubscribe_url": unsubscribe_url,
        "product": {"name": settings.product_name, "url": settings.product_url},
        "sender": {"name": settings.mail_from_name, "email": settings.mail_from},
        "brief": brief or {"evidence": [], "sent": [], "next": [], "account_url": ""},
    }


def _evidence_line(name: str, value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        needs = f" (the rule needs {value.get('op', '')} {value['threshold']})" if "threshold" in value else ""
        return f"{name}: {value['value']}{needs}"
    return f"{name}: {value}"


def brief_context(
    *, account_id: str, signal: dict[str, Any], sent: list[dict[str, Any]], next_steps: list[str], settings: Settings
) -> dict[str, Any]:
    """The ``brief`` an internal template renders: which evidence made the signal fire
    (one sentence each), what automation sent so far (at, channel, to, subject, state),
    what the playbook does next, and the account's console page."""
    return {
        "evidence": [_evidence_line(k, v) for k, v in sorted(dict(signal.get("evidence") or {}).items())],
        "sent": sent,
        "next": next_steps,
        "account_url": f"{settings.public_url}/console/accounts/{quote(account_id, safe='')}",
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


SAMPLE_RESOURCE = {
    "id": "first-reports-guide",
    "kind": "article",
    "title": "Five reports every analytics team starts with",
    "url": "https://help.example.com/guides/first-reports",
    "summary": "Build the reports analytics teams use in their first month, step by step.",
    "language": "en",
    "why": "first-reports-guide scored 9: goal win-back (+4), use case analytics (+3), feature report_created not used yet (+2)",
}


def resource_context(resource: Any, why: str) -> dict[str, Any]:
    return {
        "id": resource.id,
        "kind": resource.kind,
        "title": resource.title,
        "url": resource.url,
        "summary": resource.summary,
        "language": resource.language,
        "why": why,
    }


def sample_context(settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a template is validated against on save: every variable a real send has
    (and ``resource`` and ``survey``, which only a recommend or a survey step's message has)."""
    ctx = build_context(
        account={
            "id": "acme",
            "name": "Acme Inc",
            "plan": "pro",
            "arr": 24000.0,
            "seats": 25,
            "segment": "smb",
            "lifecycle_stage": "adopted",
            "renewal_date": date(2027, 3, 1),
            "owner_email": "owner@acme.example",
            "traits": {},
        },
        recipient={
            "id": "ada",
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "first_name": "Ada",
            "role": "champion",
            "timezone": "Europe/London",
        },
        signal={
            "signal_id": "sample",
            "rule_id": "sample-rule",
            "rule_version": 1,
            "rule_name": "Sample rule",
            "kind": "churn_risk",
            "severity": "medium",
            "fired_at": datetime(2026, 3, 2, 9, tzinfo=UTC),
            "user_id": None,
            "evidence": {},
        },
        playbook={"id": "sample-playbook", "name": "Sample playbook", "version": 1},
        unsubscribe_url="https://touchline.example/unsubscribe/sample-token",
        settings=settings,
        brief={
            "evidence": ["days_since_last_login: 15 (the rule needs >= 14)"],
            "sent": [
                {
                    "at": "2026-03-02T09:00:00+00:00",
                    "channel": "email",
                    "to": "ada@acme.example",
                    "subject": "Ada, your Acme Inc workspace is waiting",
                    "state": "sent",
                }
            ],
            "next": ["wait 7d", "open a recover_usage engagement for a pooled CSM (time-box 30d)"],
            "account_url": "https://touchline.example/console/accounts/acme",
        },
        resource=SAMPLE_RESOURCE,
        survey=SAMPLE_SURVEY,
    )
    return _merge(ctx, extra or {})
