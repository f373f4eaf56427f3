"""The condition language as immutable values. Nothing here is ever executed as code:
the parser builds these from JSON, the evaluator interprets them, ``to_dict`` writes
them back in canonical form (parse -> to_dict -> parse is the identity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Metric predicates reach usage over windows on event time (UTC days).
METRICS = ("count", "active_users", "active_days", "days_since", "change", "seat_utilisation", "health", "health_change")
# The labels of a health score (services/rules/language/health.py), for account.health_label and audiences.
HEALTH_LABELS = ("healthy", "watch", "at_risk")
CHANGE_OF = ("count", "active_users", "active_days")
NUMERIC_OPS = (">", ">=", "<", "<=", "==", "!=")
FIELD_OPS = NUMERIC_OPS + ("in", "not_in", "exists")

ACCOUNT_FIELDS = {
    # name: type ("str" | "num")
    "id": "str",
    "name": "str",
    "plan": "str",
    "segment": "str",
    "lifecycle_stage": "str",
    "arr": "num",
    "seats": "num",
    "tenure_days": "num",
    "days_in_stage": "num",
    "days_to_renewal": "num",
    "health_label": "str",  # the label of the account's current health score (docs/health.md)
}
USER_FIELDS = {"id": "str", "email": "str", "name": "str", "role": "str", "timezone": "str"}
EVENT_FIELDS = {"name": "str", "user_id": "str"}


def fmt_seconds(seconds: int) -> str:
    """Canonical duration text: the largest unit that divides exactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Metric:
    """``{"metric": ..., <params>, "op": ..., "value": <number>}``"""

    metric: str
    op: str
    value: float
    event: str | None = None
    window: int | None = None  # days
    baseline: int | None = None  # days (change only)
    of: str | None = None  # change only: the metric that changes
    scope: str = "account"  # days_since: account or user (the triggering event's user)

    # The parser guarantees which parameters each metric has; these say so to the reader
    # (and the type checker) where a metric's measurement needs one.
    @property
    def window_days(self) -> int:
        if self.window is None:
            raise ValueError(f"metric {self.metric} has no window")
        return self.window

    @property
    def baseline_days(self) -> int:
        if self.baseline is None:
            raise ValueError(f"metric {self.metric} has no baseline")
        return self.baseline

    @property
    def event_name(self) -> str:
        if self.event is None:
            raise ValueError(f"metric {self.metric} names no event")
        return self.event

    @property
    def operand(self) -> tuple:
        """What the predicate measures, without its threshold (cache and contradiction key)."""
        return ("metric", self.metric, self.event, self.window, self.baseline, self.of, self.scope)

    @property
    def label(self) -> str:
        if self.metric == "count":
            return f"count({self.event}, {self.window}d)"
        if self.metric == "active_users":
            return f"active_users({self.window}d)"
        if self.metric == "active_days":
            return f"active_days({self.event or '*'}, {self.window}d)"
        if self.metric == "days_since":
            return f"days_since({self.event})" if self.scope == "account" else f"user_days_since({self.event})"
        if self.metric == "seat_utilisation":
            return f"seat_utilisation({self.window}d)"
        if self.metric == "health":
            return "health"
        if self.metric == "health_change":
            return f"health_change({self.window}d)"
        of = f"{self.of}({self.event})" if self.of == "count" or (self.of == "active_days" and self.event) else self.of
        return f"change_pct({of}, {self.window}d vs prior {self.baseline}d)"

    @property
    def needs_event(self) -> bool:
        return self.scope == "user"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric}
        if self.of is not None:
            out["of"] = self.of
        if self.event is not None:
            out["event"] = self.event
        if self.window is not None:
            out["window"] = f"{self.window}d"
        if self.baseline is not None:
            out["baseline"] = f"{self.baseline}d"
        if self.scope != "account":
            out["scope"] = self.scope
        out["op"] = self.op
        out["value"] = _num_out(self.value)
        return out


@dataclass(frozen=True)
class Field:
    """``{"field": "account.plan" | "account.traits.x" | "user.role" | "event.properties.x", "op", "value"}``"""

    path: tuple[str, ...]
    op: str
    value: Any = None

    @property
    def operand(self) -> tuple:
        return ("field",) + self.path

    @property
    def label(self) -> str:
        return ".".join(self.path)

    @property
    def needs_event(self) -> bool:
        return self.path[0] in ("event", "user")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": ".".join(self.path), "op": self.op}
        if self.op != "exists" or self.value is not True:
            out["value"] = list(self.value) if isinstance(self.value, tuple) else _num_out(self.value)
        return out


@dataclass(frozen=True)
class All:
    children: tuple[Condition, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"all": [c.to_dict() for c in self.children]}


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Condition, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"any": [c.to_dict() for c in self.children]}


@dataclass(frozen=True)
class Not:
    child: Condition

    def to_dict(self) -> dict[str, Any]:
        return {"not": self.child.to_dict()}


Leaf = Metric | Field
Condition = Metric | Field | All | AnyOf | Not


def leaves(node: Condition) -> list[Leaf]:
    if isinstance(node, (All, AnyOf)):
        return [leaf for c in node.children for leaf in leaves(c)]
    if isinstance(node, Not):
        return leaves(node.child)
    return [node]


def _num_out(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


@dataclass(frozen=True)
class Range:
    min: float | None = None
    max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {}
        if self.min is not None:
            out["min"] = _num_out(self.min)
        if self.max is not None:
            out["max"] = _num_out(self.max)
        return out


@dataclass(frozen=True)
class Audience:
    segment: tuple[str, ...] | None = None
    plan: tuple[str, ...] | None = None
    lifecycle_stage: tuple[str, ...] | None = None
    arr: Range | None = None
    tenure_days: Range | None = None
    days_in_stage: Range | None = None
    renewal_within_days: int | None = None
    health_label: tuple[str, ...] | None = None  # the current health score's label (docs/health.md)
    health: Range | None = None  # the current health score

    @property
    def by_health(self) -> bool:
        return self.health_label is not None or self.health is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("segment", "plan", "lifecycle_stage", "health_label"):
            v = getattr(self, name)
            if v is not None:
                out[name] = list(v)
        for name in ("arr", "tenure_days", "days_in_stage", "health"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v.to_dict()
        if self.renewal_within_days is not None:
            out["renewal_within_days"] = self.renewal_within_days
        return out

    @property
    def is_everyone(self) -> bool:
        return self.to_dict() == {}


@dataclass(frozen=True)
class Trigger:
    events: tuple[str, ...] = ()
    every_seconds: int | None = None  # set for scheduled rules

    @property
    def scheduled(self) -> bool:
        return self.every_seconds is not None

    def to_dict(self) -> dict[str, Any]:
        if self.every_seconds is not None:
            return {"schedule": {"every": fmt_seconds(self.every_seconds)}}
        return {"events": list(self.events)}


@dataclass(frozen=True)
class Actions:
    set_lifecycle_stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"set_lifecycle_stage": self.set_lifecycle_stage} if self.set_lifecycle_stage else {}


@dataclass(frozen=True)
class RuleDefinition:
    id: str
    name: str
    kind: str
    severity: str
    trigger: Trigger
    condition: Condition
    cooldown_seconds: int
    description: str = ""
    audience: Audience = field(default_factory=Audience)
    actions: Actions = field(default_factory=Actions)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "severity": self.severity,
            "trigger": self.trigger.to_dict(),
            "audience": self.audience.to_dict(),
            "condition": self.condition.to_dict(),
            "cooldown": fmt_seconds(self.cooldown_seconds),
        }
        if self.actions.to_dict():
            out["actions"] = self.actions.to_dict()
        return out
