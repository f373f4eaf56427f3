"""Helpers shared by the outreach tests: accounts and contacts, templates and
playbooks, signals on cs.signals. (Their fixtures, ``sink`` and ``workers``, are in
conftest.py.)"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timedelta

from services.ingest.models import Account, UsageDaily, User, UserActivityDaily
from services.outreach.channels.smtp import SmtpSender, build_email
from services.outreach.models import Message
from shared.db import transaction
from tests.support.helpers import T0, drain, publish

WIN_BACK = {
    "name": "Win-back",
    "subject": "{{ recipient.first_name }}, {{ account.name }} misses you",
    "html_body": "<p>Hi {{ recipient.first_name }} &mdash; {{ account.name }}</p><p>{{ signal.rule_name }}</p>"
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text_body": "Hi {{ recipient.first_name }}, {{ account.name }} misses you.\nUnsubscribe: {{ unsubscribe_url }}",
}
# What the account owner (an internal address) gets: never the customer's copy.
OWNER_BRIEF = {
    "name": "Owner brief",
    "audience": "internal",
    "subject": "{{ account.name }} is still silent",
    "text_body": "{% for line in brief.evidence %}{{ line }}\n{% endfor %}"
    "{% for m in brief.sent %}sent {{ m.channel }} to {{ m.to }}: {{ m.subject }}\n{% endfor %}"
    "{% for step in brief.next %}next: {{ step }}\n{% endfor %}{{ brief.account_url }}",
}


def add_account(session_factory, account_id: str = "acme", users: dict[str, dict] | None = None, **traits) -> None:
    users = (
        users
        if users is not None
        else {
            "ada": {"email": f"ada@{account_id}.test", "name": "Ada Lovelace", "role": "champion", "timezone": "Europe/London"},
            "bob": {"email": f"bob@{account_id}.test", "name": "Bob", "role": "admin"},
            "cy": {"email": f"cy@{account_id}.test", "name": "Cy", "role": "member"},
        }
    )
    with transaction(session_factory) as s:
        s.add(
            Account(
                id=account_id,
                name=traits.pop("name", account_id.title() + " Inc"),
                plan=traits.pop("plan", "pro"),
                segment=traits.pop("segment", "smb"),
                lifecycle_stage=traits.pop("lifecycle_stage", "adopted"),
                owner_email=traits.pop("owner_email", f"owner@{account_id}.test"),
                traits=traits.pop("traits", {}),
                created_at=T0,
                updated_at=T0,
            )
        )
        s.flush()
        for uid, u in users.items():
            s.add(User(account_id=account_id, id=uid, traits={}, created_at=T0, updated_at=T0, **u))


def add_activity(session_factory, account_id: str, users: list[str], day: date, logins: int = 1) -> None:
    with transaction(session_factory) as s:
        for u in users:
            s.merge(UserActivityDaily(account_id=account_id, day=day, user_id=u, count=logins))
        s.merge(UsageDaily(account_id=account_id, day=day, event_name="login", count=logins * len(users)))


def signal(
    account_id: str = "acme", rule_id: str = "no-login-14d", kind: str = "churn_risk", signal_id: str | None = None, fired_at: datetime = T0
) -> dict:
    return {
        "signal_id": signal_id or str(uuid.uuid4()),
        "rule_id": rule_id,
        "rule_version": 1,
        "rule_name": "No login in 14 days",
        "account_id": account_id,
        "kind": kind,
        "severity": "high",
        "fired_at": fired_at.isoformat(),
        "evidence": {"days_since:login": {"value": 15, "op": ">=", "threshold": 14}},
    }


def send_signals(settings, signals: list[dict]) -> None:
    publish(settings, signals, topic=settings.topic_signals)


def save_template(session_factory, settings, template_id: str = "win-back", body: dict | None = None) -> None:
    """Save one template; by default the customer's win-back and, beside it, the
    internal "owner-brief" that playbooks send the owner."""
    from services.outreach.templates.schemas import TemplateIn
    from services.outreach.templates.service import save

    with transaction(session_factory) as s:
        save(s, template_id, TemplateIn(**(body or WIN_BACK)), settings=settings, actor="test", now=T0)
        if template_id == "win-back" and body is None:
            save(s, "owner-brief", TemplateIn(**OWNER_BRIEF), settings=settings, actor="test", now=T0)


def save_playbook(session_factory, playbook_id: str, definition: dict) -> None:
    from services.outreach.playbooks.schemas import PlaybookDefinition
    from services.outreach.playbooks.service import save

    with transaction(session_factory) as s:
        save(s, playbook_id, PlaybookDefinition.model_validate(definition), actor="test", now=T0)


def messages(session_factory, **where) -> list[Message]:
    from sqlalchemy import select

    with session_factory() as s:
        q = select(Message).order_by(Message.created_at, Message.recipient)
        for k, v in where.items():
            q = q.where(getattr(Message, k) == v)
        return list(s.scalars(q))


def simple_playbook(steps: list[dict] | None = None, **extra) -> dict:
    return {
        "name": "Win back",
        "trigger": {"rules": ["no-login-14d"]},
        "steps": steps or [{"id": "email-1", "type": "send", "channel": "email", "template": "win-back", "to": ["champion", "admin"]}],
        **extra,
    }


def enrol_in_win_back(settings, session_factory, workers, *signals: dict) -> dict:
    """The win-back playbook (simple_playbook() with the WIN_BACK template) saved, and
    ``signals`` (by default one signal() for acme) sent on cs.signals; returns the
    ``workers()`` once the signals worker has queued the two emails (the account's
    champion and admin; the account is the caller's, see add_account)."""
    save_template(session_factory, settings)
    save_playbook(session_factory, "win-back", simple_playbook())
    w = workers()
    send_signals(settings, list(signals) or [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 2)
    return w


def days(n: float) -> timedelta:
    return timedelta(days=n)


def jdump(obj) -> str:
    return json.dumps(obj)


def queue_messages(
    session_factory, n: int, now: datetime, *, channel: str = "email", payload: dict | None = None, recipient: str = "user{i}@acme.test"
) -> list[str]:
    """``n`` due outbox rows written directly (no playbook run): for delivery tests that
    only need something to send. Returns their ids."""
    from services.outreach.delivery import repository as delivery_repo

    rows = [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"queued/{now.isoformat()}/{i}")),
            "enrollment_id": None,
            "playbook_id": "delivery-test",
            "step_id": "email-1",
            "touch_key": f"t{i}",
            "account_id": "acme",
            "user_id": None,
            "channel": channel,
            "recipient": recipient.format(i=i),
            "template_id": None,
            "subject": f"Message {i}",
            "html_body": "",
            "text_body": f"Body {i}\n.\nA line with only a dot above.",
            "payload": dict(payload or {}),
            "state": "queued",
            "skip_reason": None,
            "attempts": 0,
            "last_error": None,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_until": None,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
            "read_at": None,
        }
        for i in range(n)
    ]
    with transaction(session_factory) as s:
        delivery_repo.insert_messages(s, rows)
    return [r["id"] for r in rows]


def send_one(sender: SmtpSender, key: str) -> None:
    """Send one small email with message key ``key`` through ``sender``, then close it
    (whatever the send raised)."""
    try:
        raw = build_email(
            key=key,
            mail_from="success@touchline.example",
            mail_from_name="Touchline",
            to="ada@acme.test",
            subject="Hello",
            text_body="Hi",
            html_body="",
            unsubscribe_url=None,
            date=T0,
        )
        sender.send(raw, "success@touchline.example", "ada@acme.test")
    finally:
        sender.close()
