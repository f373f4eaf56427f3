"""The health model in the rule language: parse (validate) it, serialise it back, and
score values someone else measured. Pure, like the rest of the language.

A model is a weighted mean of **components**. Each component measures one operand of
the rule language (a metric without its ``op``/``value``, e.g. ``{"metric":
"days_since", "event": "login"}``, or a numeric ``account.*`` field) and turns its
value into 0 to 100 points, with **bands** (``[{"below": 3, "points": 100}, {"below":
14, "points": 60}, {"points": 0}]``: the first band whose ``below`` is above the value;
the last band has none) or **linear** between two points (clamped outside them).
**Overrides** change a component's weight or scoring for accounts of a segment or
lifecycle stage. The overall score is the weighted mean of the components that have a
value (or ``missing_points``), 0 to 100, and its **label** is ``healthy`` from
``labels.healthy``, ``watch`` from ``labels.watch``, else ``at_risk``.
docs/health.md has the whole story.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .ast import ACCOUNT_FIELDS, HEALTH_LABELS, Field, Metric, _num_out
from .parser import DEFAULT_RETENTION_DAYS, SLUG, RuleValidationError, _hint, _Parser, _short, pointer

DEFAULT_LABELS = {"healthy": 70.0, "watch": 40.0}
MAX_COMPONENTS = 20
MAX_BANDS = 20
MAX_OVERRIDES = 20
MODEL_KEYS = ("name", "description", "labels", "components", "overrides")
COMPONENT_KEYS = ("id", "name", "measure", "weight", "bands", "linear", "missing_points")
OVERRIDE_KEYS = ("when", "components")
OVERRIDE_WHEN = ("segment", "lifecycle_stage")
SCORING_KEYS = ("weight", "bands", "linear", "missing_points")
LABELS = HEALTH_LABELS
# Metrics a component may measure: every metric of the language but health itself.
HEALTH_METRICS = ("health", "health_change")
MEASURE_HELP = (
    'a metric of the rule language without "op" and "value", e.g. {"metric": "days_since", "event": "login"} or '
    '{"metric": "seat_utilisation", "window": "28d"}, or a numeric account field: {"field": "account.days_to_renewal"}'
)
BANDS_HELP = (
    'bands are a list from low to high values, each {"below": <number>, "points": <0..100>}, the last one without "below", '
    'e.g. [{"below": 3, "points": 100}, {"below": 14, "points": 60}, {"points": 0}]'
)
LINEAR_HELP = 'linear is {"from": {"value": 0, "points": 100}, "to": {"value": 30, "points": 0}} (points clamped outside the two values)'


@dataclass(frozen=True)
class Band:
    below: float | None  # None: the last band (everything from the previous bound up)
    points: float

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.below is None else {"below": _num_out(self.below)}
        out["points"] = _num_out(self.points)
        return out


@dataclass(frozen=True)
class Linear:
    from_value: float
    from_points: float
    to_value: float
    to_points: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": {"value": _num_out(self.from_value), "points": _num_out(self.from_points)},
            "to": {"value": _num_out(self.to_value), "points": _num_out(self.to_points)},
        }


@dataclass(frozen=True)
class Scoring:
    """How a value becomes points: bands or linear, and the points of a missing value
    (None: the component is left out of the mean for that account)."""

    weight: float
    bands: tuple[Band, ...] | None = None
    linear: Linear | None = None
    missing_points: float | None = None

    def points(self, value: Any) -> tuple[float | None, str]:
        """(points, the band or rule that gave them) for one value."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            if self.missing_points is None:
                return None, "no value: left out"
            return self.missing_points, "no value: missing_points"
        if self.bands is not None:
            lower: float | None = None
            for band in self.bands:
                if band.below is None or value < band.below:
                    return band.points, _band_text(lower, band.below)
                lower = band.below
        assert self.linear is not None  # a scoring has bands or linear (the parser says so)
        lin = self.linear
        lo, hi = sorted((lin.from_value, lin.to_value))
        x = min(max(value, lo), hi)
        points = lin.from_points + (lin.to_points - lin.from_points) * (x - lin.from_value) / (lin.to_value - lin.from_value)
        return points, f"linear {_show(lin.from_value)}..{_show(lin.to_value)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weight": _num_out(self.weight)}
        if self.bands is not None:
            out["bands"] = [b.to_dict() for b in self.bands]
        if self.linear is not None:
            out["linear"] = self.linear.to_dict()
        if self.missing_points is not None:
            out["missing_points"] = _num_out(self.missing_points)
        return out


