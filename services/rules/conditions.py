"""The rules service's published interface to other services: the rule language's
conditions (parse, evaluate, set-based matching) and point measurements of its metrics.

Other services import this module and nothing else of ``services.rules`` (the
import-linter contracts check it). Everything here only reads; the caller owns the
session.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from services.rules.language import (
    Condition,
    RuleValidationError,
    accounts_matching,
    evaluate_condition,
    parse_condition,
)

__all__ = ["Condition", "RuleValidationError", "accounts_matching", "evaluate_condition", "measure", "parse_condition"]


def measure(session, metric: dict[str, Any], account_id: str, at: datetime) -> tuple[float | None, dict[str, Any]]:
    """The value of one rule-language metric (e.g. ``{"metric": "active_users",
    "window": "28d"}``) for an account at ``at``, with the explanation the rule engine
    gives for it. ``op``/``value`` are not needed; a value that cannot be measured
    (no data yet) is None."""
    condition = parse_condition({**metric, "op": ">=", "value": 0})
    _ok, tree = evaluate_condition(session, condition, account_id, at)
    value = tree.get("value")
    return (float(value) if isinstance(value, int | float) else None), tree
