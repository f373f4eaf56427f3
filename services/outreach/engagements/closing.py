"""Closing an engagement: the automatic outcome measured with the rule language's
metrics, recorded beside the CSM's outcome (and whether the two agree).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.engagements import repository as repo
from services.outreach.engagements.opening import BASELINE_METRIC, BASELINE_WINDOW_DAYS, as_time
from services.outreach.engagements.transitions import event, jsonable
from services.outreach.models import Engagement
from services.rules.interface import measure
from shared.clock import utc
from shared.settings import Settings


def measure_outcome(session: Session, e: Engagement, now: datetime, settings: Settings) -> dict[str, Any]:
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
    since = utc(as_time(base.get("at"), e.opened_at))
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
        "explanation": jsonable(tree),
    }
    if e.goal == "discover_expansion":
        account = ingest.account(session, e.account_id)
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


def close(session: Session, e: Engagement, now: datetime, settings: Settings, outcome: str | None = None) -> None:
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
    event(
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
