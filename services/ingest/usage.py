"""The ingest service's published read model: accounts, contacts by role, daily usage
series and active users. Other services import this module and nothing else of
``services.ingest`` (the import-linter contracts check it). Reads only; the caller
owns the session.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.ingest import repository as _repo
from services.ingest.models import Account, User, UserActivityDaily

__all__ = ["Account", "User", "account_ids", "active_users", "daily_series", "get_account", "get_accounts", "users_by_role"]

get_account = _repo.get_account
get_accounts = _repo.get_accounts


def account_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Account.id).order_by(Account.id)))


def users_by_role(session: Session, account_id: str, roles: Iterable[str] | None = None) -> list[User]:
    """An account's contacts, by id; only those with one of ``roles`` when given."""
    q = select(User).where(User.account_id == account_id).order_by(User.id)
    if roles is not None:
        q = q.where(User.role.in_(list(roles)))
    return list(session.scalars(q))


def active_users(session: Session, account_id: str, since: date, until: date) -> list[User]:
    active = (select(UserActivityDaily.user_id).where(UserActivityDaily.account_id == account_id,
                                                      UserActivityDaily.day >= since, UserActivityDaily.day <= until)
              .distinct())
    return list(session.scalars(select(User).where(User.account_id == account_id, User.id.in_(active)).order_by(User.id)))


def daily_series(session: Session, account_id: str, until: date, days: int) -> list[dict]:
    """One entry per UTC day of the ``days`` ending at ``until`` (gaps filled with 0):
    distinct active users and the count of each event."""
    start = until - timedelta(days=days - 1)
    active = _repo.active_users_by_day(session, account_id, start, until)
    events: dict[date, dict[str, int]] = {}
    for day, name, count in _repo.usage_by_day(session, account_id, start, until):
        events.setdefault(day, {})[name] = count
    return [{"day": (start + timedelta(days=i)).isoformat(), "active_users": active.get(start + timedelta(days=i), 0),
             "events": events.get(start + timedelta(days=i), {})} for i in range(days)]


def count_accounts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Account)) or 0
