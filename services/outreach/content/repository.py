"""Every query on the content library, and the messages' record of which resource each
contact received."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import String, cast, delete, or_, select
from sqlalchemy.orm import Session

from services.outreach.content.schemas import TAGS
from services.outreach.models import Message, Resource
from shared.db import is_in, rowcount

RECEIVED_STATES = ("queued", "sending", "sent")


def get(session: Session, resource_id: str) -> Resource | None:
    return session.get(Resource, resource_id)


def get_many(session: Session, ids: Iterable[str]) -> dict[str, Resource]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {r.id: r for r in session.scalars(select(Resource).where(Resource.id.in_(wanted)))}


def _has_tag(session: Session, column: Any, value: str) -> Any:
    """``value`` is one of the JSON list's strings: matched on the list's serialised text,
    the quotes included so a prefix does not match (SQLite stores JSON ASCII-escaped,
    PostgreSQL's JSONB prints it as it is)."""
    needle = json.dumps(value, ensure_ascii=session.get_bind().dialect.name != "postgresql")
    escaped = needle.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return cast(column, String).like(f"%{escaped}%", escape="!")


def list_resources(
    session: Session,
    *,
    kind: str | None = None,
    goal: str | None = None,
    tag: str | None = None,
    language: str | None = None,
    enabled: bool | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[Resource]:
    """By id; ``tag`` matches a value in any tag list."""
    q = select(Resource).order_by(Resource.id).limit(limit)
    if after:
        q = q.where(Resource.id > after)
    if kind:
        q = q.where(Resource.kind == kind)
    if language:
        q = q.where(Resource.language == language)
    if enabled is not None:
        q = q.where(Resource.enabled.is_(enabled))
    if goal:
        q = q.where(_has_tag(session, Resource.goals, goal))
    if tag:
        q = q.where(or_(*(_has_tag(session, getattr(Resource, t), tag) for t in TAGS)))
    return list(session.scalars(q))


def enabled_resources(session: Session) -> list[Resource]:
    """The library a recommend step chooses from, by id."""
    return list(session.scalars(select(Resource).where(Resource.enabled.is_(True)).order_by(Resource.id)))


def remove(session: Session, resource_id: str) -> bool:
    return bool(rowcount(session.execute(delete(Resource).where(Resource.id == resource_id))))


def received_of(session: Session, account_ids: Iterable[str]) -> dict[str, dict[str, set[str]]]:
    """Per account, per recipient (user id, else address), the resources messages queued
    or sent to them named: one statement for all the accounts."""
    ids = list(set(account_ids))
    out: dict[str, dict[str, set[str]]] = {}
    if not ids:
        return out
    q = select(Message.account_id, Message.user_id, Message.recipient, Message.resource_id).where(
        is_in(session, Message.account_id, ids), Message.resource_id.is_not(None), Message.state.in_(RECEIVED_STATES)
    )
    for account_id, user_id, recipient, resource_id in session.execute(q):
        out.setdefault(account_id, {}).setdefault(user_id or recipient, set()).add(str(resource_id))
    return out
