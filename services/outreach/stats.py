"""Holdout statistics shared by the playbook report and the pooled-CSM outcome report:
the confidence interval of a lift (treated minus holdout rate). The Wilson interval of one
rate is shared.stats.wilson."""

from __future__ import annotations

import math

from shared.stats import wilson


def lift_interval(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval for p1 - p2 (his method 10): sound with small
    groups and rates near 0 or 1, where the textbook Wald interval is not."""
    if n1 == 0 or n2 == 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
