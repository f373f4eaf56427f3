"""Pure interpretation of a condition tree over values someone else measured.

Two shapes share one comparison so they cannot disagree:
- :func:`explain` evaluates one subject and says, predicate by predicate, why;
- :func:`select` evaluates a whole population at once with set algebra (the tick and
  the backtest), so the cost is a few comprehensions per predicate, not a tree walk per account.

Semantics: a predicate on a missing value is false (so ``not`` of it is true), except
``days_since`` of an event never seen, which is infinitely long ago. A metric without a
value (an average over an empty window, utilisation without seats) is marked
``"undefined": true`` in explanations and evidence.
"""

from __future__ import annotations

import functools
import math
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable, Iterable, Mapping
from itertools import compress, repeat
from typing import Any, Generic, TypeVar

from .ast import SEGMENTS_FIELD, All, AnyOf, Condition, Field, Leaf, Metric, Not

S = TypeVar("S", bound=Hashable)  # a subject: an account id, or an (account, user) pair

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def predicate(leaf: Leaf) -> Callable[[Any], bool]:
    """A fast ``value -> bool`` for one leaf."""
    op = leaf.op
    want: Any = leaf.value  # a list for in/not_in (field predicates), else a scalar
    if isinstance(leaf, Field) and leaf.path == SEGMENTS_FIELD:
        # Set-valued: the account's segments (None or () when it is in none).
        wanted = frozenset(want)
        if op == "in":
            return lambda v: bool(v) and not wanted.isdisjoint(v)
        return lambda v: not v or wanted.isdisjoint(v)
    if op == "exists":
        return (lambda v: v is not None) if want else (lambda v: v is None)
    if op == "in":
        allowed = set(want)
        return lambda v: v is not None and _hashable(v) and v in allowed
    if op == "not_in":
        banned = set(want)
        return lambda v: v is not None and _hashable(v) and v not in banned
    fn = _OPS[op]
    if isinstance(want, (int, float)) and not isinstance(want, bool):

        def numeric(v: Any, fn: Callable[[Any, Any], bool] = fn, want: float = want) -> bool:
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            return fn(v, want)

        return numeric
    return lambda v: v is not None and type(v) is type(want) and fn(v, want)


@functools.lru_cache(maxsize=4096)
def _cached_predicate(leaf: Leaf) -> Callable[[Any], bool]:
    return predicate(leaf)


def _predicate_of(leaf: Leaf) -> Callable[[Any], bool]:
    """:func:`predicate`, built once per leaf (a backtest explains thousands of firings of one rule)."""
    try:
        return _cached_predicate(leaf)
    except TypeError:  # a leaf holding an unhashable value
        return predicate(leaf)


def _hashable(v: Any) -> bool:
    return isinstance(v, Hashable)


def json_value(v: Any) -> Any:
    """Values as they appear in explanations and evidence (inf is not JSON)."""
    if isinstance(v, float):
        if math.isinf(v):
            return None
        return round(v, 4)
    if isinstance(v, tuple):  # a set-valued field (account.segments)
        return list(v)
    return v


def explain(node: Condition, value_of: Callable[[Leaf], Any]) -> tuple[bool, dict[str, Any]]:
    """Evaluate every predicate (no short-circuit, so the answer shows all of them)."""
    if isinstance(node, (All, AnyOf)):
        parts = [explain(c, value_of) for c in node.children]
        result = all(r for r, _ in parts) if isinstance(node, All) else any(r for r, _ in parts)
        return result, {"all" if isinstance(node, All) else "any": [e for _, e in parts], "result": result}
    if isinstance(node, Not):
        r, e = explain(node.child, value_of)
        return (not r), {"not": e, "result": not r}
    v = value_of(node)
    result = _predicate_of(node)(v)
    out = {
        "predicate": node.label,
        "value": json_value(v),
        "op": node.op,
        "threshold": list(node.value) if isinstance(node.value, tuple) else json_value(node.value),
        "result": result,
    }
    if isinstance(v, float) and math.isinf(v):
        out["never_seen"] = True
    elif v is None and isinstance(node, Metric):
        out["undefined"] = True
    return result, out


def evidence(explanation: dict[str, Any]) -> dict[str, Any]:
    """Flatten an explanation into ``{label: {value, op, threshold}}`` (the signal's evidence)."""
    out: dict[str, Any] = {}

    def walk(e: dict[str, Any], negated: bool) -> None:
        for key in ("all", "any"):
            if key in e:
                for c in e[key]:
                    walk(c, negated)
                return
        if "not" in e:
            walk(e["not"], not negated)
            return
        item = {k: e[k] for k in ("value", "op", "threshold")}
        for flag in ("never_seen", "undefined"):
            if e.get(flag):
                item[flag] = True
        if negated:
            item["negated"] = True
        if not e["result"] and not negated:
            item["result"] = False  # an "any" branch that did not hold
        out[e["predicate"]] = item

    walk(explanation, False)
    return out


def evidence_of(node: Condition, value_of: Callable[[Leaf], Any]) -> tuple[bool, dict[str, Any]]:
    """``(ok, evidence(tree))`` for ``ok, tree = explain(node, value_of)``, without building
    the explanation in between (the tick and a backtest build the evidence of every firing:
    75,000 in the tick's bench, 30,000 for one rule in the backtest's). Every leaf's value
    is asked, in the same order as :func:`explain` asks."""
    out: dict[str, Any] = {}
    ok = _gather_evidence(node, value_of, False, out)
    return ok, out


