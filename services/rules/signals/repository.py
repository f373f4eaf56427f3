"""Every query on signals and cooldown claims."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from services.rules.language.segment import SIGNAL_PREFIX as SEGMENT_PREFIX
from services.rules.models import AccountLastSignal, RuleCooldown, SignalDayCount, SignalRecord
from shared.db import insert_new, is_in, upsert
from shared.pagination import sorted_after
from shared.privacy import scrub


def claim_cooldowns(session: Session, rule_id: str, account_ids: list[str], now: datetime, until: datetime) -> set[str]:
    """Claim the right to fire for each account whose cooldown has expired (or never
    started). A conditional upsert: with two workers racing, only one claim wins."""
    if not account_ids:
        return set()
    t = RuleCooldown.__table__
    rows = [{"rule_id": rule_id, "account_id": a, "fired_at": now, "until": until} for a in sorted(set(account_ids))]
    claimed = upsert(
        session,
        t,
        rows,
        ["rule_id", "account_id"],
        update=lambda new: {"fired_at": new.fired_at, "until": new.until},
        where=lambda new: t.c.until <= new.fired_at,
        returning=[t.c.account_id],
        binary=True,
    )
    return {r[0] for r in claimed}


def cooling_down(session: Session, rule_id: str, now: datetime) -> set[str]:
    """Accounts this rule cannot fire for now (the tick skips them before building evidence)."""
    return set(session.scalars(select(RuleCooldown.account_id).where(RuleCooldown.rule_id == rule_id, RuleCooldown.until > now)))


def cooldown_until(session: Session, rule_id: str, account_id: str) -> datetime | None:
    row = session.get(RuleCooldown, (rule_id, account_id))
    return row.until if row else None


def insert_signals(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Store the signals whose id is new, and count them into the rollups (per UTC day
    and kind; each account's latest rule signal, not a segment's) in the same transaction:
    the console's overview and "rule signal in 30 days" read those instead of grouping
    every recent signal. Keys in
    sorted order, so two writers lock the rollups' rows in the same order."""
    inserted = insert_new(session, SignalRecord.__table__, rows, ["signal_id"], binary=True)  # a validated Signal's fields
    new = [r for r in rows if r["signal_id"] in inserted]
    if not new:
        return inserted
    per_day = Counter((r["fired_at"].astimezone(UTC).date(), r["kind"]) for r in new)
    days = SignalDayCount.__table__
    upsert(
        session,
        days,
        [{"day": d, "kind": k, "n": per_day[(d, k)]} for d, k in sorted(per_day)],
        ["day", "kind"],
        update=lambda new_row: {"n": days.c.n + new_row.n},
    )
    latest: dict[str, datetime] = {}
    for r in new:
        if not r["rule_id"].startswith(SEGMENT_PREFIX):  # a rule's signal, not a segment's entering or leaving
            latest[r["account_id"]] = max(latest.get(r["account_id"], r["fired_at"]), r["fired_at"])
    if not latest:
        return inserted
    last = AccountLastSignal.__table__
    upsert(
        session,
        last,
        [{"account_id": a, "fired_at": latest[a]} for a in sorted(latest)],
        ["account_id"],
        update=lambda new_row: {"fired_at": new_row.fired_at},
        where=lambda new_row: last.c.fired_at < new_row.fired_at,
        binary=True,
    )
    return inserted


def _where(q: Any, *, kind: str | None, rule_id: str | None, account_id: str | None, since: datetime | None, until: datetime | None) -> Any:
    """The signal list's filters, one definition for the list and its count."""
    if kind:
        q = q.where(SignalRecord.kind == kind)
    if rule_id:
        q = q.where(SignalRecord.rule_id == rule_id)
    if account_id:
        q = q.where(SignalRecord.account_id == account_id)
    if since:
        q = q.where(SignalRecord.fired_at >= since)
    if until:
        q = q.where(SignalRecord.fired_at < until)
    return q


