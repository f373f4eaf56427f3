"""The seam to the rule language for exit and branch conditions.

When the rules service's language is present (``services.rules.language`` exporting
``parse_condition(obj)`` and ``evaluate_condition(session, condition, account_id, now)
-> (bool, evidence)``), playbooks use it, so a condition is written exactly like a rule.
Until then a small built-in subset is supported, computed from the usage rollups:

* ``{"metric": "active_users", "window": "7d", "op": ">=", "value": 3}``: distinct
  active users over the last 7 UTC days;
* ``{"metric": "count", "event": "login", "window": "7d", "op": ">=", "value": 5}``:
  how many times an event happened in the window;
* ``{"all": [...]}`` / ``{"any": [...]}``.
"""
from __future__ import annotations

import operator
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

try:  # pragma: no cover - depends on the rules service being merged
    from services.rules.language import evaluate_condition as _rules_evaluate
    from services.rules.language import parse_condition as _rules_parse
except ImportError:  # pragma: no cover
    _rules_parse = _rules_evaluate = None

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_WINDOW = re.compile(r"^(\d+)([dh])$")


class ConditionError(ValueError):
    pass


def parse_exit_condition(obj: dict) -> Any:
    """Validate a condition; raises ConditionError (a ValueError) with a sentence."""
    if _rules_parse is not None:
        try:
            return _rules_parse(obj)
        except Exception as exc:  # the rule language's own error, as the ValueError pydantic reports
            raise ConditionError(str(exc)) from None
    return _parse_builtin(obj)


def evaluate_exit_condition(session: Session, condition: Any, account_id: str, now: datetime) -> tuple[bool, dict]:
    """``condition`` is the stored JSON (as in a playbook definition) or a parsed one."""
    if isinstance(condition, dict):
        condition = parse_exit_condition(condition)
    if _rules_evaluate is not None:
        return _rules_evaluate(session, condition, account_id, now)
    return _evaluate_builtin(session, condition, account_id, now)


def _window(text: str) -> timedelta:
    m = _WINDOW.match(str(text))
    if not m:
        raise ConditionError(f"window {text!r} must look like 7d or 12h")
    n = int(m.group(1))
    return timedelta(days=n) if m.group(2) == "d" else timedelta(hours=n)


def _parse_builtin(obj: dict) -> dict:
    if not isinstance(obj, dict):
        raise ConditionError("a condition is an object")
    for combinator in ("all", "any"):
        if combinator in obj:
            parts = obj[combinator]
            if not isinstance(parts, list) or not parts:
                raise ConditionError(f"{combinator!r} needs a non-empty list of conditions")
            return {combinator: [_parse_builtin(p) for p in parts]}
    metric = obj.get("metric")
    if metric not in ("active_users", "count"):
        raise ConditionError(f"unknown metric {metric!r}; use active_users or count (or the rule language once merged)")
    if obj.get("op") not in OPS:
        raise ConditionError(f"op must be one of {', '.join(OPS)}")
    if not isinstance(obj.get("value"), int | float):
        raise ConditionError("value must be a number")
    _window(obj.get("window", ""))
    if metric == "count" and not obj.get("event"):
        raise ConditionError("a count condition names its event")
    return dict(obj)


def _evaluate_builtin(session: Session, cond: dict, account_id: str, now: datetime) -> tuple[bool, dict]:
    from services.ingest.models import UsageDaily, UserActivityDaily

    if "all" in cond or "any" in cond:
        results = [_evaluate_builtin(session, c, account_id, now) for c in cond.get("all") or cond.get("any")]
        ok = all(r[0] for r in results) if "all" in cond else any(r[0] for r in results)
        return ok, {"parts": [r[1] for r in results]}
    start = (now - _window(cond["window"])).date()
    if cond["metric"] == "active_users":
        value = session.scalar(select(func.count(func.distinct(UserActivityDaily.user_id))).where(
            UserActivityDaily.account_id == account_id, UserActivityDaily.day > start, UserActivityDaily.day <= now.date())) or 0
    else:
        value = session.scalar(select(func.coalesce(func.sum(UsageDaily.count), 0)).where(
            UsageDaily.account_id == account_id, UsageDaily.event_name == cond["event"], UsageDaily.day > start,
            UsageDaily.day <= now.date())) or 0
    key = cond["metric"] if cond["metric"] == "active_users" else f"count:{cond['event']}"
    ok = OPS[cond["op"]](value, cond["value"])
    return ok, {f"{key}:{cond['window']}": {"value": value, "op": cond["op"], "threshold": cond["value"]}}
