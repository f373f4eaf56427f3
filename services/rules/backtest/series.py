"""Daily metric series for backtests: each metric's input is read once for the whole
replayed range (plus the longest window and baseline before it), and every simulated
day's value is then answered from memory. The raw-event metrics (property filters,
aggregates, a role's last time) are held sparse: per account, its days with a value.

:class:`DailySeries` mirrors the read-model functions (services/ingest/interface.py) :class:`Measurements` calls for a
whole population (same arguments without the session and the account list, same
results); a method returns None when the request falls outside the range it loaded, and
the caller then asks the database as before. The answers are exactly the per-day
queries' answers (tests/integration/services/rules/test_backtest_series.py compares the two paths).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate, compress, groupby, repeat
from operator import and_, itemgetter
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.rules.evaluation.engine import ChunkColumns
from services.rules.scores import repository as scores


class DailySeries:
    def __init__(self, session: Session, start: date, end: date, span_days: int, accounts: list[str] | None = None):
        """Covers windows inside [start - span_days, end] (``start``: the first replayed day),
        for ``accounts`` (a chunk of them, :func:`ingest.account_ids_after`; None: every
        account): every read is bounded to them, and so is what it answers."""
        self.session = session
        self.accounts = accounts
        self.lo = start - timedelta(days=span_days)
        self.hi = end
        self.length = (self.hi - self.lo).days + 1
        # Health scores reach further back: a change over a window compares with the score a
        # window earlier, looked for up to another window before (scores.past_days).
        self.scores_lo = self.lo - timedelta(days=span_days + scores.CURRENT_DAYS)
        self._usage: dict[str | None, dict[str, tuple[list[int], list[int]]]] = {}
        self._last: dict[tuple[str, int], _LastDays] = {}
        self._day_masks: dict[str, dict[str, int]] = {}
        self._users: dict[int, dict[str, list[int]]] = {}
        self._columns: dict[int, tuple[list[str], list[tuple[int, ...]]]] = {}
        self._index: dict[str, int] | None = None
        self._seats: dict[str, int] | None = None
        self._user_masks: dict[str, list[int]] | None = None
        self._rows: dict[str, Any] | None = None
        self._rows_traits = False
        self._ids: frozenset[str] | None = None
        self._day_list: list[date] | None = None
        self._raw: dict[tuple[Any, ...], Any] = {}  # the raw-event metrics by account and day (sparse)
        self._audiences: dict[ingest.AccountFilter, _Sweep] = {}
        self._scores: dict[str, tuple[array[int], array[float], frozenset[int]]] | None = None

    # ---- loading ------------------------------------------------------
    def _idx(self, d: date) -> int:
        return (d - self.lo).days

    def _covers(self, start: date, end: date) -> bool:
        return self.lo <= start and end <= self.hi and start <= end

    def usage(self, event: str | None) -> dict[str, tuple[list[int], list[int]]]:
        """account -> (prefix sums of counts, prefix sums of days with a row), length+1 long."""
        if event not in self._usage:
            n, lo_ord = self.length, self.lo.toordinal()
            sums: dict[str, list[int]] = {}
            rows: dict[str, list[int]] = {}
            for a, d, total, k in ingest.daily_usage(self.session, event, self.lo, self.hi, self.accounts):
                if a not in sums:
                    sums[a], rows[a] = [0] * n, [0] * n
                i = d.toordinal() - lo_ord
                sums[a][i] = int(total or 0)
                rows[a][i] = 1 if k else 0
            self._usage[event] = {a: (list(accumulate(sums[a], initial=0)), list(accumulate(rows[a], initial=0))) for a in sums}
        return self._usage[event]

    def users(self, window: int) -> dict[str, list[int]]:
        """account -> distinct active users in the ``window``-day window ending each day.

        From one activity mask per user (bit i: active on day lo + i, read once per
        backtest): the user counts in the window ending day j iff bit j of the mask
        smeared ``window`` - 1 days forward is set. An account's smeared masks are
        added bitwise into binary counters (one integer per binary digit, every day at
        once), which are then spread to one 32-bit counter per day."""
        if window not in self._users:
            self._users[window] = self._window_counts(self._masks(), window)
        return self._users[window]

    def _window_counts(self, masks_by_account: dict[str, list[int]], window: int) -> dict[str, list[int]]:
        """:meth:`users`' arithmetic over any set of users' activity masks."""
        n, out = self.length, {}
        for a, masks in masks_by_account.items():
            # Bit-sliced counters: bit j of planes[k] is bit k of day j's count. Adding a
            # user is a ripple-carry add of one bit per day; the planes are spread once.
            planes: list[int] = []
            for m in masks:
                carry = _smear(m, window)
                for k, p in enumerate(planes):
                    planes[k] = p ^ carry
                    carry &= p
                    if not carry:
                        break
                if carry:
                    planes.append(carry)
            total = sum(_spread(p, n) << k for k, p in enumerate(planes))
            counts = array("I", total.to_bytes(4 * n, "little"))
            if sys.byteorder != "little":
                counts.byteswap()
            out[a] = counts.tolist()
        return out

    def columns(self, window: int) -> tuple[list[str], list[tuple[int, ...]]]:
        """:meth:`users` by day: (accounts, counts) where ``counts[j][i]`` is account ``i``'s
        distinct active users in the ``window``-day window ending day ``j`` (a day's
        answer is then a pass over one tuple, not a lookup per account)."""
        if window not in self._columns:
            users = self.users(window)
            ids = list(users)
            cols: list[tuple[int, ...]] = list(zip(*users.values(), strict=True)) if ids else [()] * self.length
            self._columns[window] = (ids, cols)
        return self._columns[window]

    def _account_index(self) -> dict[str, int]:
        """Account -> its position in :meth:`columns` (the same order for every window)."""
        if self._index is None:
            self._index = {a: i for i, a in enumerate(self._masks())}
        return self._index

    def _masks(self) -> dict[str, list[int]]:
        if self._user_masks is None:
            self._user_masks = {}
            for a, m in ingest.user_activity_masks(self.session, self.lo, self.hi, None, self.accounts):
                self._user_masks.setdefault(a, []).append(m)
        return self._user_masks

    # ---- accounts (today's: the store keeps no history of them) --------
    def account_rows(self, with_traits: bool) -> dict[str, Any]:
        if self._rows is None or (with_traits and not self._rows_traits):
            self._rows = ingest.account_rows(self.session, self.accounts, with_traits)
            self._rows_traits = with_traits
        return self._rows

    def seats(self) -> dict[str, int]:
        """Account -> seats bought, for accounts with seats (seat utilisation's denominator)."""
        if self._seats is None:
            self._seats = {a: r.seats for a, r in self.account_rows(False).items() if r.seats}
        return self._seats

    def audience(self, audience: ingest.AccountFilter, now: datetime) -> set[str] | None:
        """:func:`ingest.accounts_where` at ``now``, the end of a day of the range (as a
        backtest steps its clock), answered from the account rows read once
        (:func:`ingest.admitted_spans`: each account's first and last admitted day) instead
        of a query per day that returns most of the chunk's accounts every day. None for
        any other instant. Days asked in order cost the accounts entering and leaving."""
        j = self._idx(now.date())
        if not 0 <= j < self.length or now != _end_of_day(now.date()):
            return None
        if audience not in self._audiences:
            ends = [_end_of_day(d) for d in self._days()]
            spans = ingest.admitted_spans(self.account_rows(False), audience, ends)
            self._audiences[audience] = _Sweep(spans, self.length)
        return self._audiences[audience].at(j)

    def health_scores(self, day: date, earliest: date) -> dict[str, float] | None:
        """:func:`scores.scores_on_or_before`: each account's score of its latest row in
        [earliest, day] (none when that row has no score), from the chunk's rows over the
        period read once (two queries a day before: the current score and the past one).
        None when the days reach outside what was read."""
        if not (self.scores_lo <= earliest <= day <= self.hi):
            return None
        if self._scores is None:
            self._scores = self._read_scores()
        i, j = (earliest - self.scores_lo).days, (day - self.scores_lo).days
        out: dict[str, float] = {}
        for a, (days, values, without) in self._scores.items():
            k = bisect_right(days, j) - 1
            if k >= 0 and days[k] >= i and k not in without:
                out[a] = values[k]
        return out

    def _read_scores(self) -> dict[str, tuple[array[int], array[float], frozenset[int]]]:
        """account -> (its days with a row, ascending; their scores; the positions without
        one), built from the rows as they stream in (a score a day is 1.2M rows per chunk)."""
        out = {}
        lo = self.scores_lo.toordinal()
        for a, rows in groupby(scores.scores_between(self.session, self.scores_lo, self.hi, self.accounts), key=itemgetter(0)):
            days, values, without = array("H"), array("d"), []
            for k, (_, d, score) in enumerate(rows):
                days.append(d.toordinal() - lo)
                values.append(0.0 if score is None else score)
                if score is None:
                    without.append(k)
            out[a] = (days, values, frozenset(without))
        return out

    def account_ids(self) -> set[str]:
        if self._ids is None:
            self._ids = frozenset(ingest.account_ids(self.session) if self.accounts is None else self.accounts)
        return set(self._ids)

    # ---- the read model's questions -------------------------------------
    def event_counts(self, event: str | None, start: date, end: date) -> dict[str, int] | None:
        if not event or not self._covers(start, end):
            return None
        i, j = self._idx(start), self._idx(end) + 1
        return {a: s[j] - s[i] for a, (s, r) in self.usage(event).items() if r[j] - r[i] > 0}

    def active_days(self, event: str | None, start: date, end: date) -> dict[str, int] | None:
        if not self._covers(start, end):
            return None
        i, j = self._idx(start), self._idx(end) + 1
        return {a: r[j] - r[i] for a, (_, r) in self.usage(event).items() if r[j] - r[i] > 0}

    def active_user_counts(self, start: date, end: date) -> dict[str, int] | None:
        if not self._covers(start, end):
            return None
        ids, cols = self.columns((end - start).days + 1)
        col = cols[self._idx(end)]
        return dict(compress(zip(ids, col, strict=True), col))

    def chunked_metric(self, of: str, event: str | None, ranges: list[tuple[date, date]]) -> Mapping[str, list[int]] | None:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if not all(self._covers(a, b) for a, b in ranges):
            return None
        spans = [((b - a).days + 1, self._idx(a), self._idx(b)) for a, b in ranges]
        out: dict[str, list[int]] = {}
        if of == "active_users":
            # An account has a row in [lo, hi] iff some range has a user, when the ranges tile it.
            cover = sorted(ranges)
            if any((b1 + timedelta(days=1)) != a2 for (_, b1), (a2, _) in zip(cover, cover[1:], strict=False)):
                return None
            widths = {w for w, _, _ in spans}
            if len(widths) == 1:  # the change metric: one series read at several offsets
                ids, cols = self.columns(widths.pop())
                return ChunkColumns(ids, [cols[j] for _, _, j in spans], self._account_index())
            series = {w: self.users(w) for w in widths}
            for a in set().union(*series.values()):
                values = [series[w][a][j] if a in series[w] else 0 for w, _, j in spans]
                if any(values):
                    out[a] = values
            return out
        i0, j0 = self._idx(lo), self._idx(hi) + 1
        for a, (s, r) in self.usage(event).items():
            if r[j0] - r[i0] == 0:
                continue
            src = s if of == "count" else r
            out[a] = [src[j + 1] - src[i] for _, i, j in spans]
        return out

    def account_last_day(self, event: str | None, end: date, lookback_days: int) -> dict[str, date] | None:
        if not event or not (self.lo <= end <= self.hi):
            return None
        key = (event, lookback_days)
        if key not in self._last:
            if event not in self._day_masks:
                self._day_masks[event] = dict(ingest.event_day_masks(self.session, event, self.lo, self.hi, self.accounts))
            masks = self._day_masks[event]
            # The last day before the loaded range (any older one is past the lookback of every day >= lo),
            # which counts while the account has no day in the range yet: latest first day in the range first.
            before = ingest.account_last_day(self.session, event, self.lo - timedelta(days=1), lookback_days, self.accounts)
            first = {a: (m & -m).bit_length() - 1 for a, m in masks.items() if m}
            waiting = sorted(((-first.get(a, self.length), a, d) for a, d in before.items()), key=itemgetter(0))
            self._last[key] = _LastDays(list(masks), list(masks.values()), [w[0] for w in waiting], waiting)
        last = self._last[key]
        j, floor = self._idx(end), end - timedelta(days=lookback_days)
        lowest = max(self._idx(floor) + 1, 0)  # in-range days after the floor
        # Each account's last day up to ``end`` (bit length: its index + 1, 0 for none), in C over the masks.
        lengths = list(map(int.bit_length, map(and_, last.masks, repeat((1 << (j + 1)) - 1))))
        by_length: list[Any] = [None, *self._days()]  # a mask's last day by its bit length (None: no day)
        out = dict(compress(zip(last.accounts, map(by_length.__getitem__, lengths), strict=True), map(lowest.__lt__, lengths)))
        for _, a, d in last.waiting[: bisect_left(last.waiting_keys, -j)]:  # no day in the range up to ``end``
            if d > floor:
                out[a] = d
        return out

    # ---- the raw-event metrics (sparse: an account's days with a value, ascending) ----
    def _window(self, start: date, end: date) -> tuple[int, int] | None:
        return (self._idx(start), self._idx(end)) if self._covers(start, end) else None

    def event_counts_where(self, event: str, where: ingest.Where, start: date, end: date) -> dict[str, int] | None:
        span = self._window(start, end)
        if span is None:
            return None
        key = ("count_where", event, _frozen(where))
        if key not in self._raw:
            per: dict[str, list[tuple[int, int]]] = {}
            for a, d, n in ingest.daily_counts_where(self.session, event, where, self.lo, self.hi, self.accounts):
                per.setdefault(a, []).append((self._idx(d), n))
            self._raw[key] = {a: ([i for i, _ in v], list(accumulate((n for _, n in v), initial=0))) for a, v in map(_sorted, per.items())}
        i, j = span
        out = {}
        for a, (days, cum) in self._raw[key].items():
            lo, hi = bisect_left(days, i), bisect_right(days, j)
            if hi > lo:
                out[a] = cum[hi] - cum[lo]
        return out

    def property_aggregates(
        self, fn: str, event: str, path: Sequence[str], where: ingest.Where, start: date, end: date
    ) -> dict[str, tuple[float, int]] | None:
        span = self._window(start, end)
        if span is None:
            return None
        key = ("stats", event, tuple(path), _frozen(where))
        if key not in self._raw:
            per: dict[str, list[tuple[Any, ...]]] = {}
            for a, d, *stats in ingest.daily_property_stats(self.session, event, path, where, self.lo, self.hi, self.accounts):
                per.setdefault(a, []).append((self._idx(d), *stats))
            # account -> (days, values per day, sums, mins, maxes, latests): columns of its day rows
            self._raw[key] = {a: tuple(map(list, zip(*rows, strict=True))) for a, rows in map(_sorted, per.items())}
        i, j = span
        out: dict[str, tuple[float, int]] = {}
        for a, (days, counts, sums, mins, maxes, latests) in self._raw[key].items():
            lo, hi = bisect_left(days, i), bisect_right(days, j)
            if hi == lo:
                continue
            n = sum(counts[lo:hi])
            if fn == "sum":
                out[a] = (sum(sums[lo:hi]), n)
            elif fn == "avg":
                out[a] = (sum(sums[lo:hi]) / n, n)
            elif fn == "min":
                out[a] = (min(mins[lo:hi]), n)
            elif fn == "max":
                out[a] = (max(maxes[lo:hi]), n)
            else:  # latest: the last day's latest
                out[a] = (latests[hi - 1], n)
        return out

    def role_last_seen(self, event: str, role: str, as_of: datetime | None, lookback_days: int) -> dict[str, datetime] | None:
        if as_of is None or not (self.lo <= as_of.date() <= self.hi):
            return None
        key = ("role_last", event, role, lookback_days)
        if key not in self._raw:
            per: dict[str, list[tuple[int, datetime]]] = {}
            for a, d, ts in ingest.role_last_seen_by_day(self.session, event, role, self.lo, self.hi, self.accounts):
                per.setdefault(a, []).append((self._idx(d), ts))
            # The last time before the loaded range (any older one is past the lookback of every instant in it).
            edge = datetime.combine(self.lo, time.min, tzinfo=UTC) - timedelta(microseconds=1)
            before = ingest.role_last_seen(self.session, event, role, edge, lookback_days, self.accounts)
            self._raw[key] = ({a: ([i for i, _ in v], [t for _, t in v]) for a, v in map(_sorted, per.items())}, before)
        days_by_account, before = self._raw[key]
        j, floor = self._idx(as_of.date()), as_of - timedelta(days=lookback_days)
        out = {a: t for a, t in before.items() if floor < t <= as_of}
        for a, (days, times) in days_by_account.items():
            k = bisect_right(days, j)
            if k and floor < times[k - 1] <= as_of:
                out[a] = times[k - 1]
            elif k:
                out.pop(a, None)  # its last time up to as_of is past the lookback, and so is any before it
        return out

    def role_active_user_counts(self, role: str, start: date, end: date) -> dict[str, int] | None:
        """Distinct active users of ``role`` (today's roles) in [start, end], from the
        activity masks of that role's users (read once per role)."""
        if not self._covers(start, end):
            return None
        key = ("role_users", role, (end - start).days + 1)
        if key not in self._raw:
            if ("role_masks", role) not in self._raw:
                masks: dict[str, list[int]] = {}
                for a, m in ingest.user_activity_masks(self.session, self.lo, self.hi, role, self.accounts):
                    masks.setdefault(a, []).append(m)
                self._raw[("role_masks", role)] = masks
            self._raw[key] = self._window_counts(self._raw[("role_masks", role)], key[2])
        j = self._idx(end)
        return {a: c[j] for a, c in self._raw[key].items() if c[j]}

    def contact_counts(self, role: str, until: datetime, active: tuple[date, date] | None) -> dict[str, int] | None:
        if active is not None:
            # Active in the window up to the end of its last day: first seen by then, so the
            # role's active users are the answer (not so for an instant inside that day).
            if until < datetime.combine(active[1], time.max, tzinfo=UTC):
                return None
            return self.role_active_user_counts(role, *active)
        key = ("first_seen", role)
        if key not in self._raw:
            firsts: dict[str, list[datetime]] = {}
            for a, first in ingest.role_first_seen(self.session, role, self.accounts):
                firsts.setdefault(a, []).append(first or _NEVER_TRACKED)
            self._raw[key] = {a: sorted(v) for a, v in firsts.items()}
        return {a: n for a, times in self._raw[key].items() if (n := bisect_right(times, until))}

    def _days(self) -> list[date]:
        if self._day_list is None:
            self._day_list = [self.lo + timedelta(days=i) for i in range(self.length)]
        return self._day_list


_Row = TypeVar("_Row", bound=tuple[Any, ...])  # (day index, value, ...)


def _end_of_day(d: date) -> datetime:
    """The last instant of UTC day ``d``: a backtest's clock on that day."""
    return datetime.combine(d + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(microseconds=1)


@dataclass
class _LastDays:
    """An event's last days for :meth:`DailySeries.account_last_day`: the accounts' day masks
    (as two columns), and the accounts' last day before the range keyed by minus their
    first day in it (the length when none), ascending."""

    accounts: list[str]
    masks: list[int]
    waiting_keys: list[int]
    waiting: list[tuple[int, str, date]]


class _Sweep:
    """The accounts admitted on each day, from their (first, last) day indexes: kept as a
    set that steps from day to day (the accounts entering and leaving), a copy handed out."""

    def __init__(self, spans: Mapping[str, tuple[int, int]], length: int):
        self.enter: list[list[str]] = [[] for _ in range(length + 1)]
        self.leave: list[list[str]] = [[] for _ in range(length + 1)]
        for a, (first, last) in spans.items():
            self.enter[first].append(a)
            self.leave[last + 1].append(a)
        self.day = -1
        self.current: set[str] = set()

    def at(self, j: int) -> set[str]:
        if j < self.day:
            self.day, self.current = -1, set()
        while self.day < j:
            self.day += 1
            self.current.update(self.enter[self.day])
            self.current.difference_update(self.leave[self.day])
        return set(self.current)


# A contact never seen in a track event counts at any instant.
_NEVER_TRACKED = datetime.min.replace(tzinfo=UTC)


def _frozen(where: ingest.Where) -> tuple[tuple[tuple[str, ...], tuple[Any, ...]], ...]:
    return tuple((tuple(path), tuple(values)) for path, values in where)


def _sorted(item: tuple[str, list[_Row]]) -> tuple[str, list[_Row]]:
    return item[0], sorted(item[1], key=lambda row: row[0])


# Byte b (eight days, bit k = day k) -> those days as eight little-endian 32-bit counters.
_SPREAD = [b"".join((b >> k & 1).to_bytes(4, "little") for k in range(8)) for b in range(256)]
assert array("I").itemsize == 4


def _spread(mask: int, n: int) -> int:
    """``mask``'s first ``n`` bits as one 32-bit counter per bit (0 or 1), little-endian."""
    raw = (mask & ((1 << n) - 1)).to_bytes((n + 7) // 8, "little")
    return int.from_bytes(b"".join(map(_SPREAD.__getitem__, raw))[: 4 * n], "little")


def _smear(mask: int, width: int) -> int:
    """Bit j set iff some bit of ``mask`` in [j - width + 1, j] is set (OR of ``mask``
    shifted by 0 .. width - 1), in O(log width) shifts."""
    out, shift, block, cover = 0, 0, mask, 1  # block: mask smeared over ``cover`` days
    while width:
        if width & 1:
            out |= block << shift
            shift += cover
        width >>= 1
        if width:
            block |= block << cover
            cover *= 2
    return out
