"""Accounts and contacts: one account or many as frozen snapshots, the columns audiences
read, audience filters, contacts by role or activity, the API's pages and the console's
search. The ORM rows themselves (:func:`get_account`, :func:`get_user`,
:func:`accounts_to_change`) are for ingest's own writes."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Row, Select, and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from services.ingest.models import Account, User, UserActivityDaily
from services.ingest.repository.chunks import CHUNK, AccountRange, chunks, ids_in, in_
from services.ingest.repository.properties import JsonPath
from services.ingest.snapshots import AccountInfo, Contact

_ACCOUNT_INFO = tuple(getattr(Account, f) for f in AccountInfo.__dataclass_fields__)
_CONTACT = tuple(getattr(User, f) for f in Contact.__dataclass_fields__)


def _account(row: Row[Any]) -> AccountInfo:
    return AccountInfo(**{**row._asdict(), "traits": dict(row.traits or {})})


def _contact(row: Row[Any]) -> Contact:
    return Contact(**{**row._asdict(), "traits": dict(row.traits or {})})


def snapshot(account: Account) -> AccountInfo:
    """The snapshot of an account row ingest has just written (the API's answer to a PUT)."""
    return AccountInfo(**{f: getattr(account, f) for f in AccountInfo.__dataclass_fields__} | {"traits": dict(account.traits or {})})


# ---- rows ingest writes ---------------------------------------------------------


def get_account(session: Session, account_id: str) -> Account | None:
    return session.get(Account, account_id)


def get_user(session: Session, account_id: str, user_id: str) -> User | None:
    return session.get(User, (account_id, user_id))


def accounts_to_change(session: Session, ids: list[str]) -> Iterator[Account]:
    """The account rows of ``ids`` (sorted, distinct), loaded one chunk at a time."""
    for part in chunks(ids):
        yield from session.scalars(select(Account).where(in_(Account.id, part)))


# ---- accounts -------------------------------------------------------------------


def account(session: Session, account_id: str) -> AccountInfo | None:
    row = session.execute(select(*_ACCOUNT_INFO).where(Account.id == account_id)).first()
    return _account(row) if row is not None else None


def accounts(session: Session, ids: Iterable[str]) -> dict[str, AccountInfo]:
    ids = sorted(set(ids))
    out: dict[str, AccountInfo] = {}
    for part in chunks(ids):
        out.update({r.id: _account(r) for r in session.execute(select(*_ACCOUNT_INFO).where(ids_in(session, Account.id, part)))})
    return out


def account_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Account.id)))


def account_ids_after(session: Session, after: str | None, limit: int) -> AccountRange:
    """Up to ``limit`` account ids after ``after`` (None: from the first), in id order: a
    keyset cursor over the accounts (the daily health scoring goes through them in chunks).
    The ids are every account from the first to the last, so the metrics over them filter
    by that range (:class:`~services.ingest.repository.chunks.AccountRange`)."""
    q = select(Account.id).order_by(Account.id).limit(limit)
    if after is not None:
        q = q.where(Account.id > after)
    return AccountRange(session.scalars(q))


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
    for part in chunks(accounts):
        out.update({row.id: row for row in session.execute(select(*cols).where(in_(Account.id, part)))})
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
    for part in chunks(accounts):
        out.update(session.scalars(select(Account.id).where(in_(Account.id, part), *conds)))
    return out


