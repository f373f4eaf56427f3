"""The time-box: when an engagement's next reminder is due, and the tick that sends due
reminders, expires engagements past their due time and measures held-out ones at the
end of theirs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from services.outreach.engagements import notices
from services.outreach.engagements import repository as repo
from services.outreach.engagements.closing import close
from services.outreach.engagements.transitions import event, transition
from services.outreach.models import Engagement
from shared.settings import Settings


def next_reminder(e: Engagement, settings: Settings, now: datetime) -> datetime | None:
    """The earliest reminder not yet sent that is still ahead (a reminder whose time
    had passed before the engagement was assigned is never sent late)."""
    if e.due_at is None:
        return None
    sent = set(float(d) for d in (e.reminders_sent or []))
    times = [e.due_at - timedelta(days=d) for d in settings.engagement_reminders if d not in sent]
    ahead = [t for t in times if t > (e.assigned_at or now) - timedelta(seconds=1) and t < e.due_at]
    return min(ahead) if ahead else None


def reminder_due(e: Engagement, now: datetime) -> datetime | None:
    """When the CSM was (or is now to be) reminded about ``e``: the latest of the
    reminders already sent (``reminders_sent``, days before the due time) and the next
    one if its time has come; None when no reminder has come due. The inbox lists the
    open engagements that have one."""
    if e.due_at is None:
        return None
    times = [e.due_at - timedelta(days=float(d)) for d in (e.reminders_sent or [])]
    if e.next_reminder_at is not None and e.next_reminder_at <= now:
        times.append(e.next_reminder_at)
    passed = [t for t in times if t <= now]
    return max(passed) if passed else None


def run_timers(session: Session, now: datetime, settings: Settings, limit: int = 500) -> dict[str, int]:
    """Send due reminders, expire engagements past their due time (and measure held-out
    rows at the end of theirs). Rows are claimed with SKIP LOCKED on PostgreSQL."""
    reminded = expired = measured = 0
    for e in repo.reminders_due(session, now, limit):
        days_left = max(0.0, (e.due_at - now).total_seconds() / 86400) if e.due_at else 0.0
        due_reminders = [
            d
            for d in settings.engagement_reminders
            if e.due_at and e.due_at - timedelta(days=d) <= now and float(d) not in set(map(float, e.reminders_sent or []))
        ]
        csm = repo.get_csm(session, e.csm_id) if e.csm_id else None
        if csm is not None and due_reminders:
            notices.reminder(session, e, csm, now, settings, days_left=days_left, tag=str(min(due_reminders)))
            event(session, e, "reminder", actor="system:engagements", now=now, days_left=round(days_left, 2), csm_id=csm.id)
            reminded += 1
        e.reminders_sent = list(e.reminders_sent or []) + [float(d) for d in due_reminders]
        e.next_reminder_at = next_reminder(e, settings, now)
    for e in repo.expiring(session, now, limit):
        if e.status == "held_out":
            close(session, e, now, settings)
            measured += 1
        else:
            transition(session, e, "expired", actor="system:engagements", now=now, due_at=e.due_at)
            close(session, e, now, settings)
            expired += 1
    session.flush()
    return {"reminded": reminded, "expired": expired, "held_out_measured": measured}
