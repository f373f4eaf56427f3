"""An engagement's priority (0-100) from its signal's severity, the account's ARR, how
close its renewal is and, when it has one, the account's current health score.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

SEVERITY_POINTS = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def priority(
    severity: str | None, arr: float | None, renewal_date: date | None, today: date, health: float | None = None
) -> tuple[float, dict[str, Any]]:
    """0-100: severity up to 40 (10 per step from info to critical), ARR up to 30
    (10 x log10(1 + ARR/1000): 10k is 10, 100k is 20, 1M is 30), renewal up to 30
    (30 x (1 - days to renewal / 180), so 30 when renewal is today or past, 0 from
    six months out) and, for an account with a current health score, 20 x (1 - health /
    100) (a score of 0 adds 20, 100 adds nothing); the total is capped at 100.
    Documented in docs/engagements.md."""
    sev = 10.0 * SEVERITY_POINTS.get(severity or "medium", 2)
    arr_pts = min(30.0, 10.0 * math.log10(1 + max(arr or 0.0, 0.0) / 1000)) if arr else 0.0
    days_left = (renewal_date - today).days if renewal_date else None
    renewal_pts = 0.0 if days_left is None else 30.0 * max(0.0, min(1.0, 1 - days_left / 180))
    health_pts = 0.0 if health is None else 20.0 * (1 - max(0.0, min(100.0, health)) / 100)
    total = round(min(100.0, sev + arr_pts + renewal_pts + health_pts), 2)
    return total, {
        "severity": severity,
        "severity_points": sev,
        "arr": arr,
        "arr_points": round(arr_pts, 2),
        "days_to_renewal": days_left,
        "renewal_points": round(renewal_pts, 2),
        "health": health,
        "health_points": round(health_pts, 2),
        "priority": total,
    }
