"""Ingest's domain logic: turn a batch of validated events into state.

``apply_events`` is idempotent by ``event_id``: the raw-event insert tells which
events are new, and only those touch the rollups. It only flushes; the caller
(consumer batch or request) owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from services.ingest.models import Account, User
from services.ingest.repository import contracts as contracts_repo
from services.ingest.repository import store as repo
from shared.events import AccountTraits, ContractOutcomeIn, Event, UserTraits, ValidEvent

ACCOUNT_FIELDS = tuple(AccountTraits.model_fields)
USER_FIELDS = tuple(UserTraits.model_fields)

_K = TypeVar("_K")
ContractEvent = repo.EventRow  # a contract event, or the API's equivalent
_Span = list[datetime | None]  # [first seen, last seen]; None while only traits were seen


@dataclass
class IngestSummary:
    new: int = 0
    duplicates: int = 0
    accounts: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"new": self.new, "duplicates": self.duplicates, "accounts": self.accounts}


def apply_events(
    session: Session, events: Sequence[ValidEvent | Event], now: datetime, copy_rows: Sequence[str | None] | None = None
) -> IngestSummary:
    """Store a batch of valid events. ``copy_rows`` (PostgreSQL), when given, holds each
    event's ``repository.copy_row`` made ahead, or None, in the order of ``events``."""
    # First occurrence wins inside a batch, as it does across batches.
    first: dict[str, int] = {}
    for i, ev in enumerate(events):
        first.setdefault(ev.event_id, i)
    unique = {event_id: events[i] for event_id, i in first.items()}
    # make mutation runs on SQLite, where the branch below never runs: its mutants (and a
    # misspelt dialect name here) could only survive, each costing a full run of ingest's
    # tests. The same tests check it on PostgreSQL.
    if session.get_bind().dialect.name == "postgresql":  # pragma: no mutate
        rows = None if copy_rows is None else [copy_rows[i] for i in first.values()]  # pragma: no mutate
        stored = repo.store_events_pg(session, unique.values(), now, rows)  # pragma: no mutate
        summary = IngestSummary(new=stored.new, duplicates=len(events) - stored.new, accounts=stored.accounts)  # pragma: no mutate
        trait_events = [unique[i] for i in stored.new_trait_event_ids]  # pragma: no mutate
    else:
        summary, trait_events = _store_events(session, list(unique.values()), now)
        summary.duplicates = len(events) - summary.new
    contracts = [ev for ev in trait_events if ev.type == "contract"]
    if contracts:
        record_contract_outcomes(session, [(ev, "event", None) for ev in contracts], now)
    trait_events = [ev for ev in trait_events if ev.type != "contract"]
    if trait_events:
        _apply_trait_events(session, trait_events, now)
    return summary


def record_contract_outcomes(session: Session, outcomes: Sequence[tuple[ContractEvent, str, str | None]], now: datetime) -> set[str]:
    """Store contract outcomes, each (the ``contract`` event or the API's equivalent,
    its source ``event`` or ``api``, who recorded it), once per event id, and set the
    contract state of their accounts (which exist). Returns the event ids that were new."""
    rows = []
    for ev, source, recorded_by in outcomes:
        outcome = ContractOutcomeIn.model_validate(ev.properties)
        assert outcome.arr_after is not None  # the validator fills it in or refuses
        rows.append(
            {
                "event_id": ev.event_id,
                "account_id": ev.account_id,
                "kind": outcome.kind,
                "arr_before": outcome.arr_before,
                "arr_after": outcome.arr_after,
                "effective_date": outcome.effective_date,
                "note": outcome.note,
                "source": source,
                "recorded_by": recorded_by,
                "occurred_at": ev.timestamp,
                "received_at": now,
            }
        )
    new = contracts_repo.insert_contract_outcomes(session, rows)
    contracts_repo.refresh_contract_state(session, {r["account_id"] for r in rows if r["event_id"] in new}, now.date())
    return new


def bring_contract_outcomes_into_effect(session: Session, today: date) -> int:
    """Contract outcomes dated in the future when they arrived take effect on their date:
    set the contract state of the accounts whose outcome is now due. Returns how many."""
    due = contracts_repo.accounts_with_outcomes_due(session, today)
    contracts_repo.refresh_contract_state(session, due, today)
    return len(due)


