"""Engagements: open (from a playbook step, a signal or by hand), the state machine
with its audited transitions, the CSM's work (accept, touch, note, extend, resolve),
the time-box (reminders, expiry) and the automatic outcome.

State machine (docs/engagements.md draws it)::

    queued ──assign──▶ assigned ──accept──▶ active
      ▲                  │  │                 │ │
      └──── requeue ─────┘  └── reassign ─────┘ │
    queued/assigned/active ──cancel──▶ cancelled
    assigned/active ──resolve──▶ resolved     (the CSM's outcome)
    assigned/active ──due time─▶ expired      (the automatic outcome)
    held_out: escalation holdout, never open; measured at the end of its time-box

Every transition writes an ``engagement_events`` row (from, to, who, when) and an
audit record in the same transaction. Services only flush; the request, the batch
or the tick commits.
"""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import usage
from services.outreach.engagements import notices
from services.outreach.engagements import repository as repo
from services.outreach.models import OPEN_ENGAGEMENT_STATUSES, Csm, Engagement, EngagementEvent
from services.rules.interface import measure
from shared import audit
from shared.clock import utc
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable

NAMESPACE = uuid.UUID("0b5c3f2e-7a0d-4c61-9d7e-6e2b1f4a8c33")
SEVERITY_POINTS = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
TRANSITIONS: dict[str, set[str]] = {
    "queued": {"assigned", "cancelled"},
    "assigned": {"active", "assigned", "queued", "resolved", "expired", "cancelled"},
    "active": {"assigned", "queued", "resolved", "expired", "cancelled"},
}
BASELINE_WINDOW_DAYS = 28
BASELINE_METRIC = {"metric": "active_users", "window": f"{BASELINE_WINDOW_DAYS}d"}
SUCCESS_OUTCOMES = ("recovered", "expanded")


# ---- priority -------------------------------------------------------------------


def priority(severity: str | None, arr: float | None, renewal_date: date | None, today: date) -> tuple[float, dict]:
    """0-100: severity up to 40 (10 per step from info to critical), ARR up to 30
    (10 x log10(1 + ARR/1000): 10k is 10, 100k is 20, 1M is 30) and renewal up to 30
    (30 x (1 - days to renewal / 180), so 30 when renewal is today or past, 0 from
    six months out). Documented in docs/engagements.md."""
    sev = 10.0 * SEVERITY_POINTS.get(severity or "medium", 2)
    arr_pts = min(30.0, 10.0 * math.log10(1 + max(arr or 0.0, 0.0) / 1000)) if arr else 0.0
    days_left = (renewal_date - today).days if renewal_date else None
    renewal_pts = 0.0 if days_left is None else 30.0 * max(0.0, min(1.0, 1 - days_left / 180))
    total = round(sev + arr_pts + renewal_pts, 2)
    return total, {
        "severity": severity,
        "severity_points": sev,
        "arr": arr,
        "arr_points": round(arr_pts, 2),
        "days_to_renewal": days_left,
        "renewal_points": round(renewal_pts, 2),
        "priority": total,
    }


# ---- availability and coverage ------------------------------------------------


def is_away(csm: Csm, now: datetime) -> bool:
    if csm.away_from is None and csm.away_until is None:
        return False
    return (csm.away_from is None or csm.away_from <= now) and (csm.away_until is None or now < csm.away_until)


def available(csm: Csm, now: datetime) -> bool:
    return bool(csm.active) and not is_away(csm, now)


def covers(csm: Csm, e: Engagement) -> bool:
    """Empty segments or skills on a CSM mean "any"."""
    if csm.segments and e.segment not in csm.segments:
        return False
    if csm.skills and (e.skill or e.goal) not in csm.skills:
        return False
    return True


# ---- transitions ------------------------------------------------------------------


def _event(
    session: Session, e: Engagement, kind: str, *, actor: str, now: datetime, frm: str | None = None, to: str | None = None, **details
) -> EngagementEvent:
    return repo.add_event(
        session, engagement_id=e.id, at=now, actor=actor, kind=kind, from_status=frm, to_status=to, details=_jsonable(details)
    )


