"""The contact policy, applied to every customer-facing message (email, in-app):

* suppression: unsubscribed, hard-bounced, manually suppressed or erased addresses;
* frequency caps, global (settings) and per playbook: at most N messages per contact
  in D days, and at most N *touches* per account in D days (a touch is one step sent
  to an account, however many of its people receive it);
* quiet hours in the contact's time zone: the message is deferred to the end of the
  quiet period, never dropped.

Every refusal has a reason that is written on a ``skipped`` message row. Webhooks
reach the CS team, not the customer: only holdouts apply to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.policy import repository as repo
from services.outreach.policy.tokens import email_hash
from services.outreach.surveys import repository as surveys_repo
from services.rules.interface import forget_contact
from shared.settings import Settings


@dataclass(frozen=True)
class Cap:
    limit: int
    days: float


@dataclass(frozen=True)
class Caps:
    contact: Cap | None = None
    account: Cap | None = None


def global_caps(settings: Settings) -> Caps:
    return _caps(settings.contact_cap_messages, settings.contact_cap_days, settings.account_cap_touches, settings.account_cap_days)


@lru_cache(maxsize=16)
def _caps(contact_messages: int, contact_days: float, account_touches: int, account_days: float) -> Caps:
    return Caps(
        contact=Cap(contact_messages, contact_days) if contact_messages > 0 else None,
        account=Cap(account_touches, account_days) if account_touches > 0 else None,
    )


class TouchCounts:
    """What the frequency caps count, for a set of accounts at one instant: the message
    ledger's counts, read set-based on first use (one statement per cap window and
    playbook, for all the accounts at once), plus the rows written since through
    :meth:`add` that are not in the table yet (a batch inserts its messages at the end).
    Build a new one once those rows are inserted, or they would count twice."""

    def __init__(self, session: Session, account_ids: Iterable[str], now: datetime):
        self.session, self.accounts, self.now = session, sorted(set(account_ids)), now
        self._touches: dict[tuple[datetime, str | None], dict[str, int]] = {}
        self._contacts: dict[tuple[datetime, str | None], dict[tuple[str, str], int]] = {}
        self._pending: dict[str, dict[str, dict[str, Any]]] = {}  # account -> message id -> row (counted rows only)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            if (
                row["channel"] in repo.CUSTOMER_CHANNELS
                and row["state"] in repo.COUNTED_STATES
                and row.get("audience", "customer") == "customer"
            ):
                self._pending.setdefault(row["account_id"], {}).setdefault(row["id"], row)

    def _new(self, account_id: str, since: datetime, playbook_id: str | None) -> list[dict[str, Any]]:
        return [
            r
            for r in self._pending.get(account_id, {}).values()
            if r["created_at"] >= since and (playbook_id is None or r["playbook_id"] == playbook_id)
        ]

    def account_touches(self, account_id: str, since: datetime, playbook_id: str | None = None) -> int:
        key = (since, playbook_id)
        if key not in self._touches:
            self._touches[key] = repo.account_touches(self.session, self.accounts, since, playbook_id)
        return self._touches[key].get(account_id, 0) + len({r["touch_key"] for r in self._new(account_id, since, playbook_id)})

    def contact_messages(self, account_id: str, user_id: str, since: datetime, playbook_id: str | None = None) -> int:
        key = (since, playbook_id)
        if key not in self._contacts:
            self._contacts[key] = repo.contact_messages(self.session, self.accounts, since, playbook_id)
        return self._contacts[key].get((account_id, user_id), 0) + sum(
            1 for r in self._new(account_id, since, playbook_id) if r["user_id"] == user_id
        )


def check_account(
    counts: TouchCounts, *, account_id: str, playbook_id: str, playbook_caps: Caps, settings: Settings, now: datetime
) -> str | None:
    """May this account receive one more touch? The reason if not."""
    cap = global_caps(settings).account
    if cap and counts.account_touches(account_id, now - timedelta(days=cap.days)) >= cap.limit:
        return "account_cap"
    cap = playbook_caps.account
    if cap and counts.account_touches(account_id, now - timedelta(days=cap.days), playbook_id) >= cap.limit:
        return "playbook_account_cap"
    return None


def check_contact(
    counts: TouchCounts, *, account_id: str, user_id: str | None, playbook_id: str, playbook_caps: Caps, settings: Settings, now: datetime
) -> str | None:
    if user_id is None:  # the account owner's address: no contact row to count against
        return None
    cap = global_caps(settings).contact
    if cap and counts.contact_messages(account_id, user_id, now - timedelta(days=cap.days)) >= cap.limit:
        return "contact_cap"
    cap = playbook_caps.contact
    if cap and counts.contact_messages(account_id, user_id, now - timedelta(days=cap.days), playbook_id) >= cap.limit:
        return "playbook_contact_cap"
    return None


def zone(name: str | None, default: str) -> ZoneInfo:
    """The contact's zone, else the default zone, else UTC (a name that does not load is passed over)."""
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def quiet_until(tz_name: str | None, now: datetime, settings: Settings) -> datetime | None:
    """If ``now`` is inside the contact's quiet hours, the end of them (UTC); else None."""
    return _quiet_until(tz_name, now, now.tzinfo, settings.quiet_hours_start, settings.quiet_hours_end, settings.default_timezone)


@lru_cache(maxsize=1024)
def _quiet_until(tz_name: str | None, now: datetime, _tzinfo: Any, start: int, end: int, default_timezone: str) -> datetime | None:
    # Pure, so kept: a signal batch asks for every contact at one ``now``, in a few time zones
    # (``_tzinfo`` in the key: instants equal in another zone would be one entry, answered in its zone).
    if start == end:
        return None
    tz = zone(tz_name, default_timezone)
    local = now.astimezone(tz)
    h = local.hour
    quiet = (h >= start or h < end) if start > end else (start <= h < end)
    if not quiet:
        return None
    day = local.date() if h < end else local.date() + timedelta(days=1)
    return datetime.combine(day, time(end), tzinfo=tz).astimezone(now.tzinfo)


@dataclass(frozen=True)
class Erasure:
    suppressed: bool
    messages_scrubbed: int


def erase_contact(session: Session, account_id: str, user_id: str, now: datetime) -> Erasure:
    """Erase a contact on request, everywhere a copy lives: ingest scrubs its contact row
    and raw events (through its command), rules its signal evidence and outbox
    payloads, outreach its messages, enrolments, engagements (reason, timeline), survey
    comments and the plain addresses of suppressions.
    Every address the contact had is then suppressed by hash only, enough to refuse it
    if it is ever identified again. Flushes only; the caller commits."""
    erased = ingest.erase_contact(session, account_id, user_id, now)
    emails = {e.lower() for e in set(erased.emails) | repo.message_addresses(session, account_id, user_id)}
    identifiers = sorted(emails | set(erased.names))
    forget_contact(session, account_id, identifiers)
    scrubbed = repo.scrub_messages(session, account_id, user_id, identifiers, now)
    repo.scrub_enrollments(session, account_id, identifiers)
    repo.scrub_engagements(session, account_id, identifiers)
    surveys_repo.scrub_comments(session, account_id, user_id)
    hashes = [email_hash(e) for e in sorted(emails)]
    for h in hashes:
        repo.add_suppression(session, email_hash=h, email=None, reason="erased", detail="", now=now)
    repo.forget_suppressed_addresses(session, hashes)
    session.flush()
    return Erasure(suppressed=bool(emails), messages_scrubbed=scrubbed)
