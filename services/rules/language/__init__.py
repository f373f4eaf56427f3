"""The rule language: parse (validate) JSON into a condition tree, serialise it back,
and interpret it over values someone else measured (:mod:`.evaluate`).

This package is pure: it imports nothing that touches the database (an import-linter
contract checks it). Measuring metrics is :mod:`services.rules.evaluation`'s job; other
services reach both through :mod:`services.rules.conditions`.
"""

from __future__ import annotations

from typing import Any

from .ast import All, AnyOf, Audience, Condition, Field, Metric, Not, RuleDefinition, Trigger, leaves
from .parser import RuleValidationError, parse_condition, parse_rule

__all__ = [
    "All",
    "AnyOf",
    "Audience",
    "Condition",
    "Field",
    "Metric",
    "Not",
    "RuleDefinition",
    "RuleValidationError",
    "Trigger",
    "leaves",
    "parse_condition",
    "parse_rule",
    "serialize_condition",
]


def serialize_condition(condition: Condition) -> dict[str, Any]:
    return condition.to_dict()
