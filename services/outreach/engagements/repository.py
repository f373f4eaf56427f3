"""Every query on the CSM roster, engagements and their timeline.

Lock order, everywhere: CSM rows first, then engagement rows. The assignment pass,
setting a CSM away and reassigning by hand all follow it, so they cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, literal_column, or_, select, update
from sqlalchemy.orm import Session

from services.outreach.models import (
    OPEN_ENGAGEMENT_STATUSES,
    Csm,
    Engagement,
    EngagementEvent,
    Enrollment,
    Message,
    Playbook,
    PlaybookVersion,
    SignalReceipt,
)
from shared.db import UTCDateTime, insert_on_conflict, is_in
from shared.pagination import sorted_after


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# ---- roster -------------------------------------------------------------------


def get_csm(session: Session, csm_id: str, *, lock: bool = False) -> Csm | None:
    if lock and _pg(session):
        return session.scalar(select(Csm).where(Csm.id == csm_id).with_for_update())
    return session.get(Csm, csm_id)


def list_csms(session: Session, *, after: str | None = None, limit: int | None = None) -> list[Csm]:
    q = select(Csm).order_by(Csm.id).limit(limit)
    if after is not None:
        q = q.where(Csm.id > after)
    return list(session.scalars(q))


def lock_roster(session: Session) -> list[Csm]:
    """Every CSM row, locked (PostgreSQL) in id order: the assignment pass holds the
    roster while it counts loads and assigns, so two workers never both fill the last
    slot of one CSM. On SQLite the writer lock (BEGIN IMMEDIATE) does the same."""
    q = select(Csm).order_by(Csm.id)
    if _pg(session):
        q = q.with_for_update()
    return list(session.scalars(q))


def open_load(session: Session, csm_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Open engagements held per CSM (assigned or active)."""
    q = (
        select(Engagement.csm_id, func.count())
        .where(Engagement.status.in_(("assigned", "active")), Engagement.csm_id.is_not(None))
        .group_by(Engagement.csm_id)
    )
    if csm_ids is not None:
        q = q.where(Engagement.csm_id.in_(list(csm_ids)))
    return {c: n for c, n in session.execute(q) if c is not None}


# ---- engagements ----------------------------------------------------------------


def insert_engagement(session: Session, row: dict[str, Any]) -> bool:
    """Insert unless this id exists or the account already has an open engagement
    toward this goal (the partial unique index); True if inserted."""
    table = Engagement.__table__
    stmt = insert_on_conflict(session, table).values(**row).on_conflict_do_nothing().returning(table.c.id)
    return session.scalar(stmt) is not None


def get(session: Session, engagement_id: str, *, lock: bool = False) -> Engagement | None:
    if lock and _pg(session):
        return session.scalar(select(Engagement).where(Engagement.id == engagement_id).with_for_update())
    return session.get(Engagement, engagement_id)


def open_for(session: Session, account_id: str, goal: str) -> Engagement | None:
    return session.scalar(
        select(Engagement).where(
            Engagement.account_id == account_id, Engagement.goal == goal, Engagement.status.in_(OPEN_ENGAGEMENT_STATUSES)
        )
    )


def has_open(session: Session, account_id: str) -> bool:
    return (
        session.scalar(
            select(Engagement.id).where(Engagement.account_id == account_id, Engagement.status.in_(OPEN_ENGAGEMENT_STATUSES)).limit(1)
        )
        is not None
    )


def accounts_with_open(session: Session, account_ids: Iterable[str]) -> set[str]:
    """:func:`has_open` for many accounts: those of ``account_ids`` with an open engagement."""
    ids = sorted(set(account_ids))
    out: set[str] = set()
    for i in range(0, len(ids), 900):
        out.update(
            session.scalars(
                select(Engagement.account_id)
                .where(is_in(session, Engagement.account_id, ids[i : i + 900]), Engagement.status.in_(OPEN_ENGAGEMENT_STATUSES))
                .distinct()
            )
        )
    return out