def transition(session: Session, e: Engagement, to: str, *, actor: str, now: datetime, **details) -> None:
    frm = e.status
    if to not in TRANSITIONS.get(frm, set()):
        raise Conflict(f"engagement {e.id} is {frm}; it cannot become {to}", code="invalid_transition")
    e.status, e.updated_at = to, now
    _event(session, e, "transition", actor=actor, now=now, frm=frm, to=to, **details)
    audit.record(
        session, actor=actor, action=to, object_type="engagement", object_id=e.id, now=now, details=_jsonable({"from": frm, **details})
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    return obj


# ---- opening ----------------------------------------------------------------------


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
    return _jsonable(
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


def _signal_time(signal: dict | None, now: datetime) -> datetime:
    return _as_time((signal or {}).get("fired_at"), now)


def _as_time(raw: Any, default: datetime) -> datetime:
    """A datetime, or one stored as ISO text in JSON; ``default`` when it is neither."""
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            pass
    return default


def baseline(session: Session, account, signal: dict | None, now: datetime) -> dict[str, Any]:
    """What the automatic outcome compares against: 28-day active users up to the
    signal (the rule language's metric), and seats and ARR at opening."""
    at = _signal_time(signal, now)
    value, _tree = measure(session, BASELINE_METRIC, account.id, at)
    return _jsonable({"metric": BASELINE_METRIC, "at": at, "value": value, "seats": account.seats, "arr": account.arr})


def open_engagement(
    session: Session,
    *,
    account_id: str,
    goal: str,
    actor: str,
    now: datetime,
    settings,
    signal: dict | None = None,
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
    account = usage.account(session, account_id)
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
    prio, detail = priority(sev, account.arr, account.renewal_date, now.date())
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
            "signal": _jsonable(signal or {}),
            "evidence": _jsonable((signal or {}).get("evidence") or {}),
            "automation": automation_summary(session, account_id, now),
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
    _event(
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
        details=_jsonable({"account_id": account_id, "goal": goal, "status": e.status, "signal_id": sig_id}),
    )
    if note:
        _event(session, e, "note", actor=actor, now=now, text=note)
    session.flush()
    return e, True


def _title(goal: str, account, signal: dict | None) -> str:
    what = {
        "recover_usage": "Recover usage",
        "discover_expansion": "Discover the expansion driver",
        "onboarding_rescue": "Rescue onboarding",
        "custom": "Follow up",
    }.get(goal, goal)
    why = (signal or {}).get("rule_name") or (signal or {}).get("rule_id")
    return f"{what}: {account.name or account.id}" + (f" ({why})" if why else "")


def attach_signal(session: Session, e: Engagement, signal: dict | None, *, actor: str, now: datetime) -> None:
    sig_id = (signal or {}).get("signal_id")
    if not sig_id or sig_id in (e.signal_ids or []):
        return
    e.signal_ids = list(e.signal_ids or []) + [sig_id]
    e.updated_at = now
    _event(session, e, "signal_attached", actor=actor, now=now, signal=signal)


# ---- assignment (see assignment.py for choosing the CSM) --------------------------


def assign(
    session: Session,
    e: Engagement,
    csm: Csm,
    *,
    actor: str,
    now: datetime,
    settings,
    seq: int,
    reason: str = "",
    batch: notices.Notices | None = None,
) -> None:
    """``batch``: an assignment pass's notices, written once at its end."""
    previous = e.csm_id
    transition(
        session, e, "assigned", actor=actor, now=now, csm_id=csm.id, previous_csm_id=previous, **({"reason": reason} if reason else {})
    )
    e.csm_id, e.assigned_at = csm.id, now
    e.assignments = (e.assignments or 0) + 1
    if e.due_at is None:  # the time-box starts with the first assignment; a reassignment keeps it
        e.due_at = now + timedelta(days=e.time_box_days)
    e.next_reminder_at = next_reminder(e, settings, now)
    csm.assign_seq = seq
    notices.assigned(session, e, csm, now, settings, batch)


def requeue(session: Session, e: Engagement, *, actor: str, now: datetime, reason: str) -> None:
    transition(session, e, "queued", actor=actor, now=now, previous_csm_id=e.csm_id, reason=reason)
    e.csm_id, e.next_reminder_at = None, None


def next_reminder(e: Engagement, settings, now: datetime) -> datetime | None:
    """The earliest reminder not yet sent that is still ahead (a reminder whose time
    had passed before the engagement was assigned is never sent late)."""
    if e.due_at is None:
        return None
    sent = set(float(d) for d in (e.reminders_sent or []))
    times = [e.due_at - timedelta(days=d) for d in settings.engagement_reminders if d not in sent]
    ahead = [t for t in times if t > (e.assigned_at or now) - timedelta(seconds=1) and t < e.due_at]
    return min(ahead) if ahead else None


# ---- the CSM's work -----------------------------------------------------------------


def visible_to(e: Engagement | None, principal, engagement_id: str) -> Engagement:
    """A CSM key reaches only its own engagements; ops and admin reach all."""
    if e is None:
        raise NotFound(f"no engagement {engagement_id!r}")
    if principal.role == "csm" and (principal.csm_id is None or e.csm_id != principal.csm_id):
        raise Forbidden("this engagement is not assigned to you")
    return e


def accept(session: Session, e: Engagement, *, actor: str, now: datetime) -> Engagement:
    transition(session, e, "active", actor=actor, now=now)
    e.accepted_at = now
    session.flush()
    return e


def _require_open(e: Engagement, action: str) -> None:
    if e.status not in ("assigned", "active"):
        raise Conflict(f"engagement {e.id} is {e.status}; only an assigned or active engagement can {action}", code="engagement_not_open")


def log_touch(session: Session, e: Engagement, *, kind: str, user_id: str | None, summary: str, actor: str, now: datetime) -> dict:
    """A CSM's touch is a row in the message ledger (channel ``csm``, state ``sent``):
    the contact policy counts it against the account's touch budget like an
    automated one, and the sender never picks it up."""
    _require_open(e, "log touches")
    recipient = ""
    if user_id is not None:
        contact = next((u for u in usage.users_by_role(session, e.account_id) if u.id == user_id), None)
        if contact is None:
            raise Unprocessable(f"no contact {user_id!r} in account {e.account_id!r}", code="unknown_contact")
        recipient = contact.email or ""
    n = len([x for x in repo.events_of(session, e.id) if x.kind == "touch"]) + 1
    mid = str(uuid.uuid5(NAMESPACE, f"{e.id}\x1ftouch\x1f{n}"))
    repo.insert_messages(
        session,
        [
            {
                "id": mid,
                "enrollment_id": None,
                "playbook_id": None,
                "step_id": "engagement.touch",
                "touch_key": f"engagement:{e.id}:touch:{n}",
                "account_id": e.account_id,
                "user_id": user_id,
                "channel": "csm",
                "recipient": recipient,
                "template_id": None,
                "subject": f"{kind}: {summary}"[:300],
                "html_body": "",
                "text_body": summary,
                "payload": {"engagement_id": e.id, "kind": kind, "csm_id": e.csm_id},
                "state": "sent",
                "skip_reason": None,
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": now,
            }
        ],
    )
    _event(session, e, "touch", actor=actor, now=now, touch=kind, user_id=user_id, summary=summary, message_id=mid)
    e.updated_at = now
    session.flush()
    return {"message_id": mid, "kind": kind}


def add_note(session: Session, e: Engagement, *, text: str, actor: str, now: datetime) -> EngagementEvent:
    note = _event(session, e, "note", actor=actor, now=now, text=text)
    e.updated_at = now
    session.flush()
    return note


def extend(session: Session, e: Engagement, *, days: float, reason: str, actor: str, now: datetime, settings) -> Engagement:
    _require_open(e, "be extended")
    limit = settings.engagement_max_extension_days
    if days > limit:
        raise Unprocessable(f"an extension is at most {limit:g} days (set by CS Ops); {days:g} asked", code="extension_too_long")
    if e.extension_days:
        raise Conflict(f"engagement {e.id} was already extended by {e.extension_days:g} days; one extension each", code="already_extended")
    if e.due_at is None:
        raise Conflict(f"engagement {e.id} is {e.status} and has no time-box yet; extend it once it is assigned", code="no_time_box")
    e.extension_days = float(days)
    e.due_at = e.due_at + timedelta(days=days)
    e.next_reminder_at = next_reminder(e, settings, now)
    e.updated_at = now
    _event(session, e, "extended", actor=actor, now=now, days=days, reason=reason, due_at=e.due_at)
    audit.record(
        session,
        actor=actor,
        action="extend",
        object_type="engagement",
        object_id=e.id,
        now=now,
        details={"days": days, "due_at": e.due_at.isoformat()},
    )
    session.flush()
    return e


def resolve(session: Session, e: Engagement, *, outcome: str, note: str, actor: str, now: datetime, settings) -> Engagement:
    _require_open(e, "be resolved")
    transition(session, e, "resolved", actor=actor, now=now, outcome=outcome)
    if note:
        _event(session, e, "note", actor=actor, now=now, text=note)
    close(session, e, now, settings, outcome=outcome)
    return e


def cancel(session: Session, e: Engagement, *, reason: str, actor: str, now: datetime, settings) -> Engagement:
    if e.status not in OPEN_ENGAGEMENT_STATUSES:
        raise Conflict(f"engagement {e.id} is {e.status}; only an open engagement can be cancelled", code="engagement_not_open")
    transition(session, e, "cancelled", actor=actor, now=now, reason=reason)
    close(session, e, now, settings, outcome="other")
    return e


# ---- closing and the automatic outcome ---------------------------------------


def measure_outcome(session: Session, e: Engagement, now: datetime, settings) -> dict[str, Any]:
    """Did the account recover (or expand) over the engagement? Measured with the rule
    language's metrics, so outcome data does not depend on CSMs filling forms.

    recover/onboarding/custom: the distinct active users *since the signal* (the whole
    days from the baseline's instant to now, at most 28) against ``ratio x`` the
    baseline (28-day active users up to the signal). Only activity after the signal
    counts: measured an hour after opening, the 28 days before the signal would
    otherwise read as a recovery. discover_expansion: seats or ARR grew, or active
    users held. The result names what was measured, over which window, against which
    baseline, and its ``verdict``; it is the measurement's word, never merged with the
    CSM's outcome (see :func:`agreement`)."""
    base = dict((e.measured or {}).get("baseline") or {})
    since = utc(_as_time(base.get("at"), e.opened_at))
    window_days = min(BASELINE_WINDOW_DAYS, max(1, math.ceil((now - since).total_seconds() / 86400)))
    metric = {"metric": "active_users", "window": f"{window_days}d"}
    b = base.get("value") or 0.0
    threshold = max(1.0, math.ceil(settings.engagement_recovery_ratio * b))
    value, tree = measure(session, metric, e.account_id, now, threshold=threshold)
    recovered = value is not None and value >= threshold
    out: dict[str, Any] = {
        "metric": metric,
        "window_days": window_days,
        "since": since.isoformat(),
        "baseline": b,
        "baseline_metric": BASELINE_METRIC,
        "value": value,
        "threshold": threshold,
        "recovered": recovered,
        "measured_at": now.isoformat(),
        "explanation": _jsonable(tree),
    }
    if e.goal == "discover_expansion":
        account = usage.account(session, e.account_id)
        grew = account is not None and ((account.seats or 0) > (base.get("seats") or 0) or (account.arr or 0) > (base.get("arr") or 0))
        out.update({"seats": getattr(account, "seats", None), "arr": getattr(account, "arr", None), "expanded": grew})
        out["success"] = bool(grew)
        out["verdict"] = "expanded" if grew else ("recovered" if recovered else "no_response")
    else:
        out["success"] = bool(recovered)
        out["verdict"] = "recovered" if recovered else "no_response"
    return out


# What a CSM's outcome says about success, to compare with the measurement's verdict;
# "other" says nothing either way.
_POSITIVE_OUTCOMES = frozenset({"recovered", "expanded"})
_NEGATIVE_OUTCOMES = frozenset({"churned", "no_response"})


def agreement(outcome: str | None, source: str | None, measured_success: bool) -> bool | None:
    """Does the CSM's outcome agree with the measurement? None when there is nothing to
    compare (the outcome is the measurement's own, or the CSM chose "other")."""
    if source != "csm" or outcome is None:
        return None
    if outcome in _POSITIVE_OUTCOMES:
        return measured_success
    if outcome in _NEGATIVE_OUTCOMES:
        return not measured_success
    return None


def close(session: Session, e: Engagement, now: datetime, settings, outcome: str | None = None) -> None:
    """Record the measurement and the outcome side by side: the engagement's
    ``outcome`` is the CSM's when there is one (else the measurement's verdict), the
    measurement stays in ``measured.at_close``, and ``measured.csm_agrees`` says whether
    the two agree (None: nothing to compare). The
    account returns to tech-touch playbooks (it has no open engagement any more), and
    a playbook waiting for this outcome runs on."""
    measured = measure_outcome(session, e, now, settings)
    e.measured = {**(e.measured or {}), "at_close": measured, "success": measured["success"]}
    e.outcome = outcome or measured["verdict"]
    e.outcome_source = "csm" if outcome else "automatic"
    agrees = agreement(e.outcome, e.outcome_source, measured["success"])
    e.measured = {**e.measured, "csm_agrees": agrees}
    e.closed_at, e.next_reminder_at, e.updated_at = now, None, now
    _event(
        session,
        e,
        "outcome",
        actor="system:engagements",
        now=now,
        outcome=e.outcome,
        source=e.outcome_source,
        csm_agrees=agrees,
        measured={k: v for k, v in measured.items() if k != "explanation"},
    )
    if e.enrollment_id:
        repo.wake_enrollment(session, e.enrollment_id, now)
    session.flush()


# ---- the time-box tick ----------------------------------------------------------------


def run_timers(session: Session, now: datetime, settings, limit: int = 500) -> dict[str, int]:
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
            _event(session, e, "reminder", actor="system:engagements", now=now, days_left=round(days_left, 2), csm_id=csm.id)
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
