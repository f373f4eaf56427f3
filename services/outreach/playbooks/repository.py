"""Every query on playbooks, enrolments, signal receipts and decisions (recipients come from
ingest's read model, services/ingest/interface.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from services.outreach.models import Enrollment, Message, OutreachDecision, Playbook, PlaybookVersion, SignalReceipt
from shared.db import insert_absent, insert_new, is_in
from shared.pagination import sorted_after


def get_head(session: Session, playbook_id: str) -> Playbook | None:
    return session.get(Playbook, playbook_id)


def get_version(session: Session, playbook_id: str, version: int) -> PlaybookVersion | None:
    return session.get(PlaybookVersion, (playbook_id, version))


def versions_of(session: Session, playbook_id: str) -> list[int]:
    return list(
        session.scalars(select(PlaybookVersion.version).where(PlaybookVersion.playbook_id == playbook_id).order_by(PlaybookVersion.version))
    )


def list_heads(session: Session, *, after: str | None = None, limit: int | None = None) -> list[Playbook]:
    q = select(Playbook).order_by(Playbook.id).limit(limit)
    if after:
        q = q.where(Playbook.id > after)
    return list(session.scalars(q))


def enabled_current(session: Session) -> list[tuple[Playbook, PlaybookVersion]]:
    q = (
        select(Playbook, PlaybookVersion)
        .join(PlaybookVersion, (PlaybookVersion.playbook_id == Playbook.id) & (PlaybookVersion.version == Playbook.current_version))
        .where(Playbook.enabled.is_(True))
        .order_by(Playbook.id)
    )
    return [(p, v) for p, v in session.execute(q)]


def record_signals(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert signal receipts; returns the signal ids seen for the first time."""
    return insert_new(session, SignalReceipt.__table__, rows, ["signal_id"], binary=True)


