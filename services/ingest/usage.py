"""Ingest's published interface: the usage read model and the commands other services
may give ingest. Rules and outreach import this module and nothing else of ingest
(import-linter checks it); ingest's tables are its own.

Read model (reads only; the caller owns the session):

* accounts: :func:`account`, :func:`accounts`, :func:`account_ids`, :func:`account_rows`,
  :func:`accounts_where` (audience filters);
* contacts: :func:`contact`, :func:`contacts`, :func:`users_by_role`, :func:`active_users`, and
  the same two over many accounts in one statement per chunk (:func:`users_by_role_of`,
  :func:`active_users_of`: outreach's enrolment of a whole signal batch);
* one account's daily series for people to read: :func:`daily_series`; :func:`count_accounts`;
* metric series over the daily rollups, one set-based statement per metric over the
  accounts asked for (a list, or every account when ``accounts`` is None), never one
  query per account: :func:`event_counts` (several events at once:
  :func:`event_counts_by_name`), :func:`active_user_counts`,
  :func:`active_days`, :func:`chunked_metric`, :func:`account_last_seen`,
  :func:`account_last_day`, :func:`daily_usage`, :func:`user_activity_masks`, :func:`event_day_masks`,
  :func:`user_last_seen`;
* stored events: :func:`ingested_event_ids`, :func:`latest_events`,
  :func:`events_between`, :func:`accounts_with_events`.

Commands (they only flush; the caller owns the transaction):

* :func:`set_lifecycle_stage`: a rule's ``set_lifecycle_stage`` action;
* :func:`erase_contact`: scrub a contact's personal data from every ingest table.

Accounts and contacts are returned as frozen snapshots, so a caller cannot change
ingest's state by assigning to what it read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import BigInteger, Date, Integer, Row, and_, case, cast, func, literal, or_, select, true, tuple_
from sqlalchemy.orm import Session

from services.ingest import repository as _repo
from services.ingest.models import Account, AccountEventSeen, RawEvent, UsageDaily, User, UserActivityDaily, UserEventSeen
from services.ingest.service import apply_account_traits
from shared.db import is_in
from shared.events import AccountTraits
from shared.privacy import scrub

CHUNK = 900  # bound IN lists (SQLite's default variable limit is high, PostgreSQL's is 65535)


# ---- snapshots ------------------------------------------------------------------


@dataclass(frozen=True)
class AccountInfo:
    id: str
    name: str | None
    plan: str | None
    arr: float | None
    seats: int | None
    segment: str | None
    lifecycle_stage: str | None
    lifecycle_stage_changed_at: datetime | None
    renewal_date: date | None
    signup_date: date | None
    owner_email: str | None
    traits: dict[str, Any]
    first_seen_at: datetime | None
    last_seen_at: datetime | None


@dataclass(frozen=True)
class Contact:
    account_id: str
    id: str
    email: str | None
    name: str | None
    role: str | None
    timezone: str | None
    traits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    account_id: str
    user_id: str | None
    name: str
    timestamp: datetime
    properties: dict[str, Any]


_ACCOUNT_INFO = tuple(getattr(Account, f) for f in AccountInfo.__dataclass_fields__)
_CONTACT = tuple(getattr(User, f) for f in Contact.__dataclass_fields__)
_STORED_EVENT = tuple(getattr(RawEvent, f) for f in StoredEvent.__dataclass_fields__)


def _account(row: Row[Any]) -> AccountInfo:
    return AccountInfo(**{**row._asdict(), "traits": dict(row.traits or {})})


def _contact(row: Row[Any]) -> Contact:
    return Contact(**{**row._asdict(), "traits": dict(row.traits or {})})


def _event(row: Row[Any]) -> StoredEvent:
    return StoredEvent(**{**row._asdict(), "properties": dict(row.properties or {})})


# ---- helpers --------------------------------------------------------------------


def _in(col: Any, accounts: list[str] | None) -> Any:
    return True if accounts is None else col.in_(accounts)


def _ids_in(session: Session, col: Any, accounts: list[str] | None) -> Any:
    """:func:`_in` as one array parameter on PostgreSQL (:func:`shared.db.is_in`)."""
    return True if accounts is None else is_in(session, col, accounts)


def _chunks(items: list[Any] | None) -> Iterator[list[Any] | None]:
    if items is None:
        yield None
        return
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _grouped(session: Session, build: Callable[[list[str] | None], Any], accounts: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in _chunks(accounts):
        out.update({a: v for a, v in session.execute(build(part))})
    return out


# ---- accounts -------------------------------------------------------------------


def account(session: Session, account_id: str) -> AccountInfo | None:
    row = session.execute(select(*_ACCOUNT_INFO).where(Account.id == account_id)).first()
    return _account(row) if row is not None else None


def accounts(session: Session, ids: Iterable[str]) -> dict[str, AccountInfo]:
    ids = sorted(set(ids))
    out: dict[str, AccountInfo] = {}
    for part in _chunks(ids):
        out.update({r.id: _account(r) for r in session.execute(select(*_ACCOUNT_INFO).where(_in(Account.id, part)))})
    return out


def account_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Account.id)))


def count_accounts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Account)) or 0


ACCOUNT_COLUMNS = (
    Account.id,
    Account.name,
    Account.plan,
    Account.segment,
    Account.lifecycle_stage,
    Account.arr,
    Account.seats,
    Account.signup_date,
    Account.first_seen_at,
    Account.lifecycle_stage_changed_at,
    Account.renewal_date,
)


def account_rows(session: Session, accounts: list[str] | None, with_traits: bool) -> dict[str, Any]:
    """id -> row (the columns account predicates and audiences read), in one query per chunk."""
    cols = ACCOUNT_COLUMNS + ((Account.traits,) if with_traits else ())
    out: dict[str, Any] = {}
    for part in _chunks(accounts):
        out.update({row.id: row for row in session.execute(select(*cols).where(_in(Account.id, part)))})
    return out


class _Range(Protocol):
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...


class AccountFilter(Protocol):
    """What :func:`accounts_where` filters on (the rule language's ``Audience`` is one)."""

    @property
    def segment(self) -> tuple[str, ...] | None: ...
    @property
    def plan(self) -> tuple[str, ...] | None: ...
    @property
    def lifecycle_stage(self) -> tuple[str, ...] | None: ...
    @property
    def arr(self) -> _Range | None: ...
    @property
    def tenure_days(self) -> _Range | None: ...
    @property
    def days_in_stage(self) -> _Range | None: ...
    @property
    def renewal_within_days(self) -> int | None: ...


def accounts_where(session: Session, audience: AccountFilter, now: datetime, accounts: list[str] | None) -> set[str]:
    """The accounts (of ``accounts``, or all) that the filters admit. A filter on a value
    an account lacks excludes it."""
    today = now.date()
    conds: list[Any] = []
    for name in ("segment", "plan", "lifecycle_stage"):
        values = getattr(audience, name)
        if values is not None:
            conds.append(getattr(Account, name).in_(values))
    if audience.arr is not None:
        if audience.arr.min is not None:
            conds.append(Account.arr >= audience.arr.min)
        if audience.arr.max is not None:
            conds.append(Account.arr <= audience.arr.max)
    if audience.tenure_days is not None:
        r = audience.tenure_days
        if r.min is not None:
            day = today - timedelta(days=r.min)
            conds.append(
                or_(Account.signup_date <= day, and_(Account.signup_date.is_(None), Account.first_seen_at <= now - timedelta(days=r.min)))
            )
        if r.max is not None:
            day = today - timedelta(days=r.max)
            conds.append(
                or_(Account.signup_date >= day, and_(Account.signup_date.is_(None), Account.first_seen_at >= now - timedelta(days=r.max)))
            )
    if audience.days_in_stage is not None:
        r = audience.days_in_stage
        if r.min is not None:
            conds.append(Account.lifecycle_stage_changed_at <= now - timedelta(days=r.min))
        if r.max is not None:
            conds.append(Account.lifecycle_stage_changed_at >= now - timedelta(days=r.max))
    if audience.renewal_within_days is not None:
        conds.append(and_(Account.renewal_date >= today, Account.renewal_date <= today + timedelta(days=audience.renewal_within_days)))
    out: set[str] = set()
    for part in _chunks(accounts):
        out.update(session.scalars(select(Account.id).where(_in(Account.id, part), *conds)))
    return out


# ---- contacts -------------------------------------------------------------------


def contact(session: Session, account_id: str, user_id: str) -> Contact | None:
    row = session.execute(select(*_CONTACT).where(User.account_id == account_id, User.id == user_id)).first()
    return _contact(row) if row is not None else None


def contacts(session: Session, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Contact]:
    out: dict[tuple[str, str], Contact] = {}
    for i in range(0, len(pairs), CHUNK):
        part = pairs[i : i + CHUNK]
        for r in session.execute(select(*_CONTACT).where(tuple_(User.account_id, User.id).in_(part))):
            out[(r.account_id, r.id)] = _contact(r)
    return out


def users_by_role(session: Session, account_id: str, roles: Iterable[str] | None = None) -> list[Contact]:
    """The account's contacts with one of ``roles`` (every contact when None), by id."""
    q = select(*_CONTACT).where(User.account_id == account_id).order_by(User.id)
    if roles is not None:
        q = q.where(User.role.in_(list(roles)))
    return [_contact(r) for r in session.execute(q)]


def active_users(session: Session, account_id: str, since: date, until: date) -> list[Contact]:
    """The account's contacts active on any UTC day in [since, until], by id."""
    active = (
        select(UserActivityDaily.user_id)
        .where(UserActivityDaily.account_id == account_id, UserActivityDaily.day >= since, UserActivityDaily.day <= until)
        .distinct()
    )
    q = select(*_CONTACT).where(User.account_id == account_id, User.id.in_(active)).order_by(User.id)
    return [_contact(r) for r in session.execute(q)]


def users_by_role_of(session: Session, account_ids: Iterable[str], roles: Iterable[str] | None = None) -> dict[str, list[Contact]]:
    """:func:`users_by_role` for many accounts: account -> its contacts by id (accounts
    without one are absent)."""
    out: dict[str, list[Contact]] = {}
    wanted = None if roles is None else list(roles)
    for part in _chunks(sorted(set(account_ids))):
        q = select(*_CONTACT).where(_in(User.account_id, part)).order_by(User.account_id, User.id)
        if wanted is not None:
            q = q.where(User.role.in_(wanted))
        for r in session.execute(q):
            out.setdefault(r.account_id, []).append(_contact(r))
    return out


def active_users_of(session: Session, account_ids: Iterable[str], since: date, until: date) -> dict[str, list[Contact]]:
    """:func:`active_users` for many accounts: account -> its contacts active on any UTC
    day in [since, until], by id."""
    out: dict[str, list[Contact]] = {}
    for part in _chunks(sorted(set(account_ids))):
        active = (
            select(UserActivityDaily.account_id, UserActivityDaily.user_id)
            .where(_in(UserActivityDaily.account_id, part), UserActivityDaily.day >= since, UserActivityDaily.day <= until)
            .distinct()
        )
        q = select(*_CONTACT).where(tuple_(User.account_id, User.id).in_(active)).order_by(User.account_id, User.id)
        for r in session.execute(q):
            out.setdefault(r.account_id, []).append(_contact(r))
    return out


# ---- metric series ----------------------------------------------------------------


def daily_series(session: Session, account_id: str, until: date, days: int) -> list[dict[str, Any]]:
    """One entry per UTC day of the ``days`` ending at ``until`` (gaps filled with 0):
    distinct active users and the count of each event (an engagement's context)."""
    start = until - timedelta(days=days - 1)
    active = _repo.active_users_by_day(session, account_id, start, until)
    events: dict[date, dict[str, int]] = {}
    for day, name, count in _repo.usage_by_day(session, account_id, start, until):
        events.setdefault(day, {})[name] = count
    return [
        {
            "day": (start + timedelta(days=i)).isoformat(),
            "active_users": active.get(start + timedelta(days=i), 0),
            "events": events.get(start + timedelta(days=i), {}),
        }
        for i in range(days)
    ]


def window_days(now: datetime, days: int, offset_days: int = 0) -> tuple[date, date]:
    """The inclusive UTC-day range of a window of ``days`` ending ``offset_days`` before
    today (today counts, partially). See docs/rules.md."""
    end = now.date() - timedelta(days=offset_days)
    return end - timedelta(days=days - 1), end


def event_counts(session: Session, event: str, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return _grouped(
        session,
        lambda part: (
            select(t.account_id, func.sum(t.count))
            .where(t.event_name == event, t.day >= start, t.day <= end, _in(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


def event_counts_by_name(
    session: Session, events: Iterable[str], start: date, end: date, accounts: list[str] | None
) -> dict[str, dict[str, int]]:
    """:func:`event_counts` of several events over one window, in one statement per chunk
    of accounts (grouped by event name) instead of one per event: event name -> account ->
    count, ``{}`` for an event no account did. An event batch at 1,000 rules asks 50."""
    t = UsageDaily
    names = sorted(set(events))
    out: dict[str, dict[str, int]] = {n: {} for n in names}
    for i in range(0, len(names), CHUNK):
        some = names[i : i + CHUNK]
        for part in _chunks(accounts):
            stmt = (
                select(t.event_name, t.account_id, func.sum(t.count))
                .where(is_in(session, t.event_name, some), t.day >= start, t.day <= end, _ids_in(session, t.account_id, part))
                .group_by(t.event_name, t.account_id)
            )
            for name, a, v in session.execute(stmt):
                out[name][a] = v
    return out


def active_user_counts(session: Session, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    """Distinct active users per account over [start, end]."""
    t = UserActivityDaily
    return _grouped(
        session,
        lambda part: (
            select(t.account_id, func.count(func.distinct(t.user_id)))
            .where(t.day >= start, t.day <= end, _in(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


def active_days(session: Session, event: str | None, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return _grouped(
        session,
        lambda part: (
            select(t.account_id, func.count(func.distinct(t.day)))
            .where(t.day >= start, t.day <= end, (t.event_name == event) if event else true(), _in(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


def chunked_metric(
    session: Session, of: str, event: str | None, ranges: list[tuple[date, date]], accounts: list[str] | None
) -> dict[str, list[int]]:
    """One row per account with the metric in each of ``ranges`` (the change metric)."""
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    t: Any
    cols: list[Any]
    if of == "active_users":
        t = UserActivityDaily
        cols = [func.count(func.distinct(case((and_(t.day >= a, t.day <= b), t.user_id)))) for a, b in ranges]
        where = [t.day >= lo, t.day <= hi]
    else:
        t = UsageDaily
        if of == "count":
            cols = [func.coalesce(func.sum(case((and_(t.day >= a, t.day <= b), t.count), else_=0)), 0) for a, b in ranges]
        else:
            cols = [func.count(func.distinct(case((and_(t.day >= a, t.day <= b), t.day)))) for a, b in ranges]
        where = [t.day >= lo, t.day <= hi] + ([t.event_name == event] if event else [])
    out: dict[str, list[int]] = {}
    for part in _chunks(accounts):
        q = select(t.account_id, *cols).where(*where, _in(t.account_id, part)).group_by(t.account_id)
        for row in session.execute(q):
            out[row[0]] = [int(v or 0) for v in row[1:]]
    return out


def account_last_seen(session: Session, event: str, accounts: list[str] | None) -> dict[str, datetime]:
    t = AccountEventSeen
    return _grouped(
        session, lambda part: select(t.account_id, t.last_seen_at).where(t.event_name == event, _in(t.account_id, part)), accounts
    )


def account_last_day(session: Session, event: str, end: date, lookback_days: int, accounts: list[str] | None) -> dict[str, date]:
    """As of ``end`` (backtests): the last UTC day the event was seen, from the rollups."""
    t = UsageDaily
    return _grouped(
        session,
        lambda part: (
            select(t.account_id, func.max(t.day))
            .where(t.event_name == event, t.day <= end, t.day > end - timedelta(days=lookback_days), _in(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


EPOCH = date(2000, 1, 1)


def _day_number(session: Session, col: Any) -> Any:
    """Days since 2000-01-01 as an integer SQL expression (the one dialect-specific bit)."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.julianday(col) - func.julianday(EPOCH.isoformat()), Integer)
    return col - literal(EPOCH, Date)  # PostgreSQL: date - date is an integer


def daily_usage(session: Session, event: str | None, start: date, end: date) -> Any:
    """(account, day, sum of counts, rows) per account and UTC day in [start, end], for
    ``event`` (or every event when None)."""
    t = UsageDaily
    q = (
        select(t.account_id, t.day, func.sum(t.count), func.count())
        .where(t.day >= start, t.day <= end, (t.event_name == event) if event else true())
        .group_by(t.account_id, t.day)
    )
    return session.execute(q)


MASK_WORD = 64  # days per integer word of an activity mask (SQL integers are 64-bit, two's complement)


def _mask_words(session: Session, day: Any, start: date, end: date) -> list[Any]:
    """Aggregates that OR into 64-bit words the days of [start, end] that have a row:
    bit i of word k is day start + 64k + i (bit 63 is the sign bit: a word is the bit
    pattern read as a signed integer). The rows' days must lie in [start, end].

    Each row adds one bit; the rows summed or OR-ed per group are at most one per day
    (the caller's group and key say so), so a sum is an OR too (and never overflows: the
    sum of distinct powers of two below 2**63, and of -2**63, stays a signed 64-bit
    integer). PostgreSQL ORs (``bit_or`` of bigint is a bigint; ``sum`` of bigint is a
    numeric, measured 25–30% slower over the 7.7M user-days of the backtest bench),
    SQLite sums. Which word a row goes to is a comparison of dates, not of day numbers
    computed per row and word."""
    pg = session.get_bind().dialect.name == "postgresql"
    n = (end - start).days + 1
    words = []
    for k in range(0, n, MASK_WORD):
        first = start + timedelta(days=k)
        bounds = ([day >= first] if k else []) + ([day < first + timedelta(days=MASK_WORD)] if k + MASK_WORD < n else [])
        shift = day - literal(first, Date) if pg else _day_number(session, day) - (first - EPOCH).days
        bit = literal(1, BigInteger).op("<<")(shift)
        value = case((and_(*bounds), bit)) if bounds else bit
        words.append(func.coalesce(func.bit_or(value) if pg else func.sum(value), 0))
    return words


def _masks(rows: Any, words: int) -> Iterator[tuple[str, int]]:
    """(key, word, ...) rows -> (key, the words as one non-negative integer): the words'
    two's-complement bytes, least significant word first."""
    pack, from_bytes = struct.Struct(f"<{words}q").pack, int.from_bytes
    for row in rows:
        yield row[0], from_bytes(pack(*row[1:]), "little")


def user_activity_masks(session: Session, start: date, end: date) -> Iterator[tuple[str, int]]:
    """(account, mask) for every user active in [start, end]: bit i of ``mask`` is set
    iff the user was active on day ``start`` + i. One row per user, aggregated by the
    database (no sort): how many distinct users were active in any set of days follows
    from the masks alone (backtests count them for every window ending in the range).

    On PostgreSQL this sets, for the rest of the caller's (read) transaction, a
    ``work_mem`` that holds the aggregate of a 10,000-account backtest in memory and
    no JIT: measured here, compiling the query cost 1.6 to 6.6 s, more than it saved,
    and the default 4 MB spilled the aggregate to disk (docs/performance.md, Backtest)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.set_config("work_mem", "64MB", True), func.set_config("jit", "off", True)))
    t = UserActivityDaily  # one row per account, day and user: one bit per day
    words = _mask_words(session, t.day, start, end)
    q = select(t.account_id, *words).where(t.day >= start, t.day <= end).group_by(t.account_id, t.user_id)
    return _masks(session.execute(q), len(words))


def event_day_masks(session: Session, event: str, start: date, end: date) -> Iterator[tuple[str, int]]:
    """(account, mask) for every account with ``event`` in [start, end]: bit i of ``mask``
    is set iff the account has a daily rollup of ``event`` on day ``start`` + i."""
    t = UsageDaily  # one row per account, day and event: one bit per day
    words = _mask_words(session, t.day, start, end)
    q = select(t.account_id, *words).where(t.event_name == event, t.day >= start, t.day <= end).group_by(t.account_id)
    return _masks(session.execute(q), len(words))


def user_last_seen(session: Session, event: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    t = UserEventSeen
    out: dict[tuple[str, str], datetime] = {}
    for i in range(0, len(pairs), CHUNK):
        part = pairs[i : i + CHUNK]
        q = select(t.account_id, t.user_id, t.last_seen_at).where(t.event_name == event, tuple_(t.account_id, t.user_id).in_(part))
        out.update({(a, u): ts for a, u, ts in session.execute(q)})
    return out


# ---- stored events --------------------------------------------------------------


def ingested_event_ids(session: Session, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` ingest has committed (the rules worker waits for them)."""
    out: set[str] = set()
    for i in range(0, len(event_ids), CHUNK):
        out.update(session.scalars(select(RawEvent.event_id).where(is_in(session, RawEvent.event_id, event_ids[i : i + CHUNK]))))
    return out


def latest_events(session: Session, account_id: str, names: list[str], limit: int = 1) -> list[StoredEvent]:
    q = (
        select(*_STORED_EVENT)
        .where(RawEvent.account_id == account_id, RawEvent.name.in_(names), RawEvent.type == "track")
        .order_by(RawEvent.timestamp.desc())
        .limit(limit)
    )
    return [_event(r) for r in session.execute(q)]


def events_between(session: Session, names: list[str], start: datetime, end: datetime) -> list[StoredEvent]:
    q = (
        select(*_STORED_EVENT)
        .where(RawEvent.name.in_(names), RawEvent.type == "track", RawEvent.timestamp >= start, RawEvent.timestamp < end)
        .order_by(RawEvent.timestamp)
    )
    return [_event(r) for r in session.execute(q)]


def accounts_with_events(session: Session, names: list[str], day: date) -> set[str]:
    t = UsageDaily
    return set(session.scalars(select(t.account_id).where(t.event_name.in_(names), t.day == day).distinct()))


# ---- commands -------------------------------------------------------------------


def set_lifecycle_stage(session: Session, account_ids: Iterable[str], stage: str, now: datetime) -> int:
    """Move accounts to ``stage`` (a rule action), as an observation at ``now``: the stage's
    change time is recorded, and a later identify/group still wins. Returns how many changed."""
    changed = 0
    ids = sorted(set(account_ids))
    for part in _chunks(ids):
        for row in session.scalars(select(Account).where(_in(Account.id, part))):
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
    ever sent) and any other copy in the account's stored events or the account row (a
    track property, a group's ``owner_email``). Ids stay: rollups count activity, not
    people. Returns the addresses and names that were scrubbed."""
    user = session.get(User, (account_id, user_id))
    emails: set[str] = set()
    names: set[str] = set()
    if user is not None:
        emails |= {user.email} if user.email else set()
        names |= {user.name} if user.name else set()
    own = select(RawEvent).where(RawEvent.account_id == account_id, or_(RawEvent.user_id == user_id, RawEvent.type != "track"))
    events = list(session.scalars(own))
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
    acct = session.get(Account, account_id)
    if acct is not None and needles:
        owner, owner_changed = scrub(acct.owner_email, needles)
        traits, traits_changed = scrub(acct.traits or {}, needles)
        if owner_changed or traits_changed:
            acct.owner_email = None if owner_changed else acct.owner_email
            acct.traits, acct.updated_at = traits, now
    session.flush()
    return ErasedContact(account_id, user_id, tuple(sorted(emails)), tuple(sorted(names)), scrubbed)
