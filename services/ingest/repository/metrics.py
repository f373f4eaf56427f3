"""Series over ingest's daily rollups and last-seen markers. For one account: its
usage and active users by day, its users' activity, when it last did each event (the
accounts API). Over many accounts, one set-based statement per metric over the accounts
asked for (a list, or every account when ``accounts`` is None), never one query per
account: event counts, active users and days, the change metric's windows, last seen,
and the activity masks backtests count windows from."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Date, Integer, and_, case, cast, func, literal, select, true, tuple_
from sqlalchemy.orm import Session

from services.ingest.models import AccountEventSeen, UsageDaily, User, UserActivityDaily, UserEventSeen
from services.ingest.repository.chunks import CHUNK, chunks, grouped, ids_in, in_
from shared.db import is_in

# ---- one account (the accounts API and the console) --------------------------------


def usage_by_day(session: Session, account_id: str, start: date, end: date) -> list[tuple[date, str, int]]:
    q = (
        select(UsageDaily.day, UsageDaily.event_name, UsageDaily.count)
        .where(UsageDaily.account_id == account_id, UsageDaily.day >= start, UsageDaily.day <= end)
        .order_by(UsageDaily.day, UsageDaily.event_name)
    )
    return [(d, n, c) for d, n, c in session.execute(q)]


def active_users_by_day(session: Session, account_id: str, start: date, end: date) -> dict[date, int]:
    q = (
        select(UserActivityDaily.day, func.count())
        .where(UserActivityDaily.account_id == account_id, UserActivityDaily.day >= start, UserActivityDaily.day <= end)
        .group_by(UserActivityDaily.day)
    )
    return {d: n for d, n in session.execute(q)}


def distinct_active_users(session: Session, account_id: str, start: date, end: date) -> int:
    q = select(func.count(func.distinct(UserActivityDaily.user_id))).where(
        UserActivityDaily.account_id == account_id, UserActivityDaily.day >= start, UserActivityDaily.day <= end
    )
    return session.scalar(q) or 0


def user_activity_by_day(session: Session, account_id: str, user_id: str, start: date, end: date) -> dict[date, int]:
    q = select(UserActivityDaily.day, UserActivityDaily.count).where(
        UserActivityDaily.account_id == account_id,
        UserActivityDaily.user_id == user_id,
        UserActivityDaily.day >= start,
        UserActivityDaily.day <= end,
    )
    return {d: n for d, n in session.execute(q)}


def last_seen_by_event(session: Session, account_id: str) -> dict[str, datetime]:
    """When the account last did each event (event name -> time)."""
    q = select(AccountEventSeen.event_name, AccountEventSeen.last_seen_at).where(AccountEventSeen.account_id == account_id)
    return {n: t for n, t in session.execute(q)}


def user_last_seen_by_event(session: Session, account_id: str, user_id: str) -> dict[str, datetime]:
    """When the user last did each event (event name -> time)."""
    q = select(UserEventSeen.event_name, UserEventSeen.last_seen_at).where(
        UserEventSeen.account_id == account_id, UserEventSeen.user_id == user_id
    )
    return {n: t for n, t in session.execute(q)}


# ---- many accounts (the rules' metrics and backtests) ------------------------------


def window_days(now: datetime, days: int, offset_days: int = 0) -> tuple[date, date]:
    """The inclusive UTC-day range of a window of ``days`` ending ``offset_days`` before
    today (today counts, partially). See docs/rules.md."""
    end = now.date() - timedelta(days=offset_days)
    return end - timedelta(days=days - 1), end


def event_counts(session: Session, event: str, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return grouped(
        session,
        lambda part: (
            select(t.account_id, func.sum(t.count))
            .where(t.event_name == event, t.day >= start, t.day <= end, in_(t.account_id, part))
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
        for part in chunks(accounts):
            stmt = (
                select(t.event_name, t.account_id, func.sum(t.count))
                .where(is_in(session, t.event_name, some), t.day >= start, t.day <= end, ids_in(session, t.account_id, part))
                .group_by(t.event_name, t.account_id)
            )
            for name, a, v in session.execute(stmt):
                out[name][a] = v
    return out


def active_user_counts(session: Session, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    """Distinct active users per account over [start, end]."""
    t = UserActivityDaily
    return grouped(
        session,
        lambda part: (
            select(t.account_id, func.count(func.distinct(t.user_id)))
            .where(t.day >= start, t.day <= end, in_(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


def active_days(session: Session, event: str | None, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return grouped(
        session,
        lambda part: (
            select(t.account_id, func.count(func.distinct(t.day)))
            .where(t.day >= start, t.day <= end, (t.event_name == event) if event else true(), in_(t.account_id, part))
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
    for part in chunks(accounts):
        q = select(t.account_id, *cols).where(*where, in_(t.account_id, part)).group_by(t.account_id)
        for row in session.execute(q):
            out[row[0]] = [int(v or 0) for v in row[1:]]
    return out


def account_last_seen(session: Session, event: str, accounts: list[str] | None) -> dict[str, datetime]:
    t = AccountEventSeen
    return grouped(
        session, lambda part: select(t.account_id, t.last_seen_at).where(t.event_name == event, in_(t.account_id, part)), accounts
    )


def events_seen_of(session: Session, names: Iterable[str], accounts: list[str]) -> dict[str, set[str]]:
    """Which of ``names`` each account has ever sent (from the last-seen markers, so
    raw-event retention does not forget them): one statement per chunk of accounts."""
    wanted = sorted(set(names))
    out: dict[str, set[str]] = {}
    if not wanted or not accounts:
        return out
    t = AccountEventSeen
    for part in chunks(accounts):
        for account_id, name in session.execute(
            select(t.account_id, t.event_name).where(t.event_name.in_(wanted), in_(t.account_id, part))
        ):
            out.setdefault(account_id, set()).add(name)
    return out


def account_last_day(session: Session, event: str, end: date, lookback_days: int, accounts: list[str] | None) -> dict[str, date]:
    """As of ``end`` (backtests): the last UTC day the event was seen, from the rollups."""
    t = UsageDaily
    return grouped(
        session,
        lambda part: (
            select(t.account_id, func.max(t.day))
            .where(t.event_name == event, t.day <= end, t.day > end - timedelta(days=lookback_days), in_(t.account_id, part))
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


def daily_usage(session: Session, event: str | None, start: date, end: date, accounts: list[str] | None = None) -> Any:
    """(account, day, sum of counts, rows) per account and UTC day in [start, end], for
    ``event`` (or every event when None), of ``accounts`` (a backtest's chunk of them, an
    :class:`~services.ingest.repository.chunks.AccountRange`; None: every account)."""
    t = UsageDaily
    q = (
        select(t.account_id, t.day, func.sum(t.count), func.count())
        .where(t.day >= start, t.day <= end, (t.event_name == event) if event else true(), in_(t.account_id, accounts))
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


def user_activity_masks(
    session: Session, start: date, end: date, role: str | None = None, accounts: list[str] | None = None
) -> Iterator[tuple[str, int]]:
    """(account, mask) for every user of ``accounts`` (as :func:`daily_usage`) active in [start,
    end]: bit i of ``mask`` is set iff the user was active on day ``start`` + i (with ``role``,
    only users of that role).
    One row per user, aggregated by the
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
    q = select(t.account_id, *words).where(t.day >= start, t.day <= end, in_(t.account_id, accounts)).group_by(t.account_id, t.user_id)
    if role is not None:  # only the contacts of that (current) role
        q = q.join(User, and_(User.account_id == t.account_id, User.id == t.user_id)).where(User.role == role)
    return _masks(session.execute(q), len(words))


def event_day_masks(session: Session, event: str, start: date, end: date, accounts: list[str] | None = None) -> Iterator[tuple[str, int]]:
    """(account, mask) for every account of ``accounts`` (as :func:`daily_usage`) with ``event``
    in [start, end]: bit i of ``mask`` is set iff the account has a daily rollup of ``event``
    on day ``start`` + i."""
    t = UsageDaily  # one row per account, day and event: one bit per day
    words = _mask_words(session, t.day, start, end)
    where = (t.event_name == event, t.day >= start, t.day <= end, in_(t.account_id, accounts))
    q = select(t.account_id, *words).where(*where).group_by(t.account_id)
    return _masks(session.execute(q), len(words))


def user_last_seen(session: Session, event: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    t = UserEventSeen
    out: dict[tuple[str, str], datetime] = {}
    for i in range(0, len(pairs), CHUNK):
        part = pairs[i : i + CHUNK]
        q = select(t.account_id, t.user_id, t.last_seen_at).where(t.event_name == event, tuple_(t.account_id, t.user_id).in_(part))
        out.update({(a, u): ts for a, u, ts in session.execute(q)})
    return out
