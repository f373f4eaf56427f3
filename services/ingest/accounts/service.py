"""Read models of an account that the API and the console both show."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy.orm import Session

from services.ingest import repository as repo
from services.ingest.accounts.schemas import UsageDay, UsageOut, UsageTotals


def usage_report(session: Session, account_id: str, start: date, end: date) -> UsageOut:
    """Daily usage of an account over [start, end]: events by name and active users."""
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for day, name, count in repo.usage_by_day(session, account_id, start, end):
        by_day[day][name] = count
        totals[name] += count
    active = repo.active_users_by_day(session, account_id, start, end)
    days_out = [
        UsageDay(day=d, events=sum(by_day[d].values()), by_event=by_day[d], active_users=active.get(d, 0))
        for d in sorted(set(by_day) | set(active))
    ]
    return UsageOut(
        account_id=account_id,
        start=start,
        end=end,
        totals=UsageTotals(
            events=sum(totals.values()),
            by_event=dict(totals),
            active_users=repo.distinct_active_users(session, account_id, start, end),
            active_days=len(by_day),
        ),
        last_seen=repo.account_last_seen(session, account_id),
        days=days_out,
    )