def accounts_engaged_by(session: Session, csm_id: str, account_ids: Iterable[str] | None) -> set[str]:
    """Of ``account_ids``, those with an engagement (open or closed) of ``csm_id``: looked up
    by account (ix_engagements_account), so a CSM with a long history costs what a page of
    accounts costs, not what their engagements do. ``None``: every account the CSM has had
    an engagement on (a filter for a list that is not a page of accounts, such as the
    accounts by health)."""
    if account_ids is None:
        return set(session.scalars(select(Engagement.account_id).where(Engagement.csm_id == csm_id).distinct()))
    ids = sorted(set(account_ids))
    out: set[str] = set()
    for i in range(0, len(ids), 900):
        out.update(
            session.scalars(
                select(Engagement.account_id)
                .where(is_in(session, Engagement.account_id, ids[i : i + 900]), Engagement.csm_id == csm_id)
                .distinct()
            )
        )
    return out


def claim_queued(session: Session, limit: int) -> list[Engagement]:
    """Queued engagements, highest priority first then oldest; rows another worker
    holds are skipped (PostgreSQL), never waited for."""
    q = (
        select(Engagement)
        .where(Engagement.status == "queued")
        .order_by(Engagement.priority.desc(), Engagement.opened_at, Engagement.id)
        .limit(limit)
    )
    if _pg(session):
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def open_of_csm(session: Session, csm_id: str) -> list[Engagement]:
    q = select(Engagement).where(Engagement.csm_id == csm_id, Engagement.status.in_(("assigned", "active")))
    if _pg(session):
        q = q.with_for_update()
    return list(session.scalars(q.order_by(Engagement.id)))


def last_csm_for_accounts(session: Session, account_ids: list[str]) -> dict[str, str]:
    """account -> the CSM who was assigned it last, for the accounts that had one."""
    out: dict[str, str] = {}
    ids = sorted(set(account_ids))
    for lo in range(0, len(ids), 500):
        rows = session.execute(
            select(Engagement.account_id, Engagement.csm_id)
            .where(Engagement.account_id.in_(ids[lo : lo + 500]), Engagement.csm_id.is_not(None))
            .order_by(Engagement.account_id, Engagement.assigned_at.desc())
        )
        for account_id, csm_id in rows:
            if csm_id is not None:
                out.setdefault(account_id, csm_id)
    return out


def reminders_due(session: Session, now: datetime, limit: int) -> list[Engagement]:
    q = (
        select(Engagement)
        .where(Engagement.status.in_(("assigned", "active")), Engagement.next_reminder_at <= now)
        .order_by(Engagement.next_reminder_at)
        .limit(limit)
    )
    if _pg(session):
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def expiring(session: Session, now: datetime, limit: int) -> list[Engagement]:
    """Open engagements past their due time, and held-out ones whose time-box is over
    (they are measured then, like the engaged ones)."""
    q = (
        select(Engagement)
        .where(Engagement.status.in_(("assigned", "active", "held_out")), Engagement.closed_at.is_(None), Engagement.due_at <= now)
        .order_by(Engagement.due_at)
        .limit(limit)
    )
    if _pg(session):
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def sort_key(e: Engagement, order: str) -> tuple[datetime | str | None, str]:
    """Where ``e`` sits in a list in ``order``: what a page's cursor holds."""
    return (e.due_at, e.id) if order == "due" else (e.opened_at, e.id)


def list_engagements(
    session: Session,
    *,
    status: str | None = None,
    csm_id: str | None = None,
    account_id: str | None = None,
    goal: str | None = None,
    limit: int = 100,
    order: str = "opened",
    after: tuple[Any, ...] | None = None,
    statuses: Collection[str] | None = None,
) -> list[Engagement]:
    """``order``: "due" (by due date, the unscheduled last), "priority" (highest first,
    then by due date, the unscheduled last: a CSM's inbox; no ``after``) or "opened"
    (newest first), ties by id. ``after``: the ``sort_key`` of the previous page's last
    item. ``statuses``: only these (the inbox: the open ones)."""
    q = select(Engagement).limit(limit)
    if statuses is not None:
        q = q.where(Engagement.status.in_(sorted(statuses)))
    for col, value in (
        (Engagement.status, status),
        (Engagement.csm_id, csm_id),
        (Engagement.account_id, account_id),
        (Engagement.goal, goal),
    ):
        if value is not None:
            q = q.where(col == value)
    if order == "priority":
        q = q.order_by(Engagement.priority.desc(), Engagement.due_at.is_(None), Engagement.due_at, Engagement.id)
    elif order == "due":
        q = q.order_by(Engagement.due_at.is_(None), Engagement.due_at, Engagement.id)
        if after is not None:
            due, eid = after
            q = q.where(
                or_(Engagement.due_at.is_(None), Engagement.due_at > due, and_(Engagement.due_at == due, Engagement.id > eid))
                if due is not None
                else and_(Engagement.due_at.is_(None), Engagement.id > eid)
            )
    else:
        q = q.order_by(Engagement.opened_at.desc(), Engagement.id)
        if after is not None:
            opened, eid = after
            q = q.where(or_(Engagement.opened_at < opened, and_(Engagement.opened_at == opened, Engagement.id > eid)))
    return list(session.scalars(q))


