"""Who a send step reaches: the ``to`` list (roles, ``owner``, ``all_users``,
``active_users:<N>d``) resolved against ingest's contacts (read through the batch, set-based),
or the webhook URL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.ingest.interface import AccountInfo, Contact
from services.outreach.playbooks.batch import Batch


@dataclass
class Recipient:
    user_id: str | None
    address: str  # email address, user id (in-app) or URL (webhook)
    user: Contact | None = None


def resolve_recipients(
    batch: Batch, *, account_id: str, account: AccountInfo | None, channel: str, to: list[str], url: str | None, now: datetime
) -> list[Recipient]:
    """Each contact once, by id; the owner address is added for email unless a contact
    already has it."""
    if channel == "webhook":
        return [Recipient(None, url or "")]
    users: dict[str, Contact] = {}
    owner = False
    roles = [spec for spec in to if ":" not in spec and spec not in ("owner", "all_users")]
    if roles:
        for u in batch.contacts(account_id, roles):
            users[u.id] = u
    for spec in to:
        name, _, window = spec.partition(":")
        if name == "owner":
            owner = True
        elif name == "all_users":
            for u in batch.contacts(account_id, None):
                users[u.id] = u
        elif name == "active_users":
            today = now.date()
            for u in batch.active_users(account_id, today - timedelta(days=int(window[:-1]) - 1), today):
                users[u.id] = u
    out = []
    for u in users.values():
        address = u.id if channel == "inapp" else (u.email or "")
        out.append(Recipient(u.id, address, u))
    if owner and channel == "email" and account is not None and account.owner_email:
        if all(r.address.lower() != account.owner_email.lower() for r in out):
            out.append(Recipient(None, account.owner_email))
    return out