@dataclass(frozen=True)
class Component:
    id: str
    name: str
    measure: Metric | Field  # a metric (op/value unused) or an account field
    scoring: Scoring

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "measure": measure_dict(self.measure), **self.scoring.to_dict()}


@dataclass(frozen=True)
class Override:
    segment: tuple[str, ...] | None
    lifecycle_stage: tuple[str, ...] | None
    components: tuple[tuple[str, dict[str, Any]], ...]  # component id -> the scoring keys it replaces

    def applies(self, segment: str | None, stage: str | None) -> bool:
        return (self.segment is None or segment in self.segment) and (self.lifecycle_stage is None or stage in self.lifecycle_stage)

    def to_dict(self) -> dict[str, Any]:
        when: dict[str, Any] = {}
        if self.segment is not None:
            when["segment"] = list(self.segment)
        if self.lifecycle_stage is not None:
            when["lifecycle_stage"] = list(self.lifecycle_stage)
        return {"when": when, "components": {cid: dict(changes) for cid, changes in self.components}}


@dataclass(frozen=True)
class HealthModel:
    name: str
    components: tuple[Component, ...]
    healthy: float = DEFAULT_LABELS["healthy"]
    watch: float = DEFAULT_LABELS["watch"]
    description: str = ""
    overrides: tuple[Override, ...] = ()
    # (override index, component id) -> the scoring it gives; built by the parser
    _scorings: dict[tuple[int, str], Scoring] = field(default_factory=dict, compare=False, repr=False)

    @property
    def measures(self) -> list[Metric | Field]:
        """Every operand the model reads (what to measure for a population)."""
        return list(dict.fromkeys(c.measure for c in self.components))

    def label(self, score: float | None) -> str | None:
        if score is None:
            return None
        return "healthy" if score >= self.healthy else ("watch" if score >= self.watch else "at_risk")

    def scoring_for(self, component: Component, segment: str | None, stage: str | None) -> tuple[Scoring, int | None]:
        """The component's scoring for an account (the first override that applies), and that override's index."""
        for i, o in enumerate(self.overrides):
            if o.applies(segment, stage) and (i, component.id) in self._scorings:
                return self._scorings[i, component.id], i
        return component.scoring, None

    def score(self, values: dict[str, Any], segment: str | None = None, stage: str | None = None) -> dict[str, Any]:
        """Score one account from its component values (component id -> value):
        ``{"score", "label", "components": [{id, name, measure, value, band, points, weight}]}``."""
        parts = []
        total = weights = 0.0
        for c in self.components:
            scoring, override = self.scoring_for(c, segment, stage)
            v = values.get(c.id)
            points, band = scoring.points(v)
            part: dict[str, Any] = {
                "id": c.id,
                "name": c.name,
                "measure": c.measure.label,
                "value": _json_value(v),
                "band": band,
                "points": None if points is None else round(points, 2),
                "weight": _num_out(scoring.weight),
            }
            if isinstance(v, float) and math.isinf(v):
                part["never_seen"] = True
            if override is not None:
                part["override"] = override
            parts.append(part)
            if points is not None and scoring.weight > 0:
                total += points * scoring.weight
                weights += scoring.weight
        score = round(total / weights, 1) if weights else None
        return {"score": score, "label": self.label(score), "components": parts}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "labels": {"healthy": _num_out(self.healthy), "watch": _num_out(self.watch)},
            "components": [c.to_dict() for c in self.components],
        }
        if self.overrides:
            out["overrides"] = [o.to_dict() for o in self.overrides]
        return out


def measure_dict(m: Metric | Field) -> dict[str, Any]:
    out = m.to_dict()
    out.pop("op", None)
    out.pop("value", None)
    return out


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isinf(v) else round(v, 4)
    return v


