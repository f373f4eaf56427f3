"""Playbook exit and branch conditions are written in the rule language
(docs/rules.md), so CS Ops learn one language: e.g. weekly active users back to 3 is
``{"all": [{"metric": "active_users", "window": "7d", "op": ">=", "value": 3}]}``.

This module adapts the rules service's published interface (services/rules/conditions.py)
to what playbooks need: a
``ValueError`` with a readable sentence at save time, and evaluation at step time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.rules.interface import (
    Condition,
    RuleValidationError,
    accounts_matching,
    evaluate_condition,
    parse_condition,
)


class ConditionError(ValueError):
    pass


def parse_exit_condition(obj: dict[str, Any]) -> Condition:
    """Validate a condition; raises ConditionError naming each problem's JSON pointer."""
    try:
        return parse_condition(obj)
    except RuleValidationError as exc:
        raise ConditionError("; ".join(f"{e['pointer'] or '/'}: {e['message']}" for e in exc.errors)) from None


def evaluate_exit_condition(session: Session, condition: Any, account_id: str, now: datetime) -> tuple[bool, dict[str, Any]]:
    """``condition`` is the stored JSON (as in a playbook definition) or a parsed one."""
    if isinstance(condition, dict):
        condition = parse_exit_condition(condition)
    return evaluate_condition(session, condition, account_id, now)


def accounts_meeting(session: Session, condition: Any, account_ids: list[str], now: datetime) -> set[str]:
    """The accounts among ``account_ids`` for which the condition holds (set-based)."""
    if isinstance(condition, dict):
        condition = parse_exit_condition(condition)
    return accounts_matching(session, condition, account_ids, now)
