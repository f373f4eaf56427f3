"""Measuring and evaluating conditions for accounts and events.

:class:`Measurements` answers "what is this predicate's operand for these accounts at
``now``", one set-based query per distinct operand, cached for the batch or the tick
(a thousand rules over the same metric cost one query). The pure interpretation is in
:mod:`services.rules.language.evaluate`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import repeat
from operator import mul, truediv
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.ingest.interface import Contact
from services.rules.language.ast import Audience, Condition, Field, Leaf, Metric, RuleDefinition, leaves
from services.rules.language.evaluate import NumericOrder, explain, matching_from_values, predicate
from services.rules.scores import repository as scores
from services.rules.segments import repository as segment_members

Operand = tuple[Any, ...]  # Metric.operand / Field.operand: what a predicate measures

DAY = 86400.0
ZERO_DEFAULT = ("count", "active_users", "active_days", "contacts")
HEALTH = Metric(metric="health", op=">=", value=0.0)
HEALTH_LABEL = Field(path=("account", "health_label"), op="exists", value=True)
# The account columns each derived account field reads (any other field: its own column).
FIELD_COLUMNS = {
    "traits": ("traits",),
    "tenure_days": ("signup_date", "first_seen_at"),
    "days_in_stage": ("lifecycle_stage_changed_at",),
    "days_to_renewal": ("renewal_date",),
}
FOCUS_LIMIT = 5000  # accounts: more, and one read of every account costs less than their chunks


@dataclass(frozen=True)
class EventSubject:
    """The triggering event as predicates see it (a validated event or a stored one)."""

    event_id: str
    account_id: str
    user_id: str | None
    name: str
    timestamp: datetime
    properties: dict[str, Any]


class ChunkColumns(Mapping[str, list[int]]):
    """A chunked metric (the change metric's ranges) held by range, as a backtest's daily
    series has it: ``columns[k][i]`` is account ``ids[i]``'s value in range ``k``, and
    ``index`` maps an account to its position. As a mapping it is what
    :func:`ingest.chunked_metric` answers (account -> one value per range, for the
    accounts with a nonzero value in some range); :meth:`Measurements._measure` reads
    the columns whole instead of building a list per account and day."""

    __slots__ = ("ids", "columns", "_index")

    def __init__(self, ids: list[str], columns: list[tuple[int, ...]], index: Mapping[str, int]):
        self.ids, self.columns, self._index = ids, columns, index

    def __getitem__(self, account_id: str) -> list[int]:
        values = [c[self._index[account_id]] for c in self.columns]
        if not any(values):
            raise KeyError(account_id)
        return values

    def __iter__(self) -> Iterator[str]:
        return (a for a, *values in zip(self.ids, *self.columns, strict=True) if any(values))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


class Measurements:
    """Operand values for a population of accounts at one instant.

    ``accounts=None`` means every account (the tick); a list bounds every query to it
    (an event batch, a dry-run). ``as_of=True`` (backtests) reads "days since" from the
    daily rollups, as of ``now``, instead of the live last-seen table. With ``as_of``,
    ``series`` (a backtest's :class:`~services.rules.backtest.series.DailySeries`, over the
    same ``accounts``: every account, or a backtest's chunk of them) answers the
    population's metrics from memory; it returns None for what it cannot answer."""

    def __init__(
        self,
        session: Session,
        now: datetime,
        accounts: list[str] | None = None,
        *,
        as_of: bool = False,
        lookback_days: int = 400,
        series: Any = None,
    ):
        self.session = session
        self.series = series if as_of and getattr(series, "accounts", None) is accounts else None
        self.now = now.astimezone(UTC)
        self.accounts = accounts
        self.as_of = as_of
        self.lookback_days = lookback_days
        self._values: dict[Operand, dict[str, Any]] = {}
        self._chunks: dict[Operand, tuple[Mapping[str, list[int]], int]] = {}
        self._seen: dict[Operand, dict[str, int]] = {}  # aggregate: numeric values in the window, per account
        self._matching: dict[Leaf, set[str]] = {}
        self._orders: dict[Operand, NumericOrder[str] | None] = {}
        self._absents: dict[Operand, set[str]] = {}
        self._rows: dict[str, Any] | None = None
        self._rows_traits = False
        self._population: set[str] | None = None
        self._user_values: dict[Operand, dict[tuple[str, str], float]] = {}
        self._users: dict[tuple[str, str], Contact] | None = None
        self._planned: dict[Operand, Metric] = {}
        # Account-field predicates answered by SQL (ingest's accounts_with_value) over a whole
        # population: the tick's; an event batch's few accounts are cheaper read and tested here.
        self.sql_fields = accounts is None and self.series is None
        self._focus: set[str] | None = None
        self._focus_values: dict[Operand, dict[str, Any]] = {}
        self._columns: dict[tuple[str, ...], dict[str, Any]] = {}  # account columns read for the population
        self.queries = 0

    # ---- accounts ------------------------------------------------------
    def rows(self, with_traits: bool = False) -> dict[str, Any]:
        if self._rows is None or (with_traits and not self._rows_traits):
            if self.series is not None:  # a backtest reads today's accounts once, not every day
                self._rows = self.series.account_rows(with_traits)
            else:
                self._rows = ingest.account_rows(self.session, self.accounts, with_traits)
            self._rows_traits = with_traits
            self.queries += 1
        return self._rows

    @property
    def population(self) -> set[str]:
        if self._population is None:
            if self.accounts is not None:
                self._population = set(self.accounts)
            elif self.series is not None:
                self._population = self.series.account_ids()
            else:
                self._population = set(ingest.account_ids(self.session))
        return self._population

    def account_field(self, leaf: Field) -> dict[str, Any]:
        """account -> the value of an ``account.*`` field, for the whole population."""
        key = leaf.operand
        if key not in self._values:
            self._values[key] = self._field_values(leaf, self.accounts)
        return self._values[key]

    def focus(self, accounts: Iterable[str]) -> None:
        """Declare the accounts about to be explained (those that just entered a segment):
        a field not read for the whole population (the set algebra asked SQL instead, see
        :meth:`matching`) is then read for them only. Over FOCUS_LIMIT accounts one read of
        the population costs less than its chunks, and the call does nothing."""
        wanted = set(accounts)
        self._focus = wanted if len(wanted) <= FOCUS_LIMIT else None
        self._focus_values = {}

    def _field_value(self, leaf: Field, account_id: str) -> Any:
        key = leaf.operand
        if key not in self._values and self._focus is not None and account_id in self._focus:
            if key not in self._focus_values:
                self._focus_values[key] = self._field_values(leaf, sorted(self._focus))
            return self._focus_values[key].get(account_id)
        return self.account_field(leaf).get(account_id)

    def _field_values(self, leaf: Field, accounts: list[str] | None) -> dict[str, Any]:
        """account (of ``accounts``) -> the field's value, reading only the columns it needs."""
        name = leaf.path[1]
        if name == "health_label":  # from the health scores, not the account row
            return scores.labels_on_or_before(self.session, *scores.current_days(self.now.date()), accounts)
        if name == "segments":  # the named segments it is in now (a backtest reads today's too, as it does roles)
            members = segment_members.memberships(self.session, accounts)
            return {a: tuple(sorted(segs)) for a, segs in members.items()}
        traits = name == "traits"
        rows: dict[str, Any] | None = None
        columns = FIELD_COLUMNS.get(name, (name,))
        whole = accounts is self.accounts  # the population's columns are kept: four traits, one read
        if self.series is not None or (self._rows is not None and (self._rows_traits or not traits)):
            rows = self.rows(with_traits=traits)  # already read (a health score, a backtest's today)
        elif whole:
            rows = self._columns.get(columns)
        if rows is None:
            rows = ingest.account_values(self.session, accounts, columns)
            self.queries += 1
            if whole:
                self._columns[columns] = rows
        now, today = self.now, self.now.date()
        out: dict[str, Any] = {}
        for a, r in rows.items():
            if traits:
                v = _dig(r.traits or {}, leaf.path[2:])
            elif name == "tenure_days":
                v = (
                    (today - r.signup_date).days
                    if r.signup_date
                    else ((now - r.first_seen_at).total_seconds() / DAY if r.first_seen_at else None)
                )
            elif name == "days_in_stage":
                v = (now - r.lifecycle_stage_changed_at).total_seconds() / DAY if r.lifecycle_stage_changed_at else None
            elif name == "days_to_renewal":
                v = (r.renewal_date - today).days if r.renewal_date else None
            else:
                v = getattr(r, name)
            if isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            out[a] = v
        return out

    # ---- metrics -------------------------------------------------------
    def plan(self, conditions: Iterable[Condition]) -> None:
        """Declare conditions about to be evaluated, so that their ``count`` metrics over
        one window are read together when the first of them is asked: one statement per
        chunk of accounts, grouped by event name (:func:`ingest.event_counts_by_name`),
        instead of one per metric (an event batch at 1,000 rules asks 50 of them). The
        values are the same; an unplanned metric is read alone. Not in a backtest, whose
        series answers from memory."""
        if self.series is not None:
            return
        for condition in conditions:
            for leaf in leaves(condition):
                if isinstance(leaf, Metric) and leaf.metric == "count" and not leaf.where and leaf.operand not in self._values:
                    self._planned[leaf.operand] = leaf

    def metric(self, m: Metric) -> tuple[dict[str, Any], Any]:
        """(account -> value, default for accounts without a row)."""
        default = 0.0 if m.metric in ZERO_DEFAULT or (m.metric == "aggregate" and m.fn == "sum") else None
        if m.metric == "days_since":
            default = math.inf
        key = m.operand
        if key not in self._values:
            if key in self._planned:
                self._measure_planned(m.window_days)
            else:
                self._values[key] = self._measure(m)
            self.queries += 1  # reads: a planned group counts once
        return self._values[key], default

    def _measure_planned(self, window: int) -> None:
        """Every planned count metric over ``window`` days, in one read (see :meth:`plan`)."""
        group = [leaf for leaf in self._planned.values() if leaf.window_days == window]
        counts = ingest.event_counts_by_name(
            self.session, {leaf.event_name for leaf in group}, *ingest.window_days(self.now, window), self.accounts
        )
        for leaf in group:
            self._values[leaf.operand] = {a: float(v) for a, v in counts[leaf.event_name].items()}
            del self._planned[leaf.operand]

    def _query(self, name: str, *args: Any) -> dict[str, Any]:
        """A metric series from ingest's read model, or the same answer from the backtest's daily series."""
        if self.series is not None:
            out: dict[str, Any] | None = getattr(self.series, name)(*args)
            if out is not None:
                return out
        result: dict[str, Any] = getattr(ingest, name)(self.session, *args, self.accounts)
        return result

    def _scores(self, day: date, earliest: date) -> dict[str, float]:
        """The health scores of :func:`scores.scores_on_or_before`, or the same answer from the backtest's daily series."""
        out: dict[str, float] | None = self.series.health_scores(day, earliest) if self.series is not None else None
        if out is None:
            out = scores.scores_on_or_before(self.session, day, earliest, self.accounts)
        return out

    def _measure_raw(self, m: Metric) -> dict[str, Any] | None:
        """The metrics over raw event properties and contacts by role (ingest's
        :mod:`~services.ingest.repository.properties`), None for the others. In a backtest
        the daily series answers them from one read per period (roles are today's)."""
        now, q = self.now, self._query
        where = tuple((tuple(path.split(".")), values) for path, values in m.where)
        if m.metric == "count" and m.where:
            days = ingest.window_days(now, m.window_days)
            return {a: float(v) for a, v in q("event_counts_where", m.event_name, where, *days).items()}
        if m.metric == "aggregate":
            assert m.fn is not None and m.prop is not None  # the parser requires both
            days = ingest.window_days(now, m.window_days)
            found = q("property_aggregates", m.fn, m.event_name, tuple(m.prop.split(".")), where, *days)
            self._seen[m.operand] = {a: n for a, (_, n) in found.items()}
            return {a: v for a, (v, _) in found.items()}
        if m.role is None:
            return None
        if m.metric == "active_users":
            return {a: float(v) for a, v in q("role_active_user_counts", m.role, *ingest.window_days(now, m.window_days)).items()}
        if m.metric == "days_since":
            last = q("role_last_seen", m.event_name, m.role, now if self.as_of else None, self.lookback_days)
            return {a: max(0.0, (now - ts).total_seconds() / DAY) for a, ts in last.items()}
        if m.metric == "contacts":
            active = ingest.window_days(now, m.window) if m.window else None
            return {a: float(v) for a, v in q("contact_counts", m.role, now, active).items()}
        return None

    def _measure(self, m: Metric) -> dict[str, Any]:
        raw = self._measure_raw(m)
        if raw is not None:
            return raw
        s, now, acc, q = self.session, self.now, self.accounts, self._query
        if m.metric == "count":
            return {a: float(v) for a, v in q("event_counts", m.event_name, *ingest.window_days(now, m.window_days)).items()}
        if m.metric == "active_users":
            return {a: float(v) for a, v in q("active_user_counts", *ingest.window_days(now, m.window_days)).items()}
        if m.metric == "active_days":
            return {a: float(v) for a, v in q("active_days", m.event, *ingest.window_days(now, m.window_days)).items()}
        if m.metric == "days_since":
            if self.as_of:
                last = q("account_last_day", m.event_name, now.date(), self.lookback_days)
                today = now.date()
                since = {d: float((today - d).days) for d in set(last.values())}  # a few hundred days, not an account each
                return dict(zip(last, map(since.__getitem__, last.values()), strict=True))
            return {a: max(0.0, (now - ts).total_seconds() / DAY) for a, ts in ingest.account_last_seen(s, m.event_name, acc).items()}
        if m.metric == "seat_utilisation":
            users = q("active_user_counts", *ingest.window_days(now, m.window_days))
            if self.series is not None:  # a backtest reads the seats once, not every day
                seats = self.series.seats()
            else:
                rows = self.rows() if self._rows is not None else ingest.account_values(s, acc, ("seats",))
                seats = {a: r.seats for a, r in rows.items() if r.seats}
            # 100.0 * users / seats per account, the arithmetic in C (a backtest asks it 10,000 x 90 times)
            used = map(mul, repeat(100.0), map(users.get, seats, repeat(0)))
            return dict(zip(seats, map(truediv, used, seats.values()), strict=True))
        if m.metric == "health":
            return self._scores(*scores.current_days(now.date()))
        if m.metric == "health_change":
            latest, _ = self.metric(HEALTH)
            past = self._scores(*scores.past_days(now.date(), m.window_days))
            return {a: round(v - past[a], 1) for a, v in latest.items() if a in past}
        if m.metric == "change":
            n = m.baseline_days // m.window_days
            ranges = [ingest.window_days(now, m.window_days, k * m.window_days) for k in range(n + 1)]
            per = q("chunked_metric", m.of, m.event, ranges)
            self._chunks[m.operand] = (per, n)  # the details, for the few accounts explained
            if isinstance(per, ChunkColumns):  # the same arithmetic, a column at a time
                current, rest = per.columns[0], per.columns[1:]
                sums = rest[0] if n == 1 else map(sum, zip(*rest, strict=True))
                return {
                    a: 100.0 * (c - baseline) / baseline
                    for a, c, b in zip(per.ids, current, sums, strict=True)
                    if b and (baseline := b / n) > 0
                }
            return {a: 100.0 * (v[0] - baseline) / baseline for a, v in per.items() if (baseline := sum(v[1:]) / n) > 0}
        raise ValueError(f"unknown metric {m.metric}")

    def audience(self, audience: Audience) -> set[str]:
        """The accounts of the population in ``audience``: ingest's filters in SQL (in a
        backtest, the same from the account rows its series read once), then
        the health filters (the current score and its label) from the health scores."""
        if audience.is_everyone:
            return self.population
        # A backtest's series answers from the account rows it read once (the same filters).
        out = self.series.audience(audience, self.now) if self.series is not None else None
        if out is None:
            out = ingest.accounts_where(self.session, audience, self.now, self.accounts)
        if audience.health_label is not None:
            labels = self.account_field(HEALTH_LABEL)
            out = {a for a in out if labels.get(a) in audience.health_label}
        if audience.health is not None:
            values, _ = self.metric(HEALTH)
            lo, hi = audience.health.min, audience.health.max
            out = {a for a in out if a in values and (lo is None or values[a] >= lo) and (hi is None or values[a] <= hi)}
        return out

    def detail(self, leaf: Leaf, account_id: str) -> dict[str, Any] | None:
        """A change metric's current and baseline values for one account, an aggregate's
        number of numeric values in its window (its evidence)."""
        if isinstance(leaf, Metric) and leaf.metric == "aggregate":
            self.metric(leaf)
            return {"values": self._seen.get(leaf.operand, {}).get(account_id, 0)}
        per, n = self._chunks.get(leaf.operand, ({}, 1))
        values = per.get(account_id)
        if values is None:
            return None
        return {"current": values[0], "baseline": round(sum(values[1:]) / n, 4)}

    def matching(self, leaf: Leaf) -> set[str]:
        """Accounts of the population for which an account-level predicate holds."""
        if leaf not in self._matching:
            order, absent = None, None
            if isinstance(leaf, Metric):
                values, default = self.metric(leaf)
                # Sorted once per operand: rules over one metric differ only in their thresholds.
                # Not in a backtest: each simulated day asks an operand once or twice, and a
                # pass over the values costs less than sorting them.
                if self.series is None:
                    if leaf.operand not in self._orders:
                        self._orders[leaf.operand] = NumericOrder.of(values)
                    order = self._orders[leaf.operand]
                absent = functools.partial(self._absent, leaf.operand, values)
            else:
                found = self._field_in_sql(leaf)
                if found is not None:
                    self._matching[leaf] = self.population & found
                    return self._matching[leaf]
                values, default = self.account_field(leaf), None
            self._matching[leaf] = matching_from_values(leaf, self.population, values, default, order, absent)
        return self._matching[leaf]

    def _absent(self, operand: Operand, values: Mapping[str, Any]) -> set[str]:
        """The accounts of the population without a value of ``operand`` (they take its
        default), found once per operand: the tick's 25 absence rules ask three."""
        if operand not in self._absents:
            self._absents[operand] = self.population.difference(values)
        return self._absents[operand]

    def _field_in_sql(self, leaf: Field) -> set[str] | None:
        """The accounts an ``account.*`` predicate holds for, tested by the database (one
        statement, no account's row read here) when :attr:`sql_fields` is on and ingest
        translates the test exactly (:func:`ingest.accounts_with_value`); None otherwise."""
        if not self.sql_fields or leaf.path[0] != "account":
            return None
        found = ingest.accounts_with_value(self.session, leaf.path[1:], leaf.op, leaf.value, self.accounts)
        if found is not None:
            self.queries += 1
        return found

    # ---- events and users ---------------------------------------------
    def load_users(self, pairs: list[tuple[str, str]]) -> None:
        self._users = ingest.contacts(self.session, pairs)
        self._pairs = pairs

    def user_days_since(self, m: Metric, pair: tuple[str, str]) -> float:
        key = m.operand
        if key not in self._user_values:
            seen = ingest.user_last_seen(self.session, m.event_name, getattr(self, "_pairs", [pair]))
            self._user_values[key] = {p: max(0.0, (self.now - ts).total_seconds() / DAY) for p, ts in seen.items()}
        return self._user_values[key].get(pair, math.inf)

    def user_field(self, leaf: Field, pair: tuple[str, str]) -> Any:
        if self._users is None:
            self.load_users([pair])
        user = (self._users or {}).get(pair)
        if user is None:
            return None
        if leaf.path[1] == "traits":
            return _dig(user.traits or {}, leaf.path[2:])
        return getattr(user, leaf.path[1])

    def value_getter(self, account_id: str, event: EventSubject | None = None) -> Callable[[Leaf], Any]:
        def value_of(leaf: Leaf) -> Any:
            if isinstance(leaf, Metric):
                if leaf.scope == "user":
                    if event is None or not event.user_id:
                        return None
                    return self.user_days_since(leaf, (account_id, event.user_id))
                values, default = self.metric(leaf)
                return values.get(account_id, default)
            root = leaf.path[0]
            if root == "account":
                return self._field_value(leaf, account_id)
            if event is None:
                return None
            if root == "event":
                if leaf.path[1] == "properties":
                    v = _dig(event.properties, leaf.path[2:])
                else:
                    v = getattr(event, leaf.path[1])
            else:
                if not event.user_id:
                    return None
                v = self.user_field(leaf, (account_id, event.user_id))
            if isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            return v

        return value_of

    def explain(self, condition: Condition, account_id: str, event: EventSubject | None = None) -> tuple[bool, dict[str, Any]]:
        ok, tree = explain(condition, self.value_getter(account_id, event))
        self._attach_details(tree, condition, account_id)
        return ok, tree

    def _attach_details(self, tree: dict[str, Any], condition: Condition, account_id: str) -> None:
        by_label = {leaf.label: leaf for leaf in leaves(condition) if isinstance(leaf, Metric) and leaf.metric in ("change", "aggregate")}
        if not by_label:
            return

        def walk(e: dict[str, Any]) -> None:
            for k in ("all", "any"):
                for c in e.get(k, []):
                    walk(c)
            if "not" in e:
                walk(e["not"])
            leaf = by_label.get(e.get("predicate", ""))
            if leaf is not None:
                d = self.detail(leaf, account_id)
                if d:
                    e.update(d)

        walk(tree)


def needs_event(definition: RuleDefinition) -> bool:
    return any(leaf.needs_event for leaf in leaves(definition.condition))


def explain_for_account(session: Session, condition: Condition, account_id: str, now: datetime) -> tuple[bool, dict[str, Any]]:
    return Measurements(session, now, [account_id]).explain(condition, account_id)


def audience_explanation(definition: RuleDefinition, account_id: str, meas: Measurements) -> dict[str, Any]:
    """Audience filters one by one for one account (dry-run)."""
    aud = definition.audience
    row = meas.rows().get(account_id)
    checks = []
    if row is None:
        return {"match": False, "checks": [{"filter": "account", "result": False, "message": "no such account"}]}
    now, today = meas.now, meas.now.date()
    for name in ("segment", "plan", "lifecycle_stage"):
        allowed = getattr(aud, name)
        if allowed is not None:
            v = getattr(row, name)
            checks.append({"filter": name, "value": v, "allowed": list(allowed), "result": v in allowed})
    ranges = {
        "arr": row.arr,
        "tenure_days": (today - row.signup_date).days
        if row.signup_date
        else ((now - row.first_seen_at).total_seconds() / DAY if row.first_seen_at else None),
        "days_in_stage": (now - row.lifecycle_stage_changed_at).total_seconds() / DAY if row.lifecycle_stage_changed_at else None,
    }
    for name, v in ranges.items():
        r = getattr(aud, name)
        if r is not None:
            ok = v is not None and (r.min is None or v >= r.min) and (r.max is None or v <= r.max)
            checks.append({"filter": name, "value": round(v, 4) if isinstance(v, float) else v, **r.to_dict(), "result": ok})
    if aud.renewal_within_days is not None:
        d = (row.renewal_date - today).days if row.renewal_date else None
        checks.append(
            {
                "filter": "renewal_within_days",
                "value": d,
                "max": aud.renewal_within_days,
                "result": d is not None and 0 <= d <= aud.renewal_within_days,
            }
        )
    if aud.health_label is not None:
        label = meas.account_field(HEALTH_LABEL).get(account_id)
        checks.append({"filter": "health_label", "value": label, "allowed": list(aud.health_label), "result": label in aud.health_label})
    if aud.health is not None:
        h = meas.metric(HEALTH)[0].get(account_id)
        r = aud.health
        ok = h is not None and (r.min is None or h >= r.min) and (r.max is None or h <= r.max)
        checks.append({"filter": "health", "value": h, **r.to_dict(), "result": ok})
    # The SQL filter (and the health scores) are the authority; the checks above explain them.
    match = account_id in meas.audience(aud)
    return {"match": match, "checks": checks}


__all__ = ["EventSubject", "Measurements", "explain_for_account", "needs_event", "predicate", "timedelta"]
