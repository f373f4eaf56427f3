"""Every query on the scheduled tick's claims (``rule_ticks``): one row per scheduled
rule, when it last ticked, when it is due next and what its last tick found."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.rules.models import RuleTick
from shared.db import insert_on_conflict


def claim_tick(session: Session, rule_id: str, now: datetime, due: datetime) -> bool:
    """Take the rule's tick if it is due (its row's ``due_at`` has passed, or it has no
    row), and make it due next at ``due``. A conditional upsert: with two workers only
    one wins, and a restarted worker does not re-run a tick that committed."""
    t = RuleTick.__table__
    stmt = insert_on_conflict(session, t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["rule_id"],
        set_={"last_tick_at": stmt.excluded.last_tick_at, "due_at": stmt.excluded.due_at},
        where=t.c.due_at <= stmt.excluded.last_tick_at,
    ).returning(t.c.rule_id)
    return bool(list(session.scalars(stmt, [{"rule_id": rule_id, "last_tick_at": now, "due_at": due, "last_result": {}}])))


def record_tick_result(session: Session, rule_id: str, result: dict[str, Any]) -> None:
    """What the rule's last tick found (audience, matched, signals), for the API and console."""
    session.execute(RuleTick.__table__.update().where(RuleTick.rule_id == rule_id).values(last_result=result))
