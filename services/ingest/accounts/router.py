"""Accounts and users (contacts): read their state, set their traits, read usage rollups."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from services.ingest.accounts.schemas import (
    AccountIn,
    AccountPage,
    UsageDay,
    UsageOut,
    UsageTotals,
    UserIn,
    UserOut,
    UserPage,
)
from services.ingest.accounts.service import usage_report
from services.ingest.models import User
from services.ingest.repository import accounts as repo
from services.ingest.repository import metrics
from services.ingest.service import apply_account_traits, apply_user_traits, new_account, new_user
from services.ingest.snapshots import AccountInfo
from shared.api import ClockDep, PathId, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.pagination import next_key

router = APIRouter(tags=["accounts"])

MAX_USAGE_DAYS = 400
READERS = ("ops", "csm")
WRITERS = ("ops", "ingest")


def _account_or_404(session: Session, account_id: str) -> AccountInfo:
    account = repo.account(session, account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}; accounts are created by their first event or by PUT /v1/accounts/{{id}}")
    return account


def _user_or_404(session: Session, account_id: str, user_id: str) -> User:
    user = repo.get_user(session, account_id, user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r} in account {account_id!r}")
    return user


@router.put(
    "/v1/accounts/{account_id}",
    response_model=AccountInfo,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Create an account or update its traits (like a Segment group call)",
)
def put_account(
    body: AccountIn, account_id: PathId, session: Session = SessionDep, clock: Clock = ClockDep, _p: Principal = require(*WRITERS)
) -> AccountInfo:
    now = clock.now()
    account = repo.get_account(session, account_id)
    if account is None:
        account = new_account(account_id, now)
        session.add(account)
    apply_account_traits(account, body, now, now)
    session.flush()
    return repo.snapshot(account)


@router.get("/v1/accounts/{account_id}", response_model=AccountInfo, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_account(account_id: PathId, session: Session = SessionDep, _p: Principal = require(*READERS)) -> AccountInfo:
    return _account_or_404(session, account_id)


@router.get(
    "/v1/accounts",
    response_model=AccountPage,
    responses=AUTH_ERRORS,
    summary="List accounts, filtered by segment, lifecycle stage and plan, in pages ordered by id",
)
def list_accounts(
    segment: str | None = None,
    lifecycle_stage: str | None = None,
    plan: str | None = None,
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> AccountPage:
    items = repo.list_accounts(session, segment=segment, lifecycle_stage=lifecycle_stage, plan=plan, after=cursor, limit=limit)
    return AccountPage(items=items, next_cursor=next_key(items, limit, lambda a: a.id))


def _window(start: date | None, end: date | None, days: int, clock: Clock) -> tuple[date, date]:
    end = end or clock.now().date()
    if start is None:
        if end.toordinal() < days:  # date.min is ordinal 1: the window would start before it
            raise Unprocessable(f"the {days} days ending {end} start before 0001-01-01; pass a later end, a start, or fewer days")
        start = end - timedelta(days=days - 1)
    if start > end:
        raise Unprocessable(f"start {start} is after end {end}; pick start <= end")
    if (end - start).days + 1 > MAX_USAGE_DAYS:
        raise Unprocessable(f"window of {(end - start).days + 1} days; ask for at most {MAX_USAGE_DAYS} days at a time")
    return start, end


WINDOW_DOC = "UTC days, inclusive. Defaults: the `days` days ending today (clock time)."
WindowDays = Query(28, ge=1, le=MAX_USAGE_DAYS)


@router.get(
    "/v1/accounts/{account_id}/usage",
    response_model=UsageOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Daily usage rollups of an account over a window",
    description=WINDOW_DOC,
)
def account_usage(
    account_id: PathId,
    start: date | None = None,
    end: date | None = None,
    days: int = WindowDays,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require(*READERS),
) -> UsageOut:
    _account_or_404(session, account_id)
    start, end = _window(start, end, days, clock)
    return usage_report(session, account_id, start, end)


@router.put(
    "/v1/accounts/{account_id}/users/{user_id}",
    response_model=UserOut,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Create a user (contact) or update its traits (like a Segment identify call)",
)
def put_user(
    body: UserIn,
    account_id: PathId,
    user_id: PathId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require(*WRITERS),
) -> User:
    now = clock.now()
    if repo.get_account(session, account_id) is None:
        session.add(new_account(account_id, now))
        session.flush()
    user = repo.get_user(session, account_id, user_id)
    if user is None:
        user = new_user(account_id, user_id, now)
        session.add(user)
    apply_user_traits(user, body, now, now)
    session.flush()
    return user


@router.get("/v1/accounts/{account_id}/users/{user_id}", response_model=UserOut, responses={**AUTH_ERRORS, **responses(NotFound)})
def get_user(account_id: PathId, user_id: PathId, session: Session = SessionDep, _p: Principal = require(*READERS)) -> User:
    return _user_or_404(session, account_id, user_id)


@router.get(
    "/v1/accounts/{account_id}/users",
    response_model=UserPage,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="List an account's users, optionally by role",
)
def list_users(
    account_id: PathId,
    role: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require(*READERS),
) -> UserPage:
    _account_or_404(session, account_id)
    items = repo.list_users(session, account_id, role=role, after=cursor, limit=limit)
    return UserPage(items=items, next_cursor=next_key(items, limit, lambda u: u.id))


@router.get(
    "/v1/accounts/{account_id}/users/{user_id}/usage",
    response_model=UsageOut,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="Daily activity of one user over a window",
    description=WINDOW_DOC,
)
def user_usage(
    account_id: PathId,
    user_id: PathId,
    start: date | None = None,
    end: date | None = None,
    days: int = WindowDays,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    _p: Principal = require(*READERS),
) -> UsageOut:
    _user_or_404(session, account_id, user_id)
    start, end = _window(start, end, days, clock)
    activity = metrics.user_activity_by_day(session, account_id, user_id, start, end)
    return UsageOut(
        account_id=account_id,
        user_id=user_id,
        start=start,
        end=end,
        totals=UsageTotals(events=sum(activity.values()), by_event={}, active_users=1 if activity else 0, active_days=len(activity)),
        last_seen=metrics.user_last_seen_by_event(session, account_id, user_id),
        days=[UsageDay(day=d, events=n, by_event={}, active_users=1) for d, n in sorted(activity.items())],
    )