def admitted_spans(rows: Mapping[str, Any], audience: AccountFilter, nows: Sequence[datetime]) -> dict[str, tuple[int, int]]:
    """:func:`accounts_where` at each of the ascending instants ``nows``, answered from the
    accounts' rows already read (:func:`account_rows`) instead of a query per instant (a
    backtest asks it once per simulated day): account -> (first, last), the positions in
    ``nows`` at which the filters admit it (it is admitted at every position between; an
    account admitted at none is left out).

    The tests are :func:`accounts_where`'s, on the same values with the same bounds
    computed the same way: a missing value excludes, a list is a membership test and a
    range compares the number. A bound that moves with the instant (tenure, days in the
    stage, the renewal) is one comparison with a value that grows with it, so the
    positions where it holds are a prefix or a suffix of ``nows``: a search over the bounds
    finds where it starts or stops, and the filters together hold on an interval.
    tests/integration/services/rules/test_backtest_series.py compares the two every day."""
    n = len(nows)
    todays = [now.date() for now in nows]
    fixed: list[Callable[[Any], bool]] = []

    def member(name: str, allowed: frozenset[str]) -> Callable[[Any], bool]:
        return lambda row: getattr(row, name) in allowed

    for name in ("segment", "plan", "lifecycle_stage"):
        values = getattr(audience, name)
        if values is not None:
            fixed.append(member(name, frozenset(values)))
    if audience.arr is not None:
        lo, hi = audience.arr.min, audience.arr.max
        fixed.append(lambda row: row.arr is not None and (lo is None or row.arr >= lo) and (hi is None or row.arr <= hi))
    # The moving tests: row -> (its value, the bounds at each instant), and whether the value
    # must be at most the bound (from the first instant it holds on) or at least it (until the last).
    moving: list[tuple[Callable[[Any], tuple[Any, list[Any]]], bool]] = []

    def tenure(by_date: list[date], by_time: list[datetime]) -> Callable[[Any], tuple[Any, list[Any]]]:
        # The signup date, or for an account without one the first time it was seen.
        return lambda row: (row.signup_date, by_date) if row.signup_date is not None else (row.first_seen_at, by_time)

    def column(name: str, bounds: list[Any]) -> Callable[[Any], tuple[Any, list[Any]]]:
        return lambda row: (getattr(row, name), bounds)

    if audience.tenure_days is not None:
        r = audience.tenure_days
        for days, up_to in ((r.min, True), (r.max, False)):
            if days is not None:
                moving.append((tenure([t - timedelta(days=days) for t in todays], [t - timedelta(days=days) for t in nows]), up_to))
    if audience.days_in_stage is not None:
        r = audience.days_in_stage
        for days, up_to in ((r.min, True), (r.max, False)):
            if days is not None:
                moving.append((column("lifecycle_stage_changed_at", [t - timedelta(days=days) for t in nows]), up_to))
    if audience.renewal_within_days is not None:
        ahead = timedelta(days=audience.renewal_within_days)
        moving.append((column("renewal_date", todays), False))
        moving.append((column("renewal_date", [t + ahead for t in todays]), True))
    out: dict[str, tuple[int, int]] = {}
    for a, row in rows.items():
        if not all(test(row) for test in fixed):
            continue
        first, last = 0, n - 1
        for value_of, up_to in moving:
            v, bounds = value_of(row)
            if v is None:
                first = n
                break
            if up_to:  # value <= bound, the bounds ascending: from the first bound that reaches it
                first = max(first, bisect_left(bounds, v))
            else:  # value >= bound: until the last bound still at most it
                last = min(last, bisect_right(bounds, v) - 1)
        if first <= last:
            out[a] = (first, last)
    return out


def account_values(session: Session, accounts: list[str] | None, columns: Sequence[str]) -> dict[str, Row[Any]]:
    """id -> a row of the accounts' ``columns`` only (names of the accounts table's columns;
    the row has ``id`` too), one query per chunk. For callers that read a column or two
    of every account: a timestamp costs a conversion per row, traits a JSON parse."""
    cols = tuple(getattr(Account, c) for c in dict.fromkeys(columns) if c != "id")
    out: dict[str, Row[Any]] = {}
    for part in chunks(accounts):
        out.update({row.id: row for row in session.execute(select(Account.id, *cols).where(in_(Account.id, part)))})
    return out


# The account columns that hold text: a test of one is a plain comparison.
_TEXT_COLUMNS = ("id", "name", "plan", "segment", "lifecycle_stage")


def _sql_key(key: str) -> bool:
    """A traits key both databases read as the same object key: no quote or backslash
    (SQLite's quoted path label). A key of digits is an object's key on both (JsonPath
    steps with ``->``, never ``#>``), as in the rule language."""
    return bool(key) and key.isprintable() and '"' not in key and "\\" not in key