def _show(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _band_text(lower: float | None, below: float | None) -> str:
    if lower is None and below is None:
        return "any value"
    if lower is None:
        return f"< {_show(below)}"  # type: ignore[arg-type]
    if below is None:
        return f">= {_show(lower)}"
    return f"{_show(lower)} to < {_show(below)}"


class _HealthParser(_Parser):
    def points(self, value: Any, ptr: str, what: str = "points") -> float | None:
        v = self.number(value, ptr, what)
        if v is not None and not 0 <= v <= 100:
            self.err(ptr, f"{what} are from 0 to 100; got {_short(value)}")
            return None
        return v

    def measure(self, obj: Any, ptr: str) -> Metric | Field | None:
        if not isinstance(obj, dict) or ("metric" in obj) == ("field" in obj):
            self.err(ptr, f"measure is {MEASURE_HELP}")
            return None
        for key in ("op", "value"):
            if key in obj:
                self.err(pointer(ptr, key), f'a measure has no "{key}": the bands or linear scoring judge its value ({MEASURE_HELP})')
        if "op" in obj or "value" in obj:
            return None
        if "metric" in obj:
            if obj["metric"] in HEALTH_METRICS:
                self.err(pointer(ptr, "metric"), f"a health component cannot measure health itself; use {MEASURE_HELP}")
                return None
            if obj.get("scope") == "user":
                self.err(pointer(ptr, "scope"), 'a health score is per account: scope "user" needs a triggering event; use "account"')
                return None
            return self.metric({**obj, "op": ">=", "value": 0}, ptr)
        path = obj["field"]
        numeric = [f"account.{f}" for f, kind in ACCOUNT_FIELDS.items() if kind == "num"]
        if set(obj) != {"field"}:
            self.unknown_keys(obj, ("field",), ptr, "a field measure")
            return None
        if isinstance(path, str) and path.startswith("account.traits.") and all(path.split(".")[2:]):
            return Field(path=tuple(path.split(".")), op="exists", value=True)
        if path not in numeric:
            self.err(
                pointer(ptr, "field"),
                f"unknown numeric account field {_short(path)}{_hint(path, numeric)}; allowed: {', '.join(numeric)}, account.traits.<name>",
            )
            return None
        return Field(path=tuple(path.split(".")), op="exists", value=True)

    def scoring(self, obj: dict[str, Any], ptr: str, base: Scoring | None) -> Scoring | None:
        """A component's scoring keys (all of them), or an override's (each optional, the rest from ``base``)."""
        before = len(self.errors)
        weight = base.weight if base else None
        if "weight" in obj:
            weight = self.number(obj["weight"], pointer(ptr, "weight"), "weight")
            if weight is not None and weight < 0:
                self.err(pointer(ptr, "weight"), "weight is 0 or more (0 leaves the component out)")
        elif base is None:
            self.err(pointer(ptr, "weight"), 'add "weight": <number>, its share of the score against the other components')
        bands, linear = (base.bands, base.linear) if base else (None, None)
        if "bands" in obj and "linear" in obj:
            self.err(ptr, 'give "bands" or "linear", not both')
        elif "bands" in obj:
            bands, linear = self.bands(obj["bands"], pointer(ptr, "bands")), None
        elif "linear" in obj:
            bands, linear = None, self.linear(obj["linear"], pointer(ptr, "linear"))
        elif base is None:
            self.err(ptr, f"add how the value becomes points: {BANDS_HELP}; or {LINEAR_HELP}")
        missing = base.missing_points if base else None
        if "missing_points" in obj:
            missing = None if obj["missing_points"] is None else self.points(obj["missing_points"], pointer(ptr, "missing_points"))
        if len(self.errors) > before:
            return None
        assert weight is not None
        return Scoring(weight=weight, bands=bands, linear=linear, missing_points=missing)

    def bands(self, value: Any, ptr: str) -> tuple[Band, ...] | None:
        if not isinstance(value, list) or not value or len(value) > MAX_BANDS:
            self.err(ptr, f"{BANDS_HELP} (1 to {MAX_BANDS} bands)")
            return None
        out: list[Band] = []
        last: float | None = None
        for i, b in enumerate(value):
            bptr = pointer(ptr, i)
            if not isinstance(b, dict):
                self.err(bptr, BANDS_HELP)
                continue
            self.unknown_keys(b, ("below", "points"), bptr, "a band")
            points = self.points(b.get("points"), pointer(bptr, "points")) if "points" in b else None
            if "points" not in b:
                self.err(pointer(bptr, "points"), 'add "points": <0..100>')
            below = None
            final = i == len(value) - 1
            if "below" in b:
                below = self.number(b["below"], pointer(bptr, "below"), "below")
                if final:
                    self.err(
                        pointer(bptr, "below"), f"the last band takes every value above the previous one: remove its below ({BANDS_HELP})"
                    )
                elif below is not None and last is not None and below <= last:
                    self.err(pointer(bptr, "below"), f"bands go from low to high: below must be above the previous band's ({_show(last)})")
                last = below if below is not None else last
            elif not final:
                self.err(pointer(bptr, "below"), f'only the last band has no "below" ({BANDS_HELP})')
            if points is not None:
                out.append(Band(below, points))
        return tuple(out) if len(out) == len(value) else None

    def linear(self, value: Any, ptr: str) -> Linear | None:
        if not isinstance(value, dict) or set(value) != {"from", "to"}:
            self.err(ptr, LINEAR_HELP)
            return None
        ends: list[tuple[float, float] | None] = []
        for end in ("from", "to"):
            e, eptr = value[end], pointer(ptr, end)
            if not isinstance(e, dict) or set(e) != {"value", "points"}:
                self.err(eptr, LINEAR_HELP)
                ends.append(None)
                continue
            x = self.number(e["value"], pointer(eptr, "value"), "value")
            p = self.points(e["points"], pointer(eptr, "points"))
            ends.append((x, p) if x is not None and p is not None else None)
        a, b = ends
        if a is None or b is None:
            return None
        if a[0] == b[0]:
            self.err(pointer(ptr, "to", "value"), "the two values must differ (a step is bands with one bound)")
            return None
        return Linear(a[0], a[1], b[0], b[1])


def parse_health_model(obj: Any, *, retention_days: int = DEFAULT_RETENTION_DAYS) -> HealthModel:
    """Parse and validate a health model; every problem at once, each with its JSON pointer."""
    p = _HealthParser(retention_days, event_context=False)
    if not isinstance(obj, dict):
        raise RuleValidationError([{"pointer": "", "message": "a health model is a JSON object; see docs/health.md for an example"}])
    p.unknown_keys(obj, MODEL_KEYS, "", "a health model")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        p.err("/name", 'name is required, e.g. "Account health" (at most 200 characters)')
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        p.err("/description", "description is text of at most 4000 characters")
    labels = obj.get("labels", DEFAULT_LABELS)
    healthy, watch = DEFAULT_LABELS["healthy"], DEFAULT_LABELS["watch"]
    if not isinstance(labels, dict) or set(labels) != {"healthy", "watch"}:
        p.err("/labels", 'labels is {"healthy": 70, "watch": 40}: the lowest score of each (below watch is at_risk)')
    else:
        h = p.points(labels["healthy"], "/labels/healthy", "labels.healthy")
        w = p.points(labels["watch"], "/labels/watch", "labels.watch")
        if h is not None and w is not None:
            if w >= h:
                p.err("/labels/watch", f"watch ({_show(w)}) must be below healthy ({_show(h)})")
            healthy, watch = h, w
    components: list[Component] = []
    raw = obj.get("components")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_COMPONENTS:
        p.err("/components", f"components is a list of 1 to {MAX_COMPONENTS} components, each {{id, measure, weight, bands or linear}}")
        raw = []
    seen: set[str] = set()
    for i, c in enumerate(raw):
        cptr = pointer("/components", i)
        if not isinstance(c, dict):
            p.err(cptr, 'a component is {"id", "measure", "weight", "bands" or "linear"}')
            continue
        p.unknown_keys(c, COMPONENT_KEYS, cptr, "a component")
        cid = c.get("id")
        if not isinstance(cid, str) or not SLUG.match(cid):
            p.err(pointer(cptr, "id"), 'id is a slug of lowercase letters, digits, "-" and "_", e.g. "login_recency"')
        elif cid in seen:
            p.err(pointer(cptr, "id"), f"another component is already called {cid!r}; ids are unique")
        else:
            seen.add(cid)
        cname = c.get("name", cid)
        if not isinstance(cname, str) or not cname or len(cname) > 200:
            p.err(pointer(cptr, "name"), "name is text of 1 to 200 characters")
        measure = p.measure(c.get("measure"), pointer(cptr, "measure")) if "measure" in c else None
        if "measure" not in c:
            p.err(pointer(cptr, "measure"), f"add what the component measures: {MEASURE_HELP}")
        scoring = p.scoring(c, cptr, None)
        if measure is not None and scoring is not None and isinstance(cid, str) and isinstance(cname, str):
            components.append(Component(cid, cname, measure, scoring))
    if components and not p.errors and sum(c.scoring.weight for c in components) <= 0:
        p.err("/components", "at least one component needs a weight above 0")
    overrides: list[Override] = []
    scorings: dict[tuple[int, str], Scoring] = {}
    by_id = {c.id: c for c in components}
    raw_overrides = obj.get("overrides", [])
    if not isinstance(raw_overrides, list) or len(raw_overrides) > MAX_OVERRIDES:
        p.err(
            "/overrides",
            f'overrides is a list of at most {MAX_OVERRIDES}: {{"when": {{"segment": [...]}}, "components": {{"<id>": {{"weight": 0}}}}}}',
        )
        raw_overrides = []
    for i, o in enumerate(raw_overrides):
        optr = pointer("/overrides", i)
        if not isinstance(o, dict) or "when" not in o or "components" not in o:
            p.err(optr, 'an override is {"when": {"segment": [...], "lifecycle_stage": [...]}, "components": {"<id>": {"weight": ...}}}')
            continue
        p.unknown_keys(o, OVERRIDE_KEYS, optr, "an override")
        when = o["when"]
        sel: dict[str, tuple[str, ...] | None] = {"segment": None, "lifecycle_stage": None}
        if not isinstance(when, dict) or not when:
            p.err(pointer(optr, "when"), f"when names the accounts it applies to by {' and/or '.join(OVERRIDE_WHEN)}")
        else:
            p.unknown_keys(when, OVERRIDE_WHEN, pointer(optr, "when"), "an override's when")
            for key in OVERRIDE_WHEN:
                if key in when:
                    sel[key] = p.strings(when[key], pointer(optr, "when", key), key)
        changes = o["components"]
        kept: list[tuple[str, dict[str, Any]]] = []
        if not isinstance(changes, dict) or not changes:
            p.err(pointer(optr, "components"), 'components maps a component id to what changes: {"usage_trend": {"weight": 0}}')
            changes = {}
        for cid, ch in changes.items():
            chptr = pointer(optr, "components", cid)
            if cid not in by_id:
                if not isinstance(raw, list) or cid not in {c.get("id") for c in raw if isinstance(c, dict)}:
                    p.err(chptr, f"no component {cid!r}{_hint(cid, list(by_id))}; components: {', '.join(by_id)}")
                continue
            if not isinstance(ch, dict) or not ch:
                p.err(chptr, f"an override of a component changes some of {', '.join(SCORING_KEYS)}")
                continue
            p.unknown_keys(ch, SCORING_KEYS, chptr, "a component override")
            s = p.scoring(ch, chptr, by_id[cid].scoring)
            if s is not None:
                scorings[len(overrides), cid] = s
                kept.append((cid, {k: v for k, v in s.to_dict().items() if k in ch}))
        overrides.append(Override(sel["segment"], sel["lifecycle_stage"], tuple(kept)))
    if p.errors:
        raise RuleValidationError(p.errors)
    assert isinstance(name, str)
    return HealthModel(
        name=name.strip(),
        description=description,
        components=tuple(components),
        healthy=healthy,
        watch=watch,
        overrides=tuple(overrides),
        _scorings=scorings,
    )
