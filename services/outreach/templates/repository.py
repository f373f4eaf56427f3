"""Every query on templates."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.outreach.models import Template


def get(session: Session, template_id: str) -> Template | None:
    return session.get(Template, template_id)


def get_many(session: Session, ids: Iterable[str]) -> dict[str, Template]:
    ids = list(set(ids))
    if not ids:
        return {}
    return {t.id: t for t in session.scalars(select(Template).where(Template.id.in_(ids)))}


def list_all(session: Session, *, after: str | None = None, limit: int | None = None) -> list[Template]:
    q = select(Template).order_by(Template.id).limit(limit)
    if after:
        q = q.where(Template.id > after)
    return list(session.scalars(q))
