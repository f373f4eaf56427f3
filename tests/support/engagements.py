"""Helpers for the engagement tests: CSMs on the roster, csm keys, engagements opened
through the service, the engagements worker."""

from __future__ import annotations

from sqlalchemy import select

from services.outreach.engagements import opening
from services.outreach.engagements.worker import EngagementWorker
from services.outreach.models import Engagement, EngagementEvent
from shared.auth import create_key
from shared.db import transaction


def csm_body(name: str = "Grace Hopper", capacity: int = 5, **extra) -> dict:
    return {"name": name, "email": f"{name.split()[0].lower()}@pool.test", "timezone": "Europe/London", "capacity": capacity, **extra}


async def add_csm(api, ops_key: str, csm_id: str, **body) -> dict:
    r = await api.put(f"/v1/csms/{csm_id}", json=csm_body(**body), headers={"Authorization": f"Bearer {ops_key}"})
    assert r.status_code == 200, r.text
    return r.json()


def csm_key(session_factory, clock, csm_id: str) -> str:
    with transaction(session_factory) as s:
        _row, key = create_key(s, role="csm", name=f"key of {csm_id}", now=clock.now(), csm_id=csm_id)
    return key


def open_engagement(
    session_factory, settings, clock, account_id: str = "acme", goal: str = "recover_usage", signal: dict | None = None, **kw
) -> str:
    with transaction(session_factory) as s:
        e, _opened = opening.open_engagement(
            s, account_id=account_id, goal=goal, actor="test", now=clock.now(), settings=settings, signal=signal, **kw
        )
        return e.id


def engagement(session_factory, engagement_id: str) -> Engagement:
    with session_factory() as s:
        return s.get(Engagement, engagement_id)


def engagements(session_factory, **where) -> list[Engagement]:
    with session_factory() as s:
        q = select(Engagement).order_by(Engagement.opened_at, Engagement.id)
        for k, v in where.items():
            q = q.where(getattr(Engagement, k) == v)
        return list(s.scalars(q))


def timeline(session_factory, engagement_id: str) -> list[EngagementEvent]:
    with session_factory() as s:
        return list(s.scalars(select(EngagementEvent).where(EngagementEvent.engagement_id == engagement_id).order_by(EngagementEvent.id)))


def worker(settings, session_factory, clock) -> EngagementWorker:
    return EngagementWorker(settings, session_factory, clock)
