"""Metrics over the raw events' properties and over contacts by role, for many accounts
at once (one statement per chunk of accounts, or one over every account when
``accounts`` is None), never one query per account:

- :func:`event_counts_where`: how many track events of a name whose properties match
  equality / membership filters, per account, over a range of UTC days;
- :func:`property_aggregates`: ``sum``, ``avg``, ``min``, ``max`` or ``latest`` of a
  numeric property of an event over a range of UTC days, with the number of numeric
  values it saw;
- :func:`role_last_seen`: when users of a role last did an event (the live last-seen
  markers, or as of an instant from the raw events);
- :func:`role_active_user_counts`: distinct active users of a role over a range of days;
- :func:`contact_counts`: contacts of a role, optionally only those active in a range;
- for backtests, the first three by account and UTC day over a whole period, read once
  (:func:`daily_counts_where`, :func:`daily_property_stats`, :func:`role_last_seen_by_day`),
  and every contact of a role with its first tracked event (:func:`role_first_seen`).

The daily rollups keep no properties, so the first three read the raw event store: they
are exact over the retained history (``TOUCHLINE_RAW_EVENT_RETENTION_DAYS``). A property
is a path of keys (``("plan", "seats")``); a value is numeric when JSON says it is a
number (not a boolean, not a numeric string). Roles are the contacts' current roles
(no role history is kept).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Float, Text, and_, case, cast, func, literal, or_, select
from sqlalchemy.orm import Session

from services.ingest.models import RawEvent, User, UserActivityDaily, UserEventSeen
from services.ingest.repository.chunks import chunks, grouped, in_

Where = Sequence[tuple[Sequence[str], Sequence[Any]]]  # (property path, allowed values): all must match


def _day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00 UTC, the day after end 00:00 UTC): the same UTC days as the rollups."""
    return datetime.combine(start, time.min, tzinfo=UTC), datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)


class JsonPath:
    """Typed reads of one key path of a JSON column (JSONB on PostgreSQL, JSON text on
    SQLite): ``events.properties`` unless told (the accounts' traits, :mod:`.accounts`).
    Each answers NULL when the value is not of the type asked, so a cast never sees a
    value it cannot convert."""

    # The kinds of JSON value, as each database's type function names them.
    KINDS = {
        "string": (("string",), ("text",)),
        "number": (("number",), ("integer", "real")),
        "boolean": (("boolean",), ("true", "false")),
        "null": (("null",), ("null",)),
        "object": (("object",), ("object",)),
        "array": (("array",), ("array",)),
    }

    def __init__(self, session: Session, path: Sequence[str], column: Any = RawEvent.properties):
        self.pg = session.get_bind().dialect.name == "postgresql"
        self.path = list(path)
        self.column = column

    def _pg_step(self, last: str) -> Any:
        """The value at the path, one ``->`` per key (``last`` is the final operator:
        ``->`` for the JSON value, ``->>`` for its text). Not ``#>``, which reads a key of
        digits as an array index: {"a": [5]} would match "a.0" on PostgreSQL and not on
        SQLite, nor in the rule language, where every key names an object's key."""
        node = self.column
        for i, key in enumerate(self.path):
            node = node.op(last if i == len(self.path) - 1 else "->")(literal(key, Text))
        return node

    def _type(self) -> Any:
        if self.pg:
            return func.jsonb_typeof(self._pg_step("->"))
        return func.json_type(self.column, self._sqlite_path())

    def _sqlite_path(self) -> str:
        # Keys are validated (events: [A-Za-z0-9_-]; traits: no quote or backslash), so quoting them is enough.
        return "$" + "".join(f'."{k}"' for k in self.path)

    def _text(self) -> Any:
        if self.pg:
            return self._pg_step("->>")
        return func.json_extract(self.column, self._sqlite_path())

    def of_kind(self, *kinds: str) -> Any:
        """The path holds a value of one of ``kinds`` (keys of :attr:`KINDS`); false when it is missing."""
        names = [n for k in kinds for n in self.KINDS[k][0 if self.pg else 1]]
        return self._type().in_(names)

    def missing(self) -> Any:
        """The path holds nothing, or JSON null (never NULL itself: a missing value is a row, not an unknown)."""
        return func.coalesce(self._type(), "null") == "null"

    def number(self) -> Any:
        if self.pg:
            return case((self._type() == "number", cast(self._text(), Float)))
        return case((self._type().in_(("integer", "real")), cast(self._text(), Float)))

    def string(self) -> Any:
        return case((self._type() == ("string" if self.pg else "text"), self._text()))

    def is_bool(self, value: bool) -> Any:
        if self.pg:
            return and_(self._type() == "boolean", self._text() == ("true" if value else "false"))
        return self._type() == ("true" if value else "false")

    def matches(self, values: Sequence[Any]) -> Any:
        """The property equals one of ``values`` (strings, numbers, booleans), type included:
        "1" does not match 1, nor true 1."""
        conds = []
        strings = [v for v in values if isinstance(v, str)]
        numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if strings:
            conds.append(self.string().in_(strings))
        if numbers:
            conds.append(self.number().in_(numbers))
        conds.extend(self.is_bool(v) for v in {v for v in values if isinstance(v, bool)})
        return or_(*conds)