def value_test(session: Session, path: Sequence[str], op: str, value: Any) -> Any:
    """The SQL condition "the account's value at ``path`` passes ``op value``", or None when
    SQL cannot answer it exactly as the rule language does (the caller then tests the
    values itself). ``path`` is a text column (``("plan",)``) or a key path into the
    traits (``("traits", "industry")``). The meaning is the rule language's
    (services/rules/language/evaluate.py, ``predicate``), type included: a missing key and
    JSON null are missing, "1" is not 1, true is not 1, and case counts:

    * ``==`` / ``!=`` a string or a boolean: the value is of that type and (not) equal;
    * ``in`` / ``not_in`` a list of strings: the value is a string (not) among them; ``not_in``
      also holds for a number or a boolean, never for a missing value, an object or an array;
    * ``exists`` true / false: the value is present and not null / missing or null.

    Numbers are left to the caller: SQL compares a JSON number as a decimal or an integer
    where the rule language compares a float (big integers, long decimals), and a mixed
    list's ``in`` follows Python's ``True == 1``."""
    strings = isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) for v in value)
    if len(path) == 1 and path[0] in _TEXT_COLUMNS:
        col = getattr(Account, path[0])
        if op == "exists" and isinstance(value, bool):
            return col.is_not(None) if value else col.is_(None)
        if op in ("==", "!=") and isinstance(value, str):
            return col == value if op == "==" else col != value  # NULL passes neither, as a missing value passes neither
        if op in ("in", "not_in") and strings:
            return col.in_(value) if op == "in" else col.not_in(value)
        return None
    if len(path) < 2 or path[0] != "traits" or not all(_sql_key(k) for k in path[1:]):
        return None
    v = JsonPath(session, path[1:], Account.traits)
    if op == "exists" and isinstance(value, bool):
        return ~v.missing() if value else v.missing()
    if op in ("==", "!=") and isinstance(value, str):
        return v.string() == value if op == "==" else v.string() != value  # string(): NULL unless a string
    if op in ("==", "!=") and isinstance(value, bool):
        return v.is_bool(value if op == "==" else not value)
    if op == "in" and strings:
        return v.string().in_(value)
    if op == "not_in" and strings:
        return or_(v.string().not_in(value), v.of_kind("number", "boolean"))
    return None


def accounts_with_value(session: Session, path: Sequence[str], op: str, value: Any, accounts: list[str] | None) -> set[str] | None:
    """The accounts (of ``accounts``, or all) that :func:`value_test` admits, one query per
    chunk; None when it cannot answer (the caller tests the values itself)."""
    test = value_test(session, path, op, value)
    if test is None:
        return None
    out: set[str] = set()
    for part in chunks(accounts):
        out.update(session.scalars(select(Account.id).where(in_(Account.id, part), test)))
    return out


def list_accounts(
    session: Session, *, segment: str | None, lifecycle_stage: str | None, plan: str | None, after: str | None, limit: int
) -> list[AccountInfo]:
    q = select(*_ACCOUNT_INFO).order_by(Account.id).limit(limit)
    if segment:
        q = q.where(Account.segment == segment)
    if lifecycle_stage:
        q = q.where(Account.lifecycle_stage == lifecycle_stage)
    if plan:
        q = q.where(Account.plan == plan)
    if after:
        q = q.where(Account.id > after)
    return [_account(r) for r in session.execute(q)]


# The accounts list's sortable columns besides the id (the console's table headings).
ACCOUNT_SORTS: dict[str, Any] = {
    "name": Account.name,
    "segment": Account.segment,
    "plan": Account.plan,
    "lifecycle": Account.lifecycle_stage,
    "arr": Account.arr,
    "seats": Account.seats,
    "renewal": Account.renewal_date,
    "last_seen": Account.last_seen_at,
}


