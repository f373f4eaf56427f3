"""Every query evaluation runs. Each metric is one set-based statement over the
accounts asked for (a list, or every account): never one query per account per rule.

Windows: a window of N days evaluated at ``now`` is the N UTC days ending with
``now``'s UTC day, inclusive (today counts, partially). See docs/rules.md.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Integer, and_, case, cast, func, literal, or_, select, tuple_
from sqlalchemy.orm import Session

from services.ingest.models import Account, AccountEventSeen, RawEvent, UsageDaily, User, UserActivityDaily, UserEventSeen
from services.rules.language.ast import Audience

CHUNK = 900  # bound IN lists (SQLite's default variable limit is high, PostgreSQL's is 65535)


def window_days(now: datetime, days: int, offset_days: int = 0) -> tuple[date, date]:
    """The inclusive UTC-day range of a window of ``days`` ending ``offset_days`` before today."""
    end = now.date() - timedelta(days=offset_days)
    return end - timedelta(days=days - 1), end


def _in(col, accounts: list[str] | None):
    return True if accounts is None else col.in_(accounts)


def _chunks(items: list | None):
    if items is None:
        yield None
        return
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _grouped(session: Session, build, accounts: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in _chunks(accounts):
        out.update({a: v for a, v in session.execute(build(part))})
    return out


def event_counts(session: Session, event: str, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return _grouped(session, lambda part: select(t.account_id, func.sum(t.count)).where(
        t.event_name == event, t.day >= start, t.day <= end, _in(t.account_id, part)).group_by(t.account_id), accounts)


def active_users(session: Session, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UserActivityDaily
    return _grouped(session, lambda part: select(t.account_id, func.count(func.distinct(t.user_id))).where(
        t.day >= start, t.day <= end, _in(t.account_id, part)).group_by(t.account_id), accounts)


def active_days(session: Session, event: str | None, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    t = UsageDaily
    return _grouped(session, lambda part: select(t.account_id, func.count(func.distinct(t.day))).where(
        t.day >= start, t.day <= end, (t.event_name == event) if event else True, _in(t.account_id, part)
    ).group_by(t.account_id), accounts)


def chunked_metric(session: Session, of: str, event: str | None, ranges: list[tuple[date, date]],
                   accounts: list[str] | None) -> dict[str, list[int]]:
    """One row per account with the metric in each of ``ranges`` (the change metric)."""
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
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
    return _grouped(session, lambda part: select(t.account_id, t.last_seen_at).where(
        t.event_name == event, _in(t.account_id, part)), accounts)


def account_last_day(session: Session, event: str, end: date, lookback_days: int, accounts: list[str] | None) -> dict[str, date]:
    """As of ``end`` (backtests): the last UTC day the event was seen, from the rollups."""
    t = UsageDaily
    return _grouped(session, lambda part: select(t.account_id, func.max(t.day)).where(
        t.event_name == event, t.day <= end, t.day > end - timedelta(days=lookback_days), _in(t.account_id, part)
    ).group_by(t.account_id), accounts)


# ---- daily series (backtests: every day of a range in one query) -----------------
EPOCH = date(2000, 1, 1)


def day_number(session: Session, col):
    """Days since 2000-01-01 as an integer SQL expression (the one dialect-specific bit)."""
    if session.get_bind().dialect.name == "sqlite":
        return cast(func.julianday(col) - func.julianday(EPOCH.isoformat()), Integer)
    return col - literal(EPOCH, Date)  # PostgreSQL: date - date is an integer


def daily_usage(session: Session, event: str | None, start: date, end: date):
    """(account, day, sum of counts, rows) per account and UTC day in [start, end], for
    ``event`` (or every event when None)."""
    t = UsageDaily
    q = select(t.account_id, t.day, func.sum(t.count), func.count()).where(
        t.day >= start, t.day <= end, (t.event_name == event) if event else True).group_by(t.account_id, t.day)
    return session.execute(q)


def active_user_runs(session: Session, window: int, start: date, end: date):
    """Where each user's activity enters and leaves ``window``-day windows, for distinct
    active users over every window ending in [start, end] (windows starting on or after
    ``start``). A user active on day d (a day number) enters the window ending d unless
    they were active in the ``window`` - 1 days before, and leaves the window ending
    d + window unless active again before then. Rows: (account, d, enters, leaves), only
    where one of them holds; distinct users of the window ending D = enters on days <= D
    minus leaves at day numbers d + window <= D."""
    t = UserActivityDaily
    dn = day_number(session, t.day)
    ua = select(t.account_id, dn.label("d"),
                func.lag(dn).over(partition_by=(t.account_id, t.user_id), order_by=t.day).label("p"),
                func.lead(dn).over(partition_by=(t.account_id, t.user_id), order_by=t.day).label("n"),
                ).where(t.day >= start, t.day <= end).subquery("ua")
    enters = or_(ua.c.p.is_(None), ua.c.p <= ua.c.d - window)
    leaves = or_(ua.c.n.is_(None), ua.c.n >= ua.c.d + window)
    q = select(ua.c.account_id, ua.c.d, case((enters, 1), else_=0), case((leaves, 1), else_=0)).where(or_(enters, leaves))
    return session.execute(q)


def user_last_seen(session: Session, event: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
    t = UserEventSeen
    out: dict[tuple[str, str], datetime] = {}
    for i in range(0, len(pairs), CHUNK):
        part = pairs[i:i + CHUNK]
        q = select(t.account_id, t.user_id, t.last_seen_at).where(t.event_name == event, tuple_(t.account_id, t.user_id).in_(part))
        out.update({(a, u): ts for a, u, ts in session.execute(q)})
    return out


def users(session: Session, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], User]:
    out: dict[tuple[str, str], User] = {}
    for i in range(0, len(pairs), CHUNK):
        part = pairs[i:i + CHUNK]
        for u in session.scalars(select(User).where(tuple_(User.account_id, User.id).in_(part))):
            out[(u.account_id, u.id)] = u
    return out


ACCOUNT_COLUMNS = (Account.id, Account.name, Account.plan, Account.segment, Account.lifecycle_stage, Account.arr,
                   Account.seats, Account.signup_date, Account.first_seen_at, Account.lifecycle_stage_changed_at,
                   Account.renewal_date)


def account_rows(session: Session, accounts: list[str] | None, with_traits: bool) -> dict[str, Any]:
    """id -> row (the columns account predicates and audiences read), in one query per chunk."""
    cols = ACCOUNT_COLUMNS + ((Account.traits,) if with_traits else ())
    out: dict[str, Any] = {}
    for part in _chunks(accounts):
        out.update({row.id: row for row in session.execute(select(*cols).where(_in(Account.id, part)))})
    return out


def account_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Account.id)))


def audience_ids(session: Session, audience: Audience, now: datetime, accounts: list[str] | None) -> set[str]:
    """The accounts (of ``accounts``, or all) that the audience filters admit. A filter on
    a value an account lacks excludes it."""
    today = now.date()
    conds = []
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
            conds.append(or_(Account.signup_date <= day,
                             and_(Account.signup_date.is_(None), Account.first_seen_at <= now - timedelta(days=r.min))))
        if r.max is not None:
            day = today - timedelta(days=r.max)
            conds.append(or_(Account.signup_date >= day,
                             and_(Account.signup_date.is_(None), Account.first_seen_at >= now - timedelta(days=r.max))))
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


def ingested_event_ids(session: Session, event_ids: list[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(event_ids), CHUNK):
        out.update(session.scalars(select(RawEvent.event_id).where(RawEvent.event_id.in_(event_ids[i:i + CHUNK]))))
    return out


def latest_events(session: Session, account_id: str, names: list[str], limit: int = 1) -> list[RawEvent]:
    q = (select(RawEvent).where(RawEvent.account_id == account_id, RawEvent.name.in_(names), RawEvent.type == "track")
         .order_by(RawEvent.timestamp.desc()).limit(limit))
    return list(session.scalars(q))


def events_between(session: Session, names: list[str], start: datetime, end: datetime) -> list[RawEvent]:
    q = (select(RawEvent).where(RawEvent.name.in_(names), RawEvent.type == "track", RawEvent.timestamp >= start,
                                RawEvent.timestamp < end).order_by(RawEvent.timestamp))
    return list(session.scalars(q))


def accounts_with_events(session: Session, names: list[str], day: date) -> set[str]:
    t = UsageDaily
    return set(session.scalars(select(t.account_id).where(t.event_name.in_(names), t.day == day).distinct()))
