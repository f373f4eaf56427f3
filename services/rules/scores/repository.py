"""Every query on ``health_scores``, the stored history of account health (one row per
account per UTC day). The health feature (services/rules/health) writes it; evaluation
reads it for the rule language's ``health`` and ``health_change`` metrics and the
``account.health_label`` field. It sits below both, so neither imports the other's way
round (docs/health.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from services.ingest.interface import AccountRange
from services.rules.models import HealthRun, HealthScore
from shared.db import is_in, rowcount, upsert

CHUNK = 5000
# An account's current health is its latest score of the last CURRENT_DAYS days (the
# daily job may be held back a while by the freshness watermark, never a week).
CURRENT_DAYS = 7
COLUMNS = ("score", "label", "model_version", "components", "change_7d", "change_30d", "scored_at")


def _chunks(accounts: list[str] | None) -> Iterator[list[str] | None]:
    if accounts is None or isinstance(accounts, AccountRange):
        yield accounts  # a range of ids is one statement (a backtest's chunk of 10,000 accounts)
        return
    for i in range(0, len(accounts), CHUNK):
        yield accounts[i : i + CHUNK]


def current_days(today: date) -> tuple[date, date]:
    """(day, earliest) of the current score at ``today``."""
    return today, today - timedelta(days=CURRENT_DAYS - 1)


def past_days(today: date, days: int) -> tuple[date, date]:
    """(day, earliest) of the score ``days`` before ``today``: the latest on or before that
    day, no older than twice as far back (the 7- and 30-day change, ``health_change``)."""
    return today - timedelta(days=days), today - timedelta(days=2 * days)


def save(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace each account's row of its day (the last scoring of a day wins)."""
    t = HealthScore.__table__
    for i in range(0, len(rows), CHUNK):
        upsert(session, t, rows[i : i + CHUNK], ["account_id", "day"], update=lambda ex: {c: ex[c] for c in COLUMNS})


def _latest(session: Session, day: date, earliest: date, part: list[str] | None, *columns: Any) -> Any:
    """``columns`` of each account's row of the latest day in ``[earliest, day]``."""
    last = select(HealthScore.account_id, func.max(HealthScore.day).label("day")).where(HealthScore.day <= day, HealthScore.day >= earliest)
    if isinstance(part, AccountRange) and part:
        last = last.where(HealthScore.account_id.between(part[0], part[-1]))
    elif part is not None:
        last = last.where(is_in(session, HealthScore.account_id, part))
    sub = last.group_by(HealthScore.account_id).subquery()
    return select(*columns).join(sub, (sub.c.account_id == HealthScore.account_id) & (sub.c.day == HealthScore.day))


def latest_on_or_before(session: Session, day: date, earliest: date, accounts: list[str] | None = None) -> dict[str, HealthScore]:
    """Each account's row of the latest day in ``[earliest, day]``: one query per chunk
    of accounts, whatever their number (all accounts with ``accounts=None``)."""
    out: dict[str, HealthScore] = {}
    for part in _chunks(accounts):
        out.update((row.account_id, row) for row in session.scalars(_latest(session, day, earliest, part, HealthScore)))
    return out


def scores_on_or_before(session: Session, day: date, earliest: date, accounts: list[str] | None = None) -> dict[str, float]:
    """:func:`latest_on_or_before`'s scores only (an account whose latest row has none is left out)."""
    out: dict[str, float] = {}
    for part in _chunks(accounts):
        q = _latest(session, day, earliest, part, HealthScore.account_id, HealthScore.score)
        out.update((a, float(v)) for a, v in session.execute(q) if v is not None)
    return out


def scores_between(session: Session, start: date, end: date, accounts: list[str] | None = None) -> Iterator[tuple[str, date, float | None]]:
    """(account, day, score) of every row in [start, end], in account and day order (a
    backtest's chunk of accounts over its period: what :func:`scores_on_or_before` picks
    from, day after day, read once), streamed."""
    for part in _chunks(accounts):
        q = select(HealthScore.account_id, HealthScore.day, HealthScore.score).where(HealthScore.day >= start, HealthScore.day <= end)
        if isinstance(part, AccountRange) and part:
            q = q.where(HealthScore.account_id.between(part[0], part[-1]))
        elif part is not None:
            q = q.where(is_in(session, HealthScore.account_id, part))
        # Streamed (a server-side cursor on PostgreSQL: a score a day is 1.2M rows per 10,000
        # accounts), through the connection: the ORM's handling of streamed rows cost 7x the CPU.
        q = q.order_by(HealthScore.account_id, HealthScore.day).execution_options(yield_per=10_000)
        for a, day, score in session.connection().execute(q):
            yield a, day, None if score is None else float(score)


def labels_on_or_before(session: Session, day: date, earliest: date, accounts: list[str] | None = None) -> dict[str, str]:
    """:func:`latest_on_or_before`'s labels only."""
    out: dict[str, str] = {}
    for part in _chunks(accounts):
        q = _latest(session, day, earliest, part, HealthScore.account_id, HealthScore.label)
        out.update((a, v) for a, v in session.execute(q) if v is not None)
    return out


