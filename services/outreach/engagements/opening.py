"""Opening an engagement (from a playbook step, a signal or by hand), or attaching a
signal to the account's open one; its priority, title, automation summary and the
baseline the automatic outcome is later measured against.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.ingest.interface import AccountInfo
from services.outreach.engagements import repository as repo
from services.outreach.engagements.priority import priority
from services.outreach.engagements.transitions import event, jsonable
from services.outreach.models import Engagement
from services.rules.interface import health_summary, measure
from shared import audit
from shared.errors import Conflict, Unprocessable
from shared.settings import Settings

NAMESPACE = uuid.UUID("0b5c3f2e-7a0d-4c61-9d7e-6e2b1f4a8c33")
BASELINE_WINDOW_DAYS = 28
BASELINE_METRIC = {"metric": "active_users", "window": f"{BASELINE_WINDOW_DAYS}d"}


def engagement_id(account_id: str, goal: str, key: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{account_id}\x1f{goal}\x1f{key}"))


def automation_summary(session: Session, account_id: str, now: datetime, days: int = 90) -> dict[str, Any]:
    """What automation has done for the account: messages sent and skipped (and why),
    and every playbook path it took."""
    msgs = [m for m in repo.account_messages(session, account_id, now - timedelta(days=days)) if m.channel != "csm"]
    skipped: dict[str, int] = {}
    for m in msgs:
        if m.state == "skipped":
            skipped[m.skip_reason or "unknown"] = skipped.get(m.skip_reason or "unknown", 0) + 1
    return jsonable(
        {
            "messages": [
                {
                    "id": m.id,
                    "playbook_id": m.playbook_id,
                    "step_id": m.step_id,
                    "channel": m.channel,
                    "user_id": m.user_id,
                    "recipient": m.recipient,
                    "subject": m.subject,
                    "state": m.state,
                    "skip_reason": m.skip_reason,
                    "created_at": m.created_at,
                    "sent_at": m.sent_at,
                }
                for m in msgs
            ],
            "sent": sum(1 for m in msgs if m.state == "sent"),
            "skipped": skipped,
            "enrollments": [
                {
                    "id": x.id,
                    "playbook_id": x.playbook_id,
                    "version": x.playbook_version,
                    "status": x.status,
                    "holdout": x.holdout,
                    "enrolled_at": x.enrolled_at,
                    "ended_at": x.ended_at,
                    "path": [f"{h.get('step')}:{h.get('result')}" for h in (x.history or [])],
                }
                for x in repo.account_enrollments(session, account_id)
            ],
        }
    )


def _signal_time(signal: dict[str, Any] | None, now: datetime) -> datetime:
    return as_time((signal or {}).get("fired_at"), now)


def as_time(raw: Any, default: datetime) -> datetime:
    """A datetime, or one stored as ISO text in JSON; ``default`` when it is neither."""
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            pass
    return default


def baseline(session: Session, account: AccountInfo, signal: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """What the automatic outcome compares against: 28-day active users up to the
    signal (the rule language's metric), and seats and ARR at opening."""
    at = _signal_time(signal, now)
    value, _tree = measure(session, BASELINE_METRIC, account.id, at)
    return jsonable({"metric": BASELINE_METRIC, "at": at, "value": value, "seats": account.seats, "arr": account.arr})


def open_engagement(
    session: Session,
    *,
    account_id: str,
    goal: str,
    actor: str,
    now: datetime,
    settings: Settings,
    signal: dict[str, Any] | None = None,
    key: str | None = None,
    playbook_id: str | None = None,
    enrollment_id: str | None = None,
    skill: str | None = None,
    priority_override: float | None = None,
    time_box_days: float | None = None,
    title: str = "",
    note: str = "",
    holdout: bool = False,
) -> tuple[Engagement, bool]:
    """Open an engagement, or attach the signal to the account's open one for this
    goal. ``key`` makes the call idempotent (a playbook step redone after a crash
    finds the engagement it opened). Returns (engagement, opened)."""
    account = ingest.account(session, account_id)
    if account is None:
        raise Unprocessable(f"no account {account_id!r}: engagements are opened for accounts Touchline knows", code="unknown_account")
    sig_id = (signal or {}).get("signal_id")
    eid = engagement_id(account_id, goal, key or sig_id or str(uuid.uuid4()))
    existing = repo.get(session, eid)
    if existing is not None:
        return existing, False
    if not holdout:
        current = repo.open_for(session, account_id, goal)
        if current is not None:
            attach_signal(session, current, signal, actor=actor, now=now)
            return current, False
    sev = (signal or {}).get("severity")
    health = health_summary(session, account_id, now.date())
    prio, detail = priority(sev, account.arr, account.renewal_date, now.date(), health["score"] if health else None)
    if priority_override is not None:
        prio, detail = float(priority_override), {**detail, "priority": float(priority_override), "override": True}
    box = float(time_box_days or settings.engagement_time_box_days)
    row = {
        "id": eid,
        "account_id": account_id,
        "goal": goal,
        "status": "held_out" if holdout else "queued",
        "csm_id": None,
        "skill": skill or goal,
        "segment": account.segment,
        "priority": prio,
        "priority_detail": detail,
        "title": title or _title(goal, account, signal),
        "signal_ids": [sig_id] if sig_id else [],
        "reason": {
            "signal": jsonable(signal or {}),
            "evidence": jsonable((signal or {}).get("evidence") or {}),
            "automation": automation_summary(session, account_id, now),
            "health": health,
        },
        "rule_id": (signal or {}).get("rule_id"),
        "playbook_id": playbook_id,
        "enrollment_id": enrollment_id,
        "opened_by": actor,
        "time_box_days": box,
        "extension_days": 0.0,
        # A held-out engagement's time-box starts now; an engaged one's at assignment.
        "due_at": now + timedelta(days=box) if holdout else None,
        "next_reminder_at": None,
        "reminders_sent": [],
        "assignments": 0,
        "outcome": None,
        "outcome_source": None,
        "measured": {"baseline": baseline(session, account, signal, now)},
        "opened_at": now,
        "assigned_at": None,
        "accepted_at": None,
        "closed_at": None,
        "updated_at": now,
    }
    if not repo.insert_engagement(session, row):
        # Someone opened one for this account and goal since we looked (another worker).
        current = repo.open_for(session, account_id, goal) or repo.get(session, eid)
        if current is None:  # pragma: no cover - the conflicting row vanished again
            raise Conflict(f"could not open an engagement for {account_id}/{goal}; retry")
        attach_signal(session, current, signal, actor=actor, now=now)
        return current, False
    e = repo.get(session, eid)
    assert e is not None  # inserted just above, in this transaction
    event(
        session,
        e,
        "transition",
        actor=actor,
        now=now,
        frm=None,
        to=e.status,
        goal=goal,
        priority=prio,
        signal_id=sig_id,
        playbook_id=playbook_id,
    )
    audit.record(
        session,
        actor=actor,
        action="open",
        object_type="engagement",
        object_id=e.id,
        now=now,
        details=jsonable({"account_id": account_id, "goal": goal, "status": e.status, "signal_id": sig_id}),
    )
    if note:
        event(session, e, "note", actor=actor, now=now, text=note)
    session.flush()
    return e, True


def _title(goal: str, account: AccountInfo, signal: dict[str, Any] | None) -> str:
    what = {
        "recover_usage": "Recover usage",
        "discover_expansion": "Discover the expansion driver",
        "onboarding_rescue": "Rescue onboarding",
        "custom": "Follow up",
    }.get(goal, goal)
    why = (signal or {}).get("rule_name") or (signal or {}).get("rule_id")
    return f"{what}: {account.name or account.id}" + (f" ({why})" if why else "")


def attach_signal(session: Session, e: Engagement, signal: dict[str, Any] | None, *, actor: str, now: datetime) -> None:
    sig_id = (signal or {}).get("signal_id")
    if not sig_id or sig_id in (e.signal_ids or []):
        return
    e.signal_ids = list(e.signal_ids or []) + [sig_id]
    e.updated_at = now
    event(session, e, "signal_attached", actor=actor, now=now, signal=signal)