def _gather_evidence(n: Condition, value_of: Callable[[Leaf], Any], negated: bool, out: dict[str, Any]) -> bool:
    """:func:`evidence_of`'s walk, into ``out``. A module function: a nested function that
    calls itself is a reference cycle per call, which only the cyclic garbage collector
    frees (and the tick pauses it: 75,000 calls left 525,000 objects until it ended)."""
    if isinstance(n, (All, AnyOf)):
        results = [_gather_evidence(c, value_of, negated, out) for c in n.children]  # every child: the evidence shows all
        return all(results) if isinstance(n, All) else any(results)
    if isinstance(n, Not):
        return not _gather_evidence(n.child, value_of, not negated, out)
    v = value_of(n)
    result = _predicate_of(n)(v)
    item = {"value": json_value(v), "op": n.op, "threshold": list(n.value) if isinstance(n.value, tuple) else json_value(n.value)}
    if isinstance(v, float) and math.isinf(v):
        item["never_seen"] = True
    elif v is None and isinstance(n, Metric):
        item["undefined"] = True
    if negated:
        item["negated"] = True
    elif not result:
        item["result"] = False  # an "any" branch that did not hold
    out[n.label] = item
    return result


def select(node: Condition, universe: set[S], matching: Callable[[Leaf], set[S]]) -> set[S]:
    """The subjects of ``universe`` for which ``node`` holds. ``matching(leaf)`` answers the
    subjects for which one predicate holds (it may include subjects outside the universe)."""
    if not universe:
        return set()  # nothing to measure for (a backtest day whose audience is empty)
    if isinstance(node, All):
        result = universe
        # Cheapest first is unknowable here; intersecting shrinks as we go.
        for c in node.children:
            held = select(c, result, matching)
            result = result & held
            if not result:
                break
        return result
    if isinstance(node, AnyOf):
        out: set[S] = set()
        for c in node.children:
            out |= select(c, universe - out, matching)
        return out
    if isinstance(node, Not):
        held = select(node.child, universe, matching)
        return universe - held
    return universe & matching(node)


class NumericOrder(Generic[S]):
    """One operand's values sorted once, so that ``>``, ``>=``, ``<`` and ``<=`` against
    any threshold are a bisection and a slice instead of a test per subject: the tick
    asks 25 thresholds of one metric over 100,000 accounts. Built only when every value
    is a number (int or float, not bool, not NaN), where the order answers exactly what
    :func:`predicate` answers."""

    __slots__ = ("keys", "subjects")

    def __init__(self, keys: list[float], subjects: list[S]):
        self.keys, self.subjects = keys, subjects

    @classmethod
    def of(cls, values: Mapping[S, Any]) -> NumericOrder[S] | None:
        for v in values.values():
            if (type(v) is not float and type(v) is not int) or v != v:  # exact types: a bool is not a number here
                return None
        pairs = sorted(values.items(), key=operator.itemgetter(1))
        return cls([v for _, v in pairs], [s for s, _ in pairs])

    def above(self, op: str, want: float) -> list[S]:
        """The subjects whose value satisfies ``value <op> want``."""
        if op == ">":
            return self.subjects[bisect_right(self.keys, want) :]
        if op == ">=":
            return self.subjects[bisect_left(self.keys, want) :]
        if op == "<":
            return self.subjects[: bisect_left(self.keys, want)]
        return self.subjects[: bisect_right(self.keys, want)]  # "<="


def matching_from_values(
    leaf: Leaf,
    universe: Iterable[S],
    values: Mapping[S, Any],
    default: Any,
    order: NumericOrder[S] | None = None,
    absent: Callable[[], set[S]] | None = None,
) -> set[S]:
    """The subjects of ``universe`` for which ``leaf`` holds, a subject without a value
    taking ``default``. With ``order`` (``NumericOrder.of(values)``) a numeric comparison
    is answered by bisection; the answer is the same. ``absent`` answers the subjects of a
    set ``universe`` without a value (``universe.difference(values)``), for a caller that
    asks many thresholds of one operand over one universe and keeps it."""
    test = predicate(leaf)
    want = leaf.value
    if (
        order is not None
        and isinstance(universe, (set, frozenset))
        and leaf.op in (">", ">=", "<", "<=")
        and type(want) in (int, float)
        and want == want
    ):
        out = set(universe.intersection(order.above(leaf.op, want)))
        if test(default):
            out |= absent() if absent is not None else universe.difference(values)
        return out
    if (
        isinstance(universe, (set, frozenset))
        and leaf.op in _OPS
        and type(want) in (int, float)
        and set(map(type, values.values())) <= {int, float}  # exact types: a bool is not a number here
    ):
        # Every value a number: the comparison itself is the predicate (NaN included), so
        # one pass in C over the values answers it.
        out = set(compress(values, map(_OPS[leaf.op], values.values(), repeat(want))))
        out &= universe
        if test(default):
            out |= absent() if absent is not None else universe.difference(values)
        return out
    get = values.get
    return {s for s in universe if test(get(s, default))}