def for_account(session: Session, account_id: str, exclude: str | None = None) -> list[Engagement]:
    q = select(Engagement).where(Engagement.account_id == account_id).order_by(Engagement.opened_at.desc())
    if exclude:
        q = q.where(Engagement.id != exclude)
    return list(session.scalars(q))


def events_of(session: Session, engagement_id: str, *, after: int | None = None, limit: int | None = None) -> list[EngagementEvent]:
    q = select(EngagementEvent).where(EngagementEvent.engagement_id == engagement_id).order_by(EngagementEvent.id).limit(limit)
    if after is not None:
        q = q.where(EngagementEvent.id > after)
    return list(session.scalars(q))


def add_event(session: Session, **row: Any) -> EngagementEvent:
    event = EngagementEvent(**row)
    session.add(event)
    return event


# ---- what automation did for the account -------------------------------------


def account_messages(session: Session, account_id: str, since: datetime, limit: int = 200) -> list[Message]:
    """What automation and CSMs sent about the account (touches included), newest first;
    not the engagement notices to CSMs (internal mail about the engagement itself)."""
    return list(
        session.scalars(
            select(Message)
            .where(
                Message.account_id == account_id,
                Message.created_at >= since,
                ~((Message.audience == "internal") & Message.step_id.startswith("engagement.")),
            )
            .order_by(Message.created_at.desc(), Message.id)
            .limit(limit)
        )
    )


def enrollment_unsent_until(session: Session, enrollment_id: str) -> datetime | None:
    """The latest time one of the enrolment's messages is still due to leave (queued,
    deferred for quiet hours or retrying, or being sent), or None when every one has
    gone (sent, skipped, failed or uncertain)."""
    return session.scalar(
        select(func.max(func.coalesce(Message.next_attempt_at, Message.created_at))).where(
            Message.enrollment_id == enrollment_id, Message.state.in_(("queued", "sending"))
        )
    )


def account_enrollments(session: Session, account_id: str, limit: int = 50) -> list[Enrollment]:
    return list(
        session.scalars(select(Enrollment).where(Enrollment.account_id == account_id).order_by(Enrollment.enrolled_at.desc()).limit(limit))
    )


def wake_enrollment(session: Session, enrollment_id: str, now: datetime) -> None:
    """An enrolment waiting for this engagement's outcome runs its step again now."""
    session.execute(
        update(Enrollment).where(Enrollment.id == enrollment_id, Enrollment.status == "active").values(due_at=now),
        execution_options={"synchronize_session": False},
    )