def _store_events(session: Session, events: list[ValidEvent | Event], now: datetime) -> tuple[IngestSummary, list[ValidEvent | Event]]:
    """SQLite: what :func:`repository.store.store_events_pg` does in one statement, here
    aggregated in Python and written with one statement per table. Returns the summary
    and the new identify/group events."""
    rows = [
        {
            "event_id": ev.event_id,
            "account_id": ev.account_id,
            "user_id": ev.user_id,
            "type": ev.type,
            "name": ev.name,
            "timestamp": ev.timestamp,
            "properties": ev.traits if ev.type in repo.TRAIT_TYPES else ev.properties,
            "received_at": now,
        }
        for ev in events
    ]
    new_ids = repo.insert_new_events(session, rows)
    fresh = [ev for ev in events if ev.event_id in new_ids]
    summary = IngestSummary(new=len(fresh))
    if not fresh:
        return summary, []

    accounts: dict[str, _Span] = {}
    users: dict[tuple[str, str], _Span] = {}
    usage: dict[tuple[str, date, str], int] = defaultdict(int)
    activity: dict[tuple[str, date, str], int] = defaultdict(int)
    acc_seen: dict[tuple[str, str], _Span] = {}
    user_seen: dict[tuple[str, str, str], _Span] = {}

    def widen(store: dict[_K, _Span], key: _K, ts: datetime | None) -> None:
        span = store.get(key)
        if span is None:
            store[key] = [ts, ts]
        elif ts is not None:
            if span[0] is None or ts < span[0]:
                span[0] = ts
            if span[1] is None or ts > span[1]:
                span[1] = ts

    for ev in fresh:
        track = ev.type == "track"
        ts = ev.timestamp
        widen(accounts, ev.account_id, ts if track else None)
        if ev.user_id:
            widen(users, (ev.account_id, ev.user_id), ts if track else None)
        if not track:
            continue
        name = ev.name
        assert name is not None  # Event's validator requires a name on track events
        day = ts.astimezone(UTC).date()
        usage[(ev.account_id, day, name)] += 1
        widen(acc_seen, (ev.account_id, name), ts)
        if ev.user_id:
            activity[(ev.account_id, day, ev.user_id)] += 1
            widen(user_seen, (ev.account_id, ev.user_id, name), ts)

    summary.accounts = len(accounts)
    repo.touch_accounts(
        session,
        [
            {"id": a, "first_seen_at": s[0], "last_seen_at": s[1], "created_at": now, "updated_at": now, "traits": {}}
            for a, s in accounts.items()
        ],
    )
    repo.touch_users(
        session,
        [
            {"account_id": a, "id": u, "first_seen_at": s[0], "last_seen_at": s[1], "created_at": now, "updated_at": now, "traits": {}}
            for (a, u), s in users.items()
        ],
    )
    repo.add_usage(session, [{"account_id": a, "day": d, "event_name": n, "count": c} for (a, d, n), c in usage.items()])
    repo.add_user_activity(session, [{"account_id": a, "day": d, "user_id": u, "count": c} for (a, d, u), c in activity.items()])
    repo.mark_account_events_seen(
        session, [{"account_id": a, "event_name": n, "first_seen_at": s[0], "last_seen_at": s[1]} for (a, n), s in acc_seen.items()]
    )
    repo.mark_user_events_seen(
        session,
        [
            {"account_id": a, "user_id": u, "event_name": n, "first_seen_at": s[0], "last_seen_at": s[1]}
            for (a, u, n), s in user_seen.items()
        ],
    )
    return summary, [ev for ev in fresh if ev.type != "track"]


def _apply_trait_events(session: Session, events: list[ValidEvent | Event], now: datetime) -> None:
    """Apply the traits of new identify/group events in event-time order to the rows
    (which exist: storing the batch created them), then write each changed row once."""
    trait_events = sorted(events, key=lambda e: e.timestamp)
    accounts = repo.rows_for_traits(session, Account, {ev.account_id for ev in trait_events if ev.type == "group"})
    # An identify always names its user (the envelope's validation guarantees it).
    users = repo.rows_for_traits(session, User, {(ev.account_id, ev.user_id or "") for ev in trait_events if ev.type == "identify"})
    changed_accounts: dict[str, Any] = {}
    changed_users: dict[tuple[str, str], Any] = {}
    for ev in trait_events:
        if ev.type == "group":
            row = accounts[ev.account_id]
            if apply_account_traits(row, AccountTraits.model_validate(ev.traits), ev.timestamp, now):
                changed_accounts[ev.account_id] = row
        else:
            key = (ev.account_id, ev.user_id or "")
            if apply_user_traits(users[key], UserTraits.model_validate(ev.traits), ev.timestamp, now):
                changed_users[key] = users[key]
    repo.save_trait_rows(
        session,
        Account,
        list(changed_accounts.values()),
        ACCOUNT_FIELDS + ("traits", "traits_at", "updated_at", "lifecycle_stage_changed_at"),
    )
    repo.save_trait_rows(session, User, list(changed_users.values()), USER_FIELDS + ("traits", "traits_at", "updated_at"))


def _split(traits: AccountTraits | UserTraits, known: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    given = traits.model_dump(exclude_unset=True)
    known_part = {k: v for k, v in given.items() if k in known}
    extra = {k: v for k, v in given.items() if k not in known}
    return known_part, extra


def apply_account_traits(account: Account | Any, traits: AccountTraits, at: datetime, now: datetime) -> bool:
    """Apply traits observed at ``at``; observations older than the last applied are ignored.
    ``account`` is an :class:`Account` or a plain row with its attributes (batch ingest)."""
    stage = traits.lifecycle_stage if "lifecycle_stage" in traits.model_fields_set else None
    changed_stage = stage is not None and stage != account.lifecycle_stage
    applied = _apply_traits(account, traits, ACCOUNT_FIELDS, at, now)
    if applied and changed_stage:
        account.lifecycle_stage_changed_at = at
    return applied


def apply_user_traits(user: User | Any, traits: UserTraits, at: datetime, now: datetime) -> bool:
    return _apply_traits(user, traits, USER_FIELDS, at, now)


def _apply_traits(
    row: Account | User | Any, traits: AccountTraits | UserTraits, known_fields: tuple[str, ...], at: datetime, now: datetime
) -> bool:
    if row.traits_at is not None and at < row.traits_at:
        return False
    known, extra = _split(traits, known_fields)
    for k, v in known.items():
        setattr(row, k, v)
    if extra:
        row.traits = {**(row.traits or {}), **extra}
    row.traits_at = at
    row.updated_at = now
    return True


def new_account(account_id: str, now: datetime) -> Account:
    return Account(id=account_id, traits={}, created_at=now, updated_at=now)


def new_user(account_id: str, user_id: str, now: datetime) -> User:
    return User(account_id=account_id, id=user_id, traits={}, created_at=now, updated_at=now)
