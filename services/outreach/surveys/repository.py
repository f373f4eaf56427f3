"""Every query of the surveys feature: the answer upsert (latest wins, a replay is no
write) and the answers a survey's results are computed from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from services.outreach.models import SurveyAnswer
from shared.db import insert_on_conflict, is_in, rowcount

TABLE = SurveyAnswer.__table__


def save_answer(session: Session, row: dict[str, Any]) -> bool:
    """Insert the contact's answer, or replace their earlier one if it differs (score or
    comment); True if the row was written. The same answer again (a replayed request,
    a second click on the same score) writes nothing. One statement, safe under
    concurrent answers from the same contact (the conflict clause, not a read first)."""
    stmt = insert_on_conflict(session, TABLE).values(**row, answers=1, first_answered_at=row["answered_at"])
    stmt = stmt.on_conflict_do_update(
        index_elements=["survey_id", "account_id", "user_id"],
        set_={
            "score": stmt.excluded.score,
            "comment": stmt.excluded.comment,
            "scale": stmt.excluded.scale,
            "message_id": stmt.excluded.message_id,
            "playbook_id": stmt.excluded.playbook_id,
            "answered_at": stmt.excluded.answered_at,
            "answers": TABLE.c.answers + 1,
        },
        where=or_(TABLE.c.score != stmt.excluded.score, TABLE.c.comment != stmt.excluded.comment),
    )
    # RETURNING, not rowcount: the drivers disagree on an upsert's rowcount (psycopg said 0 for an insert).
    return session.execute(stmt.returning(TABLE.c.answers)).first() is not None


def answered_of(session: Session, survey_id: str, account_ids: list[str]) -> set[tuple[str, str]]:
    """(account, contact) of every answer to ``survey_id`` from ``account_ids`` (a signal
    batch's accounts: under SQLite's parameter limit, one array parameter on PostgreSQL)."""
    rows = session.execute(
        select(SurveyAnswer.account_id, SurveyAnswer.user_id).where(
            SurveyAnswer.survey_id == survey_id, is_in(session, SurveyAnswer.account_id, account_ids)
        )
    )
    return {(r[0], r[1]) for r in rows}


def answer(session: Session, survey_id: str, account_id: str, user_id: str) -> SurveyAnswer | None:
    return session.get(SurveyAnswer, (survey_id, account_id, user_id))


def answers_between(session: Session, survey_id: str, start: datetime, end: datetime) -> list[tuple[datetime, int, str]]:
    """(answered_at, score, account_id) of each contact's latest answer given in [start, end)."""
    rows = session.execute(
        select(SurveyAnswer.answered_at, SurveyAnswer.score, SurveyAnswer.account_id)
        .where(SurveyAnswer.survey_id == survey_id, SurveyAnswer.answered_at >= start, SurveyAnswer.answered_at < end)
        .order_by(SurveyAnswer.answered_at)
    )
    return [(r[0], r[1], r[2]) for r in rows]


def scale_of(session: Session, survey_id: str) -> str | None:
    return session.scalar(select(SurveyAnswer.scale).where(SurveyAnswer.survey_id == survey_id).limit(1))


def scrub_comments(session: Session, account_id: str, user_id: str) -> int:
    """Blank a contact's survey comments (free text they wrote); their scores stay in the
    results, under the contact's id like the rest of what was kept of them."""
    stmt = (
        update(SurveyAnswer)
        .where(SurveyAnswer.account_id == account_id, SurveyAnswer.user_id == user_id, SurveyAnswer.comment != "")
        .values(comment="")
    )
    return rowcount(session.execute(stmt))


def surveys(session: Session, *, after: str | None = None, limit: int = 100) -> list[tuple[str, str, int, datetime]]:
    """(survey, scale, contacts who answered, latest answer) of every survey answered, by
    id, in pages (after ``after``): one grouped statement."""
    q = (
        select(SurveyAnswer.survey_id, func.min(SurveyAnswer.scale), func.count(), func.max(SurveyAnswer.answered_at))
        .group_by(SurveyAnswer.survey_id)
        .order_by(SurveyAnswer.survey_id)
        .limit(limit)
    )
    if after:
        q = q.where(SurveyAnswer.survey_id > after)
    return [(r[0], r[1], int(r[2]), r[3]) for r in session.execute(q)]