def insert_messages(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    if not rows:
        return set()
    table = Message.__table__
    stmt = insert_on_conflict(session, table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    return set(session.scalars(stmt, rows))


# ---- reporting ------------------------------------------------------------------


def counts_by_status_outcome(session: Session) -> list[tuple[str, str | None, int]]:
    return list(
        session.execute(select(Engagement.status, Engagement.outcome, func.count()).group_by(Engagement.status, Engagement.outcome))
    )


def queue_stats(session: Session) -> tuple[int, datetime | None]:
    row = session.execute(select(func.count(), func.min(Engagement.opened_at)).where(Engagement.status == "queued")).one()
    return row[0] or 0, row[1]


def closed_for_outcomes(session: Session, since: datetime | None = None) -> list[Engagement]:
    """Closed engagements and measured held-out rows: the population of the outcome report."""
    q = select(Engagement).where(Engagement.closed_at.is_not(None), Engagement.status.in_(("resolved", "expired", "held_out")))
    if since is not None:
        q = q.where(Engagement.opened_at >= since)
    return list(session.scalars(q))


def history_start(session: Session) -> datetime | None:
    """When outreach's history begins: its first signal received or engagement opened
    (None before either)."""
    first = session.execute(select(func.min(SignalReceipt.received_at))).scalar()
    first_opened = session.execute(select(func.min(Engagement.opened_at))).scalar()
    return min([t for t in (first, first_opened) if t is not None], default=None)


def received_since(session: Session, since: datetime) -> list[tuple[str, str, int]]:
    """(rule, kind, signals received) since ``since``, by rule and kind."""
    return [
        (rule_id, kind, n)
        for rule_id, kind, n in session.execute(
            select(SignalReceipt.rule_id, SignalReceipt.kind, func.count())
            .where(SignalReceipt.received_at >= since)
            .group_by(SignalReceipt.rule_id, SignalReceipt.kind)
            .order_by(SignalReceipt.rule_id, SignalReceipt.kind)
        )
    ]


def opened_by_playbook(session: Session, since: datetime) -> dict[str | None, int]:
    """Engagements opened since ``since`` per playbook (None: opened by hand or by the API),
    held-out ones included: one grouped count, not a row per engagement."""
    q = select(Engagement.playbook_id, func.count()).where(Engagement.opened_at >= since).group_by(Engagement.playbook_id)
    return {playbook_id: int(n) for playbook_id, n in session.execute(q)}


def mean_open_days(session: Session, since: datetime, now: datetime) -> tuple[float | None, int, int]:
    """Mean days open (opened to closed) of the engagements opened since ``since``, held-out
    rows left out (they are never open), with how many were closed and how many still
    open. A still-open one counts to its due date (its time-box expires it then at the
    latest), or to now if already past it: counting only the closed ones would measure
    the quick closes and call a pool full of open engagements empty. Summed in SQL (the
    pool page at 100,000 engagements spent seconds reading them one by one)."""
    total, n, closed = session.execute(
        select(func.sum(_seconds_open(session, now)), func.count(), func.count(Engagement.closed_at)).where(
            Engagement.opened_at >= since, Engagement.status != "held_out"
        )
    ).one()
    return mean_open_of(float(total or 0), int(n), int(closed))


def mean_open_of(total_seconds: float, n: int, closed: int) -> tuple[float | None, int, int]:
    """(mean days open, closed, still open) from the summed seconds open of ``n`` engagements."""
    if not n:
        return None, 0, 0
    return total_seconds / n / 86400, closed, n - closed


def _seconds_open(session: Session, now: datetime) -> Any:
    """An engagement's seconds open: to its close, or if still open to its due date (now if past it)."""
    still_open_until = case((Engagement.due_at > now, Engagement.due_at), else_=literal(now, UTCDateTime()))
    end = func.coalesce(Engagement.closed_at, still_open_until)
    if _pg(session):
        return func.extract("epoch", end - Engagement.opened_at)
    return (func.julianday(end) - func.julianday(Engagement.opened_at)) * 86400.0


def received_rows(session: Session, since: datetime) -> list[tuple[str, datetime, str, str]]:
    """(account, received at, rule, kind) of each signal received since ``since``: what
    :func:`received_since` counts, row by row, for the forecast by segment (membership as
    of each row)."""
    q = select(SignalReceipt.account_id, SignalReceipt.received_at, SignalReceipt.rule_id, SignalReceipt.kind).where(
        SignalReceipt.received_at >= since
    )
    return [(a, at, rule_id, kind) for a, at, rule_id, kind in session.execute(q)]


def opened_rows(session: Session, since: datetime, now: datetime) -> list[tuple[str, datetime, str | None, bool, float | None]]:
    """(account, opened at, playbook, closed, seconds open; None for a held-out row) of each
    engagement opened since ``since``: what :func:`opened_by_playbook` and
    :func:`mean_open_days` count, row by row (the same seconds open), for the forecast by segment."""
    seconds = case((Engagement.status == "held_out", None), else_=_seconds_open(session, now))
    q = select(Engagement.account_id, Engagement.opened_at, Engagement.playbook_id, Engagement.closed_at.is_not(None), seconds).where(
        Engagement.opened_at >= since
    )
    return [(a, at, pid, bool(closed), None if s is None else float(s)) for a, at, pid, closed, s in session.execute(q)]


def enabled_playbook_definitions(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """(playbook id, current definition) of every enabled playbook: the forecast looks
    for escalating ones. Read here so engagements need nothing of the playbooks package
    (which imports engagements for the open_engagement step)."""
    q = (
        select(Playbook.id, PlaybookVersion.definition)
        .join(PlaybookVersion, (PlaybookVersion.playbook_id == Playbook.id) & (PlaybookVersion.version == Playbook.current_version))
        .where(Playbook.enabled.is_(True))
        .order_by(Playbook.id)
    )
    return [(pid, definition) for pid, definition in session.execute(q)]


def due_counts(session: Session, now: datetime, until: datetime) -> tuple[int, int, int]:
    """Open engagements: all of them, those due in [now, until), and those overdue (one query)."""
    open_ = Engagement.status.in_(OPEN_ENGAGEMENT_STATUSES)
    row = session.execute(
        select(
            func.count(),
            func.count().filter((Engagement.due_at >= now) & (Engagement.due_at < until)),
            func.count().filter(Engagement.due_at < now),
        )
        .select_from(Engagement)
        .where(open_)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


# The engagements list's sortable columns (the console's table headings).
ENGAGEMENT_SORTS: dict[str, Any] = {
    "account": Engagement.account_id,
    "goal": Engagement.goal,
    "status": Engagement.status,
    "csm": Engagement.csm_id,
    "priority": Engagement.priority,
    "due_at": Engagement.due_at,
    "outcome": Engagement.outcome,
    "opened": Engagement.opened_at,
}


def find_engagements(
    session: Session,
    *,
    statuses: Collection[str] | None = None,
    csm_id: str | None = None,
    goal: str | None = None,
    outcome: str | None = None,
    due_from: datetime | None = None,
    due_before: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
    sort: str = "due",
    descending: bool | None = None,
) -> tuple[list[Engagement], int]:
    """The console's engagements list: a page (open first by due date, the unscheduled last,
    then the closed newest first; ties by id) of the engagements matching every filter
    given, and how many match. ``sort``: "due" (that order, ties by id), or a column of
    :data:`ENGAGEMENT_SORTS` (the console's sortable headings) either way, NULLs last and
    ties by id the same way (shared/pagination.py ``sorted_after``); ``descending`` None:
    priority and opened in their indexed order (highest, newest first), others ascending. ``due_from``/``due_before``: due in [from, before). The
    overview's open, due-this-week and overdue figures are counts of this list with the
    same filters as :func:`due_counts` (open statuses, and the due window)."""
    conditions: list[Any] = []
    for col, value in ((Engagement.csm_id, csm_id), (Engagement.goal, goal), (Engagement.outcome, outcome)):
        if value:
            conditions.append(col == value)
    if statuses is not None:
        conditions.append(Engagement.status.in_(sorted(statuses)))
    if due_from is not None:
        conditions.append(Engagement.due_at >= due_from)
    if due_before is not None:
        conditions.append(Engagement.due_at < due_before)
    total = session.scalar(select(func.count()).select_from(Engagement).where(*conditions)) or 0
    # The open statuses as literals, not parameters: the ORDER BY is then, word for word, the
    # expression index of migration 0022 (ix_engagements_list_order), and a page reads its
    # offset plus a page of index entries instead of sorting the table.
    closed = ~Engagement.status.in_([literal_column(f"'{s}'") for s in sorted(OPEN_ENGAGEMENT_STATUSES)])
    orders: dict[str, tuple[Any, ...]] = {
        "due": (closed, Engagement.due_at.is_(None), Engagement.due_at, Engagement.opened_at.desc()),
        "priority": (Engagement.priority.desc(),),
        "opened": (Engagement.opened_at.desc(),),
    }
    q = select(Engagement).where(*conditions).offset(offset).limit(limit)
    if sort in ENGAGEMENT_SORTS and (descending is not None or sort not in orders):
        # A column either way (NULLs last, ties by id the same way); priority and opened
        # without a direction keep their indexed order above.
        desc = descending if descending is not None else False
        q = sorted_after(q, ENGAGEMENT_SORTS[sort], Engagement.id, descending=desc, anchor=None)
    else:
        q = q.order_by(*orders.get(sort, orders["due"]), Engagement.id)
    return list(session.scalars(q)), int(total)
