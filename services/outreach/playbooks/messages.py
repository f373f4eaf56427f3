"""The message rows a send step writes, one builder per channel. Every recipient gets
a row, including the ones skipped (with the reason), so every outcome is recorded.

Row ids are :func:`~services.outreach.delivery.service.message_key` (enrolment, step,
address): a step that runs again after a crash writes the same ids, and they dedupe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ingest.interface import AccountInfo
from services.outreach.delivery.service import message_key
from services.outreach.models import Enrollment
from services.outreach.playbooks.recipients import Recipient
from services.outreach.templates.context import account_context


class MessageRows:
    """Builds the rows of one send step of one enrolment."""

    def __init__(
        self, enrollment: Enrollment, step_id: str, channel: str, template_id: str | None, now: datetime, audience: str = "customer"
    ):
        self.enrollment, self.step_id, self.now = enrollment, step_id, now
        self._keys: dict[str, str] = {}  # address -> message id (the unsubscribe link names it too)
        self.base: dict[str, Any] = {
            "enrollment_id": enrollment.id,
            "playbook_id": enrollment.playbook_id,
            "step_id": step_id,
            "touch_key": f"{enrollment.id}\x1f{step_id}",
            "account_id": enrollment.account_id,
            "channel": channel,
            "audience": audience,
            "template_id": template_id,
            "resource_id": None,
            "subject": "",
            "html_body": "",
            "text_body": "",
            "payload": {},
            "attempts": 0,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "sent_at": None,
        }

    def key(self, r: Recipient) -> str:
        address = r.address or f"user:{r.user_id}"
        key = self._keys.get(address)
        if key is None:
            key = self._keys[address] = message_key(self.enrollment.id, self.step_id, address)
        return key

    def row(self, r: Recipient, state: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
        d = {
            **self.base,
            "id": self.key(r),
            "user_id": r.user_id,
            "recipient": r.address,
            "state": state,
            "skip_reason": reason,
            "next_attempt_at": None,
        }
        d.update(extra)
        return d

    def skipped(self, r: Recipient, reason: str, **extra: Any) -> dict[str, Any]:
        return self.row(r, "skipped", reason, **extra)


def email_message(
    rows: MessageRows,
    r: Recipient,
    content: dict[str, str],
    *,
    unsubscribe_url: str,
    defer_until: datetime | None,
    delivery: str = "at_most_once",
) -> dict[str, Any]:
    """Queued for the sender; deferred to the end of the contact's quiet hours if needed.
    ``delivery`` is the step's choice when the server's reply to the final dot is lost."""
    payload: dict[str, Any] = {"unsubscribe_url": unsubscribe_url}
    if defer_until:
        payload["deferred"] = "quiet_hours"
    if delivery != "at_most_once":
        payload["delivery"] = delivery
    return rows.row(r, "queued", next_attempt_at=defer_until or rows.now, payload=payload, **content)


def inapp_message(rows: MessageRows, r: Recipient, content: dict[str, str]) -> dict[str, Any]:
    # Stored for the product to fetch: delivered as soon as it is written.
    return rows.row(r, "sent", sent_at=rows.now, **content)


def webhook_message(
    rows: MessageRows, r: Recipient, content: dict[str, str], *, fmt: str, playbook_name: str, account: AccountInfo | None
) -> dict[str, Any]:
    """A POST to the CS team's endpoint: the playbook, step, account and signal."""
    e = rows.enrollment
    summary = f"{playbook_name}: {e.account_id} ({(e.signal or {}).get('kind', '')})"
    body = {
        "event": "touchline.playbook.step",
        "message_id": rows.key(r),
        "playbook": {"id": e.playbook_id, "version": e.playbook_version, "name": playbook_name},
        "step": rows.step_id,
        "account": account_context(account) or {"id": e.account_id},
        "signal": e.signal,
        "summary": summary,
    }
    return rows.row(
        r, "queued", next_attempt_at=rows.now, payload={"format": fmt, "body": body}, text_body=content.get("text_body") or summary
    )