def record_new_decisions(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert one decision per signal, for signals whose receipts this transaction has
    just inserted (:func:`record_signals`): a decision is only ever written with its
    receipt, and neither is deleted, so none of them can exist and a large batch is
    loaded straight into the table (:func:`shared.db.insert_absent`). Returns the new
    ids."""
    return insert_absent(session, OutreachDecision.__table__, rows, "signal_id", binary=True)


def signals_with_decision(session: Session, signal_ids: Iterable[str]) -> set[str]:
    """The subset of ``signal_ids`` that have an outreach decision (one query per 900 ids)."""
    ids = sorted(set(signal_ids))
    out: set[str] = set()
    for i in range(0, len(ids), 900):
        out.update(session.scalars(select(OutreachDecision.signal_id).where(OutreachDecision.signal_id.in_(ids[i : i + 900]))))
    return out


def enrollment_conflicts(session: Session, ids: list[str], active_keys: list[str]) -> tuple[set[str], set[str]]:
    """Which of ``ids`` exist, and which of ``active_keys`` a running enrolment holds: one
    statement (none without ids)."""
    if not ids:
        return set(), set()
    t = Enrollment.__table__
    rows = session.execute(
        select(t.c.id, t.c.active_key).where(or_(is_in(session, t.c.id, ids), is_in(session, t.c.active_key, active_keys)))
    )
    found_ids, found_keys = set(), set()
    for i, k in rows:
        found_ids.add(i)
        if k is not None:
            found_keys.add(k)
    return found_ids & set(ids), found_keys


class _EnrolledMeanwhile(Exception):
    sqlstate = "40001"  # serialization_failure: the batch's transaction is retried (shared.db.transient_db_error)


def insert_enrollments_checked(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert enrolments that :func:`enrollment_conflicts` found free (no two sharing an
    id or an ``active_key``). One that a concurrent transaction inserted meanwhile (its
    ``active_key`` or id) fails the transaction as a serialization failure: retried, the
    batch reads it. Since a conflict fails the transaction anyway, a large batch is loaded
    straight into the table (:func:`shared.db.insert_absent`: COPY on PostgreSQL, without
    the staging table and the keyed ``INSERT ... SELECT``), where the conflict is the
    unique violation; a small one is inserted keyed and counted."""
    try:
        inserted = insert_absent(session, Enrollment.__table__, rows, "id", binary=True)
    except Exception as exc:
        if not _unique_violation(exc):
            raise
        raise OperationalError("INSERT INTO enrollments", None, _EnrolledMeanwhile(f"an enrolment inserted concurrently: {exc}")) from exc
    if len(inserted) < len(rows):
        missed = sorted({r["id"] for r in rows} - inserted)
        raise OperationalError(
            "INSERT INTO enrollments", None, _EnrolledMeanwhile(f"{len(missed)} enrolment(s) inserted concurrently, e.g. {missed[0]}")
        )


def _unique_violation(exc: BaseException) -> bool:
    """A unique constraint refused a row (PostgreSQL's 23505, SQLite's UNIQUE or PRIMARY
    KEY constraint), raised by the driver or wrapped by SQLAlchemy."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "sqlite_errorname", None) in (
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    )


def insert_enrollments(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert enrolments in one statement, each unless the account is already active in
    the playbook (the unique ``active_key``) or this very enrolment exists; returns the
    ids inserted. No two rows may share an ``active_key``."""
    return insert_new(session, Enrollment.__table__, rows, ["id"], any_unique=True, binary=True)


# What running steps changes on an enrolment.
RUN_STATE = ("status", "active_key", "step_index", "due_at", "history", "outcome_detail", "ended_at", "converted_at")


def write_run_state(session: Session, enrollments: Iterable[Enrollment]) -> None:
    """Store the run state of enrolments the session does not track (a batch's new
    ones), in one executemany statement."""
    rows = [{"b_id": e.id, **{c: getattr(e, c) for c in RUN_STATE}} for e in enrollments]
    if rows:
        stmt = update(Enrollment.__table__).where(Enrollment.__table__.c.id == bindparam("b_id"))
        session.execute(stmt.values({c: bindparam(c) for c in RUN_STATE}), rows)


def due_enrollments(session: Session, now: datetime, limit: int) -> list[Enrollment]:
    q = (
        select(Enrollment)
        .where(Enrollment.status == "active", Enrollment.due_at <= now)
        .order_by(Enrollment.due_at, Enrollment.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return list(session.scalars(q))


def active_enrollments(session: Session, limit: int) -> list[Enrollment]:
    """Running enrolments (treated and held out), oldest first, for the conversion sweep."""
    q = (
        select(Enrollment)
        .where(Enrollment.status == "active")
        .order_by(Enrollment.playbook_id, Enrollment.playbook_version, Enrollment.enrolled_at)
        .limit(limit)
    )
    return list(session.scalars(q))


def active_enrollments_of(session: Session, account_ids: Iterable[str]) -> list[Enrollment]:
    """Running enrolments (treated and held out) of ``account_ids``, in the order they started."""
    ids = sorted(set(account_ids))
    if not ids:
        return []
    q = (
        select(Enrollment)
        .where(Enrollment.status == "active", is_in(session, Enrollment.account_id, ids))
        .order_by(Enrollment.enrolled_at, Enrollment.id)
    )
    return list(session.scalars(q))


def outreach_status(session: Session, playbook_id: str) -> dict[str, str]:
    """Accounts enrolled in a playbook: ``held_out``, ``reached`` (a message was
    delivered) or ``pending``. Used by the live demo's simulated customers."""
    out = {
        a: ("held_out" if h else "pending")
        for a, h in session.execute(select(Enrollment.account_id, Enrollment.holdout).where(Enrollment.playbook_id == playbook_id))
    }
    sent = select(Message.account_id).where(Message.playbook_id == playbook_id, Message.state == "sent").distinct()
    for a in session.scalars(sent):
        if out.get(a) == "pending":
            out[a] = "reached"
    return out


def list_enrollments(
    session: Session, playbook_id: str, *, status: str | None, account_id: str | None, limit: int, before: str | None = None
) -> list[Enrollment]:
    """Newest first; ``before`` is the id of the last enrolment of the previous page."""
    q = (
        select(Enrollment)
        .where(Enrollment.playbook_id == playbook_id)
        .order_by(Enrollment.enrolled_at.desc(), Enrollment.id.desc())
        .limit(limit)
    )
    if before:
        anchor = session.get(Enrollment, before)
        if anchor is not None:
            q = q.where(
                or_(
                    Enrollment.enrolled_at < anchor.enrolled_at,
                    (Enrollment.enrolled_at == anchor.enrolled_at) & (Enrollment.id < anchor.id),
                )
            )
    if status:
        q = q.where(Enrollment.status == status)
    if account_id:
        q = q.where(Enrollment.account_id == account_id)
    return list(session.scalars(q))


# The enrolments list's sortable columns (the console's table headings).
ENROLLMENT_SORTS: dict[str, Any] = {
    "enrolled": Enrollment.enrolled_at,
    "playbook": Enrollment.playbook_id,
    "account": Enrollment.account_id,
    "status": Enrollment.status,
    "step": Enrollment.step_index,
    "holdout": Enrollment.holdout,
    "ended": Enrollment.ended_at,
}


def _enrollment_filters(playbook_id: str | None, status: str | None, account_id: str | None) -> list[Any]:
    return [
        col == value
        for col, value in ((Enrollment.playbook_id, playbook_id), (Enrollment.status, status), (Enrollment.account_id, account_id))
        if value
    ]


def find_enrollments(
    session: Session,
    *,
    playbook_id: str | None,
    status: str | None,
    account_id: str | None,
    sort: str = "enrolled",
    descending: bool = True,
    after: str | None = None,
    limit: int = 100,
) -> list[Enrollment]:
    """Every playbook's enrolments matching the filters given, ordered by ``sort`` (a key
    of :data:`ENROLLMENT_SORTS`) either way and then the id (shared/pagination.py
    ``sorted_after``); ``after`` is the id of the previous page's last row (one that
    matches no enrolment starts from the first page)."""
    column = ENROLLMENT_SORTS.get(sort, Enrollment.enrolled_at)
    anchor_row = session.get(Enrollment, after) if after else None
    anchor = (getattr(anchor_row, column.key), anchor_row.id) if anchor_row is not None else None
    q = select(Enrollment).where(*_enrollment_filters(playbook_id, status, account_id)).limit(limit)
    return list(session.scalars(sorted_after(q, column, Enrollment.id, descending=descending, anchor=anchor)))


def count_enrollments(session: Session, *, playbook_id: str | None, status: str | None, account_id: str | None) -> int:
    q = select(func.count()).select_from(Enrollment).where(*_enrollment_filters(playbook_id, status, account_id))
    return int(session.scalar(q) or 0)


def enrollment_counts(session: Session, playbook_id: str) -> list[tuple[bool, str, int]]:
    return list(
        session.execute(
            select(Enrollment.holdout, Enrollment.status, func.count())
            .where(Enrollment.playbook_id == playbook_id)
            .group_by(Enrollment.holdout, Enrollment.status)
        )
    )


def enrollment_outcomes(session: Session, playbook_id: str, limit: int) -> list[tuple[str, datetime, bool, str]]:
    """(account, enrolled at, held out, status) of a playbook's newest ``limit`` enrolments."""
    q = (
        select(Enrollment.account_id, Enrollment.enrolled_at, Enrollment.holdout, Enrollment.status)
        .where(Enrollment.playbook_id == playbook_id)
        .order_by(Enrollment.enrolled_at.desc())
        .limit(limit)
    )
    return [(a, at, bool(h), st) for a, at, h, st in session.execute(q)]


def enrollments_for_account(session: Session, account_id: str, limit: int) -> list[Enrollment]:
    q = select(Enrollment).where(Enrollment.account_id == account_id).order_by(Enrollment.enrolled_at.desc()).limit(limit)
    return list(session.scalars(q))


def enrollment_histories(session: Session, playbook_id: str, limit: int) -> list[list[Any]]:
    """The step histories of a playbook's newest ``limit`` enrolments (for its funnel)."""
    q = select(Enrollment.history).where(Enrollment.playbook_id == playbook_id).order_by(Enrollment.enrolled_at.desc()).limit(limit)
    return [h or [] for h in session.scalars(q)]


def enrollment_messages_of(session: Session, account_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """What automation sent (or queued) per enrolment of ``account_ids``, oldest first:
    an internal brief's "what was already tried" (one statement for a whole batch)."""
    q = (
        select(Message.enrollment_id, Message.created_at, Message.channel, Message.recipient, Message.subject, Message.state)
        .where(
            is_in(session, Message.account_id, account_ids),
            Message.enrollment_id.is_not(None),
            Message.state.in_(("queued", "sending", "sent", "uncertain")),
        )
        .order_by(Message.created_at, Message.id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for enrollment_id, at, channel, recipient, subject, state in session.execute(q):
        assert enrollment_id is not None  # the query's filter
        out.setdefault(enrollment_id, []).append({"at": at, "channel": channel, "to": recipient, "subject": subject, "state": state})
    return out
