"""The condition language as immutable values. Nothing here is ever executed as code:
the parser builds these from JSON, the evaluator interprets them, ``to_dict`` writes
them back in canonical form (parse -> to_dict -> parse is the identity)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Metric predicates reach usage over windows on event time (UTC days).
METRICS = (
    "count",
    "active_users",
    "active_days",
    "days_since",
    "change",
    "seat_utilisation",
    "aggregate",
    "contacts",
    "health",
    "health_change",
)
AGGREGATE_FNS = ("sum", "avg", "min", "max", "latest")
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
    "segments": "set",  # the named segments the account is in now (docs/segments.md): in / not_in only
}
SEGMENTS_FIELD = ("account", "segments")
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
    fn: str | None = None  # aggregate: sum, avg, min, max or latest
    prop: str | None = None  # aggregate: "property", the numeric event property ("score", "plan.seats")
    # count and aggregate: property filters, (path, allowed values) sorted by path; all must match
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    role: str | None = None  # days_since, active_users, contacts: only contacts of this role
    # contacts: its optional "active_within" is held in ``window``

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
    def operand(self) -> tuple[Any, ...]:
        """What the predicate measures, without its threshold (cache and contradiction key)."""
        return (
            "metric",
            self.metric,
            self.event,
            self.window,
            self.baseline,
            self.of,
            self.scope,
            self.fn,
            self.prop,
            self.where,
            self.role,
        )

    @property
    def where_label(self) -> str:
        parts = [f"{k}={_show_values(v)}" for k, v in self.where]
        return f" where {', '.join(parts)}" if parts else ""

    @property
    def label(self) -> str:
        role = f", role={self.role}" if self.role else ""
        if self.metric == "count":
            return f"count({self.event}{self.where_label}, {self.window}d)"
        if self.metric == "aggregate":
            return f"{self.fn}({self.event}.{self.prop}{self.where_label}, {self.window}d)"
        if self.metric == "contacts":
            active = f", active {self.window}d" if self.window else ""
            return f"contacts(role={self.role}{active})"
        if self.metric == "active_users":
            return f"active_users({self.window}d{role})"
        if self.metric == "active_days":
            return f"active_days({self.event or '*'}, {self.window}d)"
        if self.metric == "days_since":
            return f"days_since({self.event}{role})" if self.scope == "account" else f"user_days_since({self.event})"
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
        if self.fn is not None:
            out["fn"] = self.fn
        if self.of is not None:
            out["of"] = self.of
        if self.event is not None:
            out["event"] = self.event
        if self.prop is not None:
            out["property"] = self.prop
        if self.where:
            out["where"] = {k: (_num_out(v[0]) if len(v) == 1 else {"in": [_num_out(x) for x in v]}) for k, v in self.where}
        if self.role is not None:
            out["role"] = self.role
        if self.window is not None:
            out["active_within" if self.metric == "contacts" else "window"] = f"{self.window}d"
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
    def operand(self) -> tuple[Any, ...]:
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


def _show_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        # Bare text, unless it would read as a number or boolean: "2" is not 2.
        try:
            float(v)
            return json.dumps(v)
        except ValueError:
            return json.dumps(v) if v in ("true", "false", "") or any(c in v for c in ',|{}"=') else v
    return str(_num_out(v))


def _show_values(values: tuple[Any, ...]) -> str:
    shown = [_show_value(v) for v in values]
    return shown[0] if len(shown) == 1 else "{" + "|".join(shown) + "}"


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