def count_signals(
    session: Session,
    *,
    kind: str | None = None,
    rule_id: str | None = None,
    account_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many signals :func:`list_signals` pages through with the same filters."""
    q = _where(select(func.count()).select_from(SignalRecord), kind=kind, rule_id=rule_id, account_id=account_id, since=since, until=until)
    return int(session.scalar(q) or 0)


def list_signals(
    session: Session,
    *,
    kind: str | None,
    rule_id: str | None,
    account_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[SignalRecord]:
    """Newest first; ``before`` is the (fired_at, signal_id) of the previous page's last item."""
    q = select(SignalRecord).order_by(SignalRecord.fired_at.desc(), SignalRecord.signal_id.desc()).limit(limit)
    q = _where(q, kind=kind, rule_id=rule_id, account_id=account_id, since=since, until=until)
    if before:
        at, sid = before
        q = q.where((SignalRecord.fired_at < at) | ((SignalRecord.fired_at == at) & (SignalRecord.signal_id < sid)))
    return list(session.scalars(q))


# The signals list's sortable columns (the console's table headings).
SIGNAL_SORTS: dict[str, Any] = {
    "fired": SignalRecord.fired_at,
    "account": SignalRecord.account_id,
    "rule": SignalRecord.rule_id,
    "kind": SignalRecord.kind,
}


def find_signals(
    session: Session,
    *,
    kind: str | None,
    rule_id: str | None,
    account_id: str | None,
    since: datetime | None,
    until: datetime | None,
    sort: str = "fired",
    descending: bool = True,
    after: str | None = None,
    limit: int,
) -> list[SignalRecord]:
    """The console's signals list: :func:`list_signals`'s filters, ordered by ``sort`` (a
    key of :data:`SIGNAL_SORTS`) either way, ties by id (shared/pagination.py
    ``sorted_after``; newest first by default, as :func:`list_signals`); ``after`` is the
    id of the previous page's last signal (an unknown one: page one)."""
    column = SIGNAL_SORTS.get(sort, SignalRecord.fired_at)
    q = _where(select(SignalRecord).limit(limit), kind=kind, rule_id=rule_id, account_id=account_id, since=since, until=until)
    row = session.get(SignalRecord, after) if after else None
    anchor = (getattr(row, column.key), row.signal_id) if row is not None else None
    return list(session.scalars(sorted_after(q, column, SignalRecord.signal_id, descending=descending, anchor=anchor)))


def get_signal(session: Session, signal_id: str) -> SignalRecord | None:
    return session.get(SignalRecord, signal_id)


def due_for_decision_check(session: Session, now: datetime, limit: int) -> list[SignalRecord]:
    """Signals whose outreach decision check is due, oldest check first."""
    q = (
        select(SignalRecord)
        .where(SignalRecord.decision_due_at <= now)
        .order_by(SignalRecord.decision_due_at, SignalRecord.signal_id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def settle(session: Session, signal_ids: set[str]) -> None:
    """Signals outreach has decided on: never checked again."""
    ids = sorted(signal_ids)
    for i in range(0, len(ids), 900):
        session.execute(
            update(SignalRecord)
            .where(is_in(session, SignalRecord.signal_id, ids[i : i + 900]))
            .values(decision_due_at=None)
            .execution_options(synchronize_session=False)
        )


def scrub_evidence(session: Session, account_id: str, needles: list[str]) -> int:
    """Erasure: scrub values containing ``needles`` from the account's signal evidence
    (a rule on ``user.email`` or an event property records the value it saw)."""
    changed = 0
    for row in session.scalars(select(SignalRecord).where(SignalRecord.account_id == account_id)):
        evidence, hit = scrub(row.evidence or {}, needles)
        if hit:
            row.evidence = evidence
            changed += 1
    return changed


def _utc_day(session: Session, col: InstrumentedAttribute[datetime]) -> ColumnElement[date]:
    """The UTC calendar day of a stored datetime, in SQL (SQLite stores UTC text)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", col))
    return func.date(col)


def counts_by_day_and_kind(session: Session, first: date, last: date) -> list[tuple[date, str, int]]:
    """Signals fired per UTC day and kind, from ``first`` to ``last`` (UTC days, both
    included): the rollup :func:`insert_signals` keeps, a row per day and kind."""
    q = select(SignalDayCount.day, SignalDayCount.kind, SignalDayCount.n).where(SignalDayCount.day >= first, SignalDayCount.day <= last)
    return [(d, k, n) for d, k, n in session.execute(q) if n]


def counts_by_day_and_kind_raw(session: Session, first: date, last: date) -> list[tuple[date, str, int]]:
    """:func:`counts_by_day_and_kind` grouped from the signals themselves (what the rollup
    must equal; its tests compare them)."""
    day = _utc_day(session, SignalRecord.fired_at)
    q = select(day, SignalRecord.kind, func.count()).group_by(day, SignalRecord.kind)
    out = [(d if isinstance(d, date) else date.fromisoformat(str(d)), k, n) for d, k, n in session.execute(q)]
    return [(d, k, n) for d, k, n in out if first <= d <= last]


def counts_by_rule(session: Session, since: datetime) -> dict[str, int]:
    q = select(SignalRecord.rule_id, func.count()).where(SignalRecord.fired_at >= since).group_by(SignalRecord.rule_id)
    return {r: n for r, n in session.execute(q)}


def accounts_signalled_since(session: Session, since: datetime) -> Select[str]:
    """A subquery of the accounts with a rule's signal since ``since`` (the accounts list's
    "rule signal in 30 days"): those whose latest (the rollup :func:`insert_signals`
    keeps) is since. A segment's entering or leaving is no such signal: with the starter
    segments every account entered one, and the filter narrowed nothing."""
    return select(AccountLastSignal.account_id).where(AccountLastSignal.fired_at >= since)
