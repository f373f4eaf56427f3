"""The rule language: parse (validate) JSON into a condition tree, serialise it back,
and evaluate it. This package's public interface is stable; outreach uses it for
playbook exit conditions:

- ``parse_condition(obj) -> Condition`` raises :class:`RuleValidationError` (422, with
  a JSON pointer and a how-to-fix sentence per problem);
- ``evaluate_condition(session, condition, account_id, now) -> (bool, explanation)``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from .ast import All, AnyOf, Audience, Condition, Field, Metric, Not, RuleDefinition, Trigger, leaves
from .parser import RuleValidationError, parse_condition, parse_rule

__all__ = [
    "All", "AnyOf", "Audience", "Condition", "Field", "Metric", "Not", "RuleDefinition", "RuleValidationError", "Trigger",
    "accounts_matching", "evaluate_condition", "leaves", "parse_condition", "parse_rule", "serialize_condition",
]


def serialize_condition(condition: Condition) -> dict[str, Any]:
    return condition.to_dict()


def evaluate_condition(session, condition: Condition, account_id: str, now: datetime) -> tuple[bool, dict[str, Any]]:
    """Would ``condition`` hold for ``account_id`` at ``now``? Returns the answer and the
    explanation tree (every predicate with its value, operator, threshold and result).
    Reads only; the caller owns the session."""
    from services.rules.evaluation.engine import explain_for_account

    return explain_for_account(session, condition, account_id, now)


def accounts_matching(session, condition: Condition, account_ids: list[str], now: datetime) -> set[str]:
    """Which of ``account_ids`` satisfy ``condition`` at ``now``: set-based, one query
    per distinct metric whatever the number of accounts. Reads only."""
    from services.rules.evaluation.engine import Measurements
    from services.rules.language.evaluate import select

    if not account_ids:
        return set()
    meas = Measurements(session, now, list(account_ids))
    return select(condition, set(account_ids), meas.matching)
