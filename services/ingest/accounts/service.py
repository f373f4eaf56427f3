"""What ingest does with accounts and contacts beyond storing events: the read models
of an account that the API, the console and engagements show, and the two commands
other services give ingest (a rule's stage change, a contact's erasure). The commands
only flush; the caller owns the transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest.accounts.schemas import UsageDay, UsageOut, UsageTotals
from services.ingest.repository import accounts as accounts_repo
from services.ingest.repository import contracts as contracts_repo
from services.ingest.repository import events as events_repo
from services.ingest.repository import metrics
from services.ingest.service import apply_account_traits
from shared.events import AccountTraits
from shared.privacy import scrub

# ---- read models ----------------------------------------------------------------


def usage_report(session: Session, account_id: str, start: date, end: date) -> UsageOut:
    """Daily usage of an account over [start, end]: events by name and active users."""
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for day, name, count in metrics.usage_by_day(session, account_id, start, end):
        by_day[day][name] = count
        totals[name] += count
    active = metrics.active_users_by_day(session, account_id, start, end)
    days_out = [
        UsageDay(day=d, events=sum(by_day[d].values()), by_event=by_day[d], active_users=active.get(d, 0))
        for d in sorted(set(by_day) | set(active))
    ]
    return UsageOut(
        account_id=account_id,
        start=start,
        end=end,
        totals=UsageTotals(
            events=sum(totals.values()),
            by_event=dict(totals),
            active_users=metrics.distinct_active_users(session, account_id, start, end),
            active_days=len(by_day),
        ),
        last_seen=metrics.last_seen_by_event(session, account_id),
        days=days_out,
    )


def daily_series(session: Session, account_id: str, until: date, days: int) -> list[dict[str, Any]]:
    """One entry per UTC day of the ``days`` ending at ``until`` (gaps filled with 0):
    distinct active users and the count of each event (an engagement's context)."""
    start = until - timedelta(days=days - 1)
    active = metrics.active_users_by_day(session, account_id, start, until)
    events: dict[date, dict[str, int]] = {}
    for day, name, count in metrics.usage_by_day(session, account_id, start, until):
        events.setdefault(day, {})[name] = count
    return [
        {
            "day": (start + timedelta(days=i)).isoformat(),
            "active_users": active.get(start + timedelta(days=i), 0),
            "events": events.get(start + timedelta(days=i), {}),
        }
        for i in range(days)
    ]


# ---- commands -------------------------------------------------------------------


def set_lifecycle_stage(session: Session, account_ids: Iterable[str], stage: str, now: datetime) -> int:
    """Move accounts to ``stage`` (a rule action), as an observation at ``now``: the stage's
    change time is recorded, and a later identify/group still wins. Returns how many changed."""
    changed = 0
    for row in accounts_repo.accounts_to_change(session, sorted(set(account_ids))):
        if row.lifecycle_stage != stage:
            changed += apply_account_traits(row, AccountTraits(lifecycle_stage=stage), now, now)
    session.flush()
    return changed


@dataclass(frozen=True)
class ErasedContact:
    """What a contact was known by before erasure: other services scrub their copies
    of these (and suppress the addresses)."""

    account_id: str
    user_id: str
    emails: tuple[str, ...]
    names: tuple[str, ...]
    events_scrubbed: int

    @property
    def identifiers(self) -> tuple[str, ...]:
        return self.emails + self.names


def _strings(obj: Any, keys: tuple[str, ...]) -> set[str]:
    return {v for k in keys if isinstance(obj, dict) and isinstance(v := obj.get(k), str) and v.strip()}


def erase_contact(session: Session, account_id: str, user_id: str, now: datetime) -> ErasedContact:
    """Scrub a contact's personal data from ingest: the user row (email, name, traits),
    the identify events that carried them (the raw store keeps every trait the contact
    ever sent) and any other copy in the account's stored events, the account row (a
    track property, a group's ``owner_email``) or a contract outcome's note. Ids stay: rollups count activity, not
    people. Returns the addresses and names that were scrubbed."""
    user = accounts_repo.get_user(session, account_id, user_id)
    emails: set[str] = set()
    names: set[str] = set()
    if user is not None:
        emails |= {user.email} if user.email else set()
        names |= {user.name} if user.name else set()
    events = events_repo.events_of_contact(session, account_id, user_id)
    for ev in events:
        if ev.user_id == user_id and ev.type == "identify":
            emails |= _strings(ev.properties, ("email",))
            names |= _strings(ev.properties, ("name", "first_name", "last_name"))
    needles = sorted(emails | names)
    scrubbed = 0
    for ev in events:
        if ev.user_id == user_id and ev.type == "identify":
            ev.properties, changed = {"erased": True}, True
        else:
            ev.properties, changed = scrub(ev.properties or {}, needles)
        scrubbed += changed
    if user is not None:
        user.email, user.name, user.traits, user.updated_at = None, None, {"erased": True}, now
    acct = accounts_repo.get_account(session, account_id)
    if acct is not None and needles:
        owner, owner_changed = scrub(acct.owner_email, needles)
        traits, traits_changed = scrub(acct.traits or {}, needles)
        if owner_changed or traits_changed:
            acct.owner_email = None if owner_changed else acct.owner_email
            acct.traits, acct.updated_at = traits, now
    for outcome in contracts_repo.noted_outcomes(session, account_id) if needles else ():
        outcome.note, changed = scrub(outcome.note, needles)
        scrubbed += changed
    session.flush()
    return ErasedContact(account_id, user_id, tuple(sorted(emails)), tuple(sorted(names)), scrubbed)
