"""shared/stats.py against values worked out by hand."""

from __future__ import annotations

import itertools

import pytest

from shared.stats import roc_auc, wilson


def test_roc_auc_separated_reversed_tied_and_empty():
    assert roc_auc([3, 4], [1, 2]) == 1.0  # every positive above every negative
    assert roc_auc([1, 2], [3, 4]) == 0.0
    # One tie: (2 vs 1) 1, (2 vs 2) 0.5, (5 vs 1) 1, (5 vs 2) 1 -> 3.5 of 4.
    assert roc_auc([2, 5], [1, 2]) == 0.875
    assert roc_auc([1, 1], [1, 1, 1]) == 0.5  # all tied: a coin
    assert roc_auc([], [1]) is None and roc_auc([1], []) is None


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_is_the_pairwise_count(seed):
    pos = [(seed * 7 + i * 3) % 11 for i in range(9)]
    neg = [(seed * 5 + i * 2) % 7 for i in range(8)]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert roc_auc(pos, neg) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_wilson_by_hand():
    # 1 of 2, z = 1.959964: centre 0.5, half z * sqrt(1/8 + z^2/16) / (1 + z^2/2) = 0.405481.
    lo, hi = wilson(1, 2)
    assert (round(lo, 4), round(hi, 4)) == (0.0945, 0.9055)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 2)
    assert lo == 0.0 and round(hi, 4) == 0.6576