def search_accounts(
    session: Session,
    *,
    text: str | None,
    segment: str | None,
    lifecycle_stage: str | None,
    plan: str | None,
    only_ids: Select[Any] | None,
    offset: int,
    limit: int,
    order: str | Select[str, Any] = "id",
    descending: bool = False,
) -> tuple[list[AccountInfo], int]:
    """A page of accounts matching every filter given, and the total count.
    ``text`` matches id or name (case-insensitive substring); ``only_ids`` is a subquery
    of account ids to keep (e.g. the accounts with a recent signal). ``order`` is
    ``"id"``, a key of :data:`ACCOUNT_SORTS` (``"arr"``, ``"name"`` ...) or a select of
    ``(account_id, value)`` from another service (the current health scores); accounts
    without a value come last either way, ties by id."""
    conditions: list[ColumnElement[bool]] = []
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(Account.id.ilike(pattern, escape="\\") | Account.name.ilike(pattern, escape="\\"))
    for col, value in ((Account.segment, segment), (Account.lifecycle_stage, lifecycle_stage), (Account.plan, plan)):
        if value:
            conditions.append(col == value)
    if only_ids is not None:
        conditions.append(Account.id.in_(only_ids))
    total = session.scalar(select(func.count()).select_from(Account).where(*conditions)) or 0
    q = select(*_ACCOUNT_INFO).where(*conditions)
    key: Any = None
    if isinstance(order, Select):
        account_id, key = list(order.subquery().c)[:2]
        q = q.outerjoin(account_id.table, account_id == Account.id)
    elif order in ACCOUNT_SORTS:
        key = ACCOUNT_SORTS[order]
    if key is not None:
        q = q.order_by(key.is_(None), key.desc() if descending else key)
    q = q.order_by(Account.id.desc() if descending and key is None else Account.id).offset(offset).limit(limit)
    return [_account(r) for r in session.execute(q)], total


def total_arr(session: Session, only_ids: Select[Any]) -> float:
    """The sum of ARR over the accounts of ``only_ids`` (those without ARR add nothing):
    the figure the console's accounts list, filtered the same way, adds up to."""
    return float(session.scalar(select(func.coalesce(func.sum(Account.arr), 0)).where(Account.id.in_(only_ids))) or 0)


def distinct_traits(session: Session) -> dict[str, list[str]]:
    """The segments, plans and lifecycle stages in use (each on an indexed column)."""
    out: dict[str, list[str]] = {}
    for name, col in (("segment", Account.segment), ("plan", Account.plan), ("lifecycle_stage", Account.lifecycle_stage)):
        out[name] = [v for v in session.scalars(select(col).where(col.is_not(None)).distinct().order_by(col)) if v is not None]
    return out


# ---- contacts -------------------------------------------------------------------


def list_users(session: Session, account_id: str, *, role: str | None, after: str | None, limit: int) -> list[User]:
    q = select(User).where(User.account_id == account_id).order_by(User.id).limit(limit)
    if role:
        q = q.where(User.role == role)
    if after:
        q = q.where(User.id > after)
    return list(session.scalars(q))


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
    for part in chunks(sorted(set(account_ids))):
        q = select(*_CONTACT).where(ids_in(session, User.account_id, part)).order_by(User.account_id, User.id)
        if wanted is not None:
            q = q.where(User.role.in_(wanted))
        for r in session.execute(q):
            out.setdefault(r.account_id, []).append(_contact(r))
    return out


def active_users_of(session: Session, account_ids: Iterable[str], since: date, until: date) -> dict[str, list[Contact]]:
    """:func:`active_users` for many accounts: account -> its contacts active on any UTC
    day in [since, until], by id."""
    out: dict[str, list[Contact]] = {}
    for part in chunks(sorted(set(account_ids))):
        active = (
            select(UserActivityDaily.account_id, UserActivityDaily.user_id)
            .where(in_(UserActivityDaily.account_id, part), UserActivityDaily.day >= since, UserActivityDaily.day <= until)
            .distinct()
        )
        q = select(*_CONTACT).where(tuple_(User.account_id, User.id).in_(active)).order_by(User.account_id, User.id)
        for r in session.execute(q):
            out.setdefault(r.account_id, []).append(_contact(r))
    return out
