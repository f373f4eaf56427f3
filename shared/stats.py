"""Small statistics every report shares: the Wilson score interval of a rate, and the
ROC AUC of a score (Mann-Whitney). Pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / n`` (95% by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """The probability that a positive ranks above a negative, ties counting half (the
    Mann-Whitney U statistic over ``len(positives) * len(negatives)``), from the ranks
    of the pooled values (ties take their mean rank): O(n log n). None when either group
    is empty (there is nothing to separate)."""
    n_pos, n_neg = len(positives), len(negatives)
    if n_pos == 0 or n_neg == 0:
        return None
    pooled = sorted([(v, True) for v in positives] + [(v, False) for v in negatives], key=lambda p: p[0])
    rank_sum = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # ranks are 1-based
        rank_sum += mean_rank * sum(1 for k in range(i, j + 1) if pooled[k][1])
        i = j + 1
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)