def _filtered(session: Session, event: str, start: date, end: date, where: Where) -> list[Any]:
    lo, hi = _day_bounds(start, end)
    conds = [RawEvent.name == event, RawEvent.type == "track", RawEvent.timestamp >= lo, RawEvent.timestamp < hi]
    conds.extend(JsonPath(session, path).matches(values) for path, values in where)
    return conds


def _utc_day(session: Session, col: Any) -> Any:
    """The UTC day of a timestamp column (SQLite stores UTC text; PostgreSQL timestamptz)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", col))
    return func.date(col)


def _as_date(v: Any) -> date:
    return date.fromisoformat(v) if isinstance(v, str) else v


def event_counts_where(session: Session, event: str, where: Where, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    """Track events named ``event`` in the UTC days [start, end] whose properties match
    every filter of ``where``, per account (accounts without one are absent)."""
    conds = _filtered(session, event, start, end, where)
    return grouped(
        session,
        lambda part: select(RawEvent.account_id, func.count()).where(*conds, in_(RawEvent.account_id, part)).group_by(RawEvent.account_id),
        accounts,
    )


AGGREGATES = ("sum", "avg", "min", "max", "latest")


def property_aggregates(
    session: Session, fn: str, event: str, path: Sequence[str], where: Where, start: date, end: date, accounts: list[str] | None
) -> dict[str, tuple[float, int]]:
    """account -> (``fn`` of the numeric values of ``path`` on ``event`` in the UTC days
    [start, end], how many there were), for the accounts with at least one (on an event
    matching ``where``). Values that are missing or not numbers are ignored; an account
    without any is absent (the caller decides: ``sum`` 0, the others undefined).
    ``latest`` is the value of the last event that has one (by timestamp, then event id)."""
    if fn not in AGGREGATES:
        raise ValueError(f"unknown aggregate {fn!r}")
    value = JsonPath(session, path).number()
    conds = [*_filtered(session, event, start, end, where), value.is_not(None)]
    if fn == "latest":

        def build(part: list[str] | None) -> Any:
            ranked = (
                select(
                    RawEvent.account_id.label("account_id"),
                    value.label("v"),
                    func.row_number()
                    .over(partition_by=RawEvent.account_id, order_by=(RawEvent.timestamp.desc(), RawEvent.event_id.desc()))
                    .label("rn"),
                    func.count().over(partition_by=RawEvent.account_id).label("n"),
                )
                .where(*conds, in_(RawEvent.account_id, part))
                .subquery()
            )
            return select(ranked.c.account_id, ranked.c.v, ranked.c.n).where(ranked.c.rn == 1)

    else:
        agg: Any = {"sum": func.sum(value), "avg": func.avg(value), "min": func.min(value), "max": func.max(value)}[fn]

        def build(part: list[str] | None) -> Any:
            return (
                select(RawEvent.account_id, agg, func.count()).where(*conds, in_(RawEvent.account_id, part)).group_by(RawEvent.account_id)
            )

    return {a: (float(v), int(n)) for a, v, n in _rows(session, build, accounts)}


def _rows(session: Session, build: Any, accounts: list[str] | None) -> list[Any]:
    rows: list[Any] = []
    for part in chunks(accounts):
        rows.extend(session.execute(build(part)))
    return rows


def role_last_seen(
    session: Session, event: str, role: str, as_of: datetime | None, lookback_days: int, accounts: list[str] | None
) -> dict[str, datetime]:
    """account -> when a user of ``role`` last did ``event``. Live (``as_of`` None): the
    users' last-seen markers. As of an instant (backtests): the raw events up to it,
    within ``lookback_days`` (exact to the second within the retained history)."""
    if as_of is None:
        t = UserEventSeen
        return grouped(
            session,
            lambda part: (
                select(t.account_id, func.max(t.last_seen_at))
                .join(User, and_(User.account_id == t.account_id, User.id == t.user_id))
                .where(t.event_name == event, User.role == role, in_(t.account_id, part))
                .group_by(t.account_id)
            ),
            accounts,
        )
    r = RawEvent
    return grouped(
        session,
        lambda part: (
            select(r.account_id, func.max(r.timestamp))
            .join(User, and_(User.account_id == r.account_id, User.id == r.user_id))
            .where(
                r.name == event,
                r.type == "track",
                User.role == role,
                r.timestamp <= as_of,
                r.timestamp > as_of - timedelta(days=lookback_days),
                in_(r.account_id, part),
            )
            .group_by(r.account_id)
        ),
        accounts,
    )


def role_active_user_counts(session: Session, role: str, start: date, end: date, accounts: list[str] | None) -> dict[str, int]:
    """Distinct active users of ``role`` per account over the UTC days [start, end]."""
    t = UserActivityDaily
    return grouped(
        session,
        lambda part: (
            select(t.account_id, func.count(func.distinct(t.user_id)))
            .join(User, and_(User.account_id == t.account_id, User.id == t.user_id))
            .where(User.role == role, t.day >= start, t.day <= end, in_(t.account_id, part))
            .group_by(t.account_id)
        ),
        accounts,
    )


def contact_counts(
    session: Session, role: str, until: datetime, active: tuple[date, date] | None, accounts: list[str] | None
) -> dict[str, int]:
    """Contacts of ``role`` per account that exist at ``until`` (first seen by then, or
    never seen in an event: known from the CRM or the API), and with ``active`` only those
    with activity on a UTC day of that range."""
    conds: list[Any] = [User.role == role, or_(User.first_seen_at.is_(None), User.first_seen_at <= until)]
    if active is not None:
        t = UserActivityDaily
        busy = select(t.account_id).where(t.account_id == User.account_id, t.user_id == User.id, t.day >= active[0], t.day <= active[1])
        conds.append(busy.exists())
    return grouped(
        session,
        lambda part: select(User.account_id, func.count()).where(*conds, in_(User.account_id, part)).group_by(User.account_id),
        accounts,
    )


def daily_counts_where(
    session: Session, event: str, where: Where, start: date, end: date, accounts: list[str] | None = None
) -> Iterator[tuple[str, date, int]]:
    """(account, UTC day, count) of :func:`event_counts_where` for every account (of
    ``accounts``: a backtest's chunk of them, an
    :class:`~services.ingest.repository.chunks.AccountRange`; None: every account) and day of
    [start, end] that has one (a backtest reads them once for its whole period)."""
    day = _utc_day(session, RawEvent.timestamp)
    q = (
        select(RawEvent.account_id, day, func.count())
        .where(*_filtered(session, event, start, end, where), in_(RawEvent.account_id, accounts))
        .group_by(RawEvent.account_id, day)
    )
    for a, d, n in session.execute(q):
        yield a, _as_date(d), int(n)


def daily_property_stats(
    session: Session, event: str, path: Sequence[str], where: Where, start: date, end: date, accounts: list[str] | None = None
) -> Iterator[tuple[str, date, int, float, float, float, float]]:
    """(account, UTC day, numeric values, their sum, min, max, the latest of the day) of
    ``path`` on ``event`` for every account (of ``accounts``, as :func:`daily_counts_where`)
    and day of [start, end] with a numeric value:
    :func:`property_aggregates` of any window follows from these rows."""
    value = JsonPath(session, path).number()
    day = _utc_day(session, RawEvent.timestamp)
    ranked = (
        select(
            RawEvent.account_id.label("account_id"),
            day.label("day"),
            value.label("v"),
            func.row_number()
            .over(partition_by=(RawEvent.account_id, day), order_by=(RawEvent.timestamp.desc(), RawEvent.event_id.desc()))
            .label("rn"),
        )
        .where(*_filtered(session, event, start, end, where), value.is_not(None), in_(RawEvent.account_id, accounts))
        .subquery()
    )
    c = ranked.c
    q = select(c.account_id, c.day, func.count(), func.sum(c.v), func.min(c.v), func.max(c.v), func.max(case((c.rn == 1, c.v)))).group_by(
        c.account_id, c.day
    )
    for a, d, n, total, lo, hi, latest in session.execute(q):
        yield a, _as_date(d), int(n), float(total), float(lo), float(hi), float(latest)


def role_last_seen_by_day(
    session: Session, event: str, role: str, start: date, end: date, accounts: list[str] | None = None
) -> Iterator[tuple[str, date, datetime]]:
    """(account, UTC day, the last time a user of ``role`` did ``event`` that day) for every
    account (of ``accounts``, as :func:`daily_counts_where`) and day of [start, end] with one
    (backtests answer "days since" as of any
    instant of the period from these rows)."""
    r = RawEvent
    lo, hi = _day_bounds(start, end)
    day = _utc_day(session, r.timestamp)
    q = (
        select(r.account_id, day, func.max(r.timestamp))
        .join(User, and_(User.account_id == r.account_id, User.id == r.user_id))
        .where(r.name == event, r.type == "track", User.role == role, r.timestamp >= lo, r.timestamp < hi, in_(r.account_id, accounts))
        .group_by(r.account_id, day)
    )
    for a, d, ts in session.execute(q):
        yield a, _as_date(d), ts


def role_first_seen(session: Session, role: str, accounts: list[str] | None = None) -> Iterator[tuple[str, datetime | None]]:
    """(account, first tracked event or None) of every contact of ``role`` (of ``accounts``, as
    :func:`daily_counts_where`): :func:`contact_counts` without ``active`` at any instant
    follows from these rows (backtests)."""
    yield from session.execute(select(User.account_id, User.first_seen_at).where(User.role == role, in_(User.account_id, accounts)))


__all__ = [
    "AGGREGATES",
    "Where",
    "contact_counts",
    "contact_values_where",
    "daily_counts_where",
    "daily_property_stats",
    "event_counts_where",
    "property_aggregates",
    "role_active_user_counts",
    "role_last_seen",
    "role_first_seen",
    "role_last_seen_by_day",
]


def contacts_where(session: Session, event: str, where: Where, received_since: datetime) -> int:
    """How many distinct contacts (account, user) did a track event named ``event`` whose
    properties match every filter of ``where``, among the retained raw events received
    since ``received_since`` (the caller's lower bound, e.g. its first message: the scan
    reads only those, through the BRIN index on PostgreSQL): the contacts who clicked a
    resource's tracked links, for its report. One statement."""
    conds = [RawEvent.received_at >= received_since, RawEvent.name == event, RawEvent.type == "track", RawEvent.user_id.is_not(None)]
    conds.extend(JsonPath(session, path).matches(values) for path, values in where)
    pairs = select(RawEvent.account_id, RawEvent.user_id).where(*conds).distinct().subquery()
    return int(session.scalar(select(func.count()).select_from(pairs)) or 0)


def contact_values_where(
    session: Session, event: str, where: Where, received_since: datetime, path: Sequence[str]
) -> set[tuple[str, str, str | None]]:
    """The contacts :func:`contacts_where` counts, each with the string at ``path`` of
    its events' properties (None where that is not a string), distinct: the contacts who
    clicked a resource's links, with the message each click came from. One statement."""
    conds = [RawEvent.received_at >= received_since, RawEvent.name == event, RawEvent.type == "track", RawEvent.user_id.is_not(None)]
    conds.extend(JsonPath(session, p).matches(values) for p, values in where)
    q = select(RawEvent.account_id, RawEvent.user_id, JsonPath(session, path).string()).where(*conds).distinct()
    return {(a, u, v) for a, u, v in session.execute(q)}