def history(session: Session, account_id: str, since: date, until: date) -> list[HealthScore]:
    q = (
        select(HealthScore)
        .where(HealthScore.account_id == account_id, HealthScore.day >= since, HealthScore.day <= until)
        .order_by(HealthScore.day.desc())
    )
    return list(session.scalars(q))


def latest_day(session: Session, until: date) -> date | None:
    return session.scalar(select(func.max(HealthScore.day)).where(HealthScore.day <= until))


def current_page(
    session: Session,
    today: date,
    *,
    label: str | None,
    descending: bool,
    after: tuple[float, str] | None,
    limit: int,
    accounts: set[str] | None = None,
) -> list[HealthScore]:
    """The accounts' current rows (as :func:`current_scores`: each account's latest score of
    the last CURRENT_DAYS days, so one account scored on request after the daily run does
    not hide the others) ordered by score (then account id), a page after ``after``; of
    ``accounts`` only, when given (a CSM key's)."""
    cur = current_scores(session, today).add_columns(HealthScore.day).subquery()
    q = (
        select(HealthScore)
        .join(cur, (cur.c.account_id == HealthScore.account_id) & (cur.c.day == HealthScore.day))
        .where(HealthScore.score.is_not(None))
    )
    if accounts is not None:
        q = q.where(is_in(session, HealthScore.account_id, sorted(accounts)))
    if label:
        q = q.where(HealthScore.label == label)
    if descending:
        q = q.order_by(HealthScore.score.desc(), HealthScore.account_id.desc())
        if after is not None:
            q = q.where((HealthScore.score < after[0]) | ((HealthScore.score == after[0]) & (HealthScore.account_id < after[1])))
    else:
        q = q.order_by(HealthScore.score, HealthScore.account_id)
        if after is not None:
            q = q.where((HealthScore.score > after[0]) | ((HealthScore.score == after[0]) & (HealthScore.account_id > after[1])))
    return list(session.scalars(q.limit(limit)))


def prune(session: Session, before: date) -> int:
    """Delete the rows of days before ``before`` (retention)."""
    return rowcount(session.execute(delete(HealthScore).where(HealthScore.day < before)))


# ---- for the console (docs/console.md): the same "current" as the rule language's ---------


def current_scores(session: Session, today: date) -> Select[str, float | None]:
    """A select of ``(account_id, score)``: each account's current score (the latest of the
    last CURRENT_DAYS days), for another service to order or filter its rows by (the
    console's accounts list sorts by health through ingest's search).

    The latest finished daily run scored every account, so no account's current row is
    older than that run's day (a run under way has scored some accounts only): when nothing was scored after it (the usual case) the current rows are
    that day's rows, read through the (day, score) index with no grouping; otherwise the
    grouping reads from that day on, not the whole week (at 100,000 accounts on
    PostgreSQL a sort by health took 1.3 s over the week, well under 0.1 s on one day)."""
    day, earliest = current_days(today)
    run = session.scalar(
        select(func.max(HealthRun.day)).where(HealthRun.day <= day, HealthRun.day >= earliest, HealthRun.finished_at.is_not(None))
    )
    if run is not None and latest_day(session, day) == run:
        return select(HealthScore.account_id, HealthScore.score).where(HealthScore.day == run)
    last = (
        select(HealthScore.account_id, func.max(HealthScore.day).label("day"))
        .where(HealthScore.day <= day, HealthScore.day >= (run or earliest))
        .group_by(HealthScore.account_id)
        .subquery()
    )
    return select(HealthScore.account_id, HealthScore.score).join(
        last, (last.c.account_id == HealthScore.account_id) & (last.c.day == HealthScore.day)
    )


def accounts_labelled(session: Session, today: date, label: str) -> Select[Any]:
    """A select of the account ids whose current label is ``label`` (as :func:`current_scores`)."""
    cur = current_scores(session, today).add_columns(HealthScore.label).subquery()
    return select(cur.c.account_id).where(cur.c.label == label)


def histories(session: Session, accounts: list[str], since: date, until: date) -> dict[str, list[tuple[date, float]]]:
    """Each account's scored days in ``[since, until]``, oldest first (one query per chunk)."""
    out: dict[str, list[tuple[date, float]]] = {a: [] for a in accounts}
    for part in _chunks(accounts):
        q = select(HealthScore.account_id, HealthScore.day, HealthScore.score).where(
            HealthScore.day >= since, HealthScore.day <= until, HealthScore.score.is_not(None)
        )
        if part is not None:
            q = q.where(is_in(session, HealthScore.account_id, part))
        for a, d, s in session.execute(q.order_by(HealthScore.account_id, HealthScore.day)):
            if s is not None:
                out.setdefault(a, []).append((d, float(s)))
    return out


def label_counts_by_day(session: Session, since: date, until: date) -> list[tuple[date, str, int]]:
    """(day, label, accounts) for each scored day in ``[since, until]`` (an unlabelled score is left out)."""
    q = (
        select(HealthScore.day, HealthScore.label, func.count())
        .where(HealthScore.day >= since, HealthScore.day <= until, HealthScore.label.is_not(None))
        .group_by(HealthScore.day, HealthScore.label)
        .order_by(HealthScore.day)
    )
    return [(d, str(label), int(n)) for d, label, n in session.execute(q)]
