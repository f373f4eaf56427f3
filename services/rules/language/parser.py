"""Parse and validate rules and conditions from JSON-like data.

Every problem is reported at once, each with a JSON pointer (RFC 6901) to the offending
part and a sentence on how to fix it. The result is a tree of immutable values
(:mod:`.ast`); nothing is ever evaluated as Python.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Collection, Iterable
from typing import Any

from shared.errors import Unprocessable, json_pointer
from shared.events import USER_ROLES
from shared.signals import SEVERITIES

from .ast import (
    ACCOUNT_FIELDS,
    AGGREGATE_FNS,
    CHANGE_OF,
    EVENT_FIELDS,
    FIELD_OPS,
    HEALTH_LABELS,
    METRICS,
    NUMERIC_OPS,
    SEGMENTS_FIELD,
    USER_FIELDS,
    Actions,
    All,
    AnyOf,
    Audience,
    Condition,
    Field,
    Metric,
    Not,
    Range,
    RuleDefinition,
    Trigger,
)

DEFAULT_RETENTION_DAYS = 400
MAX_CHANGE_CHUNKS = 52
SLUG = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
WINDOW = re.compile(r"^([1-9][0-9]{0,4})([dw])$")
DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

METRIC_PARAMS: dict[str, dict[str, bool]] = {
    # metric -> {param: required}
    "count": {"event": True, "window": True, "where": False},
    "active_users": {"window": True, "role": False},
    "active_days": {"event": False, "window": True},
    "days_since": {"event": True, "scope": False, "role": False},
    "change": {"of": True, "event": False, "window": True, "baseline": True},
    "seat_utilisation": {"window": True},
    "aggregate": {"fn": True, "event": True, "property": True, "window": True, "where": False},
    "contacts": {"role": True, "active_within": False},
    "health": {},
    "health_change": {"window": True},
}
METRIC_HELP = {
    "count": 'how many times an event happened in a window, optionally only events whose properties match "where": '
    '{"metric": "count", "event": "ticket_opened", "where": {"priority": "P0"}, "window": "30d", "op": ">=", "value": 1}',
    "active_users": 'distinct users with any event in a window, optionally of one "role": '
    '{"metric": "active_users", "window": "7d", "role": "power_user", "op": "<", "value": 3}',
    "active_days": 'days with activity in a window: {"metric": "active_days", "window": "28d", "op": "<", "value": 4}',
    "days_since": 'days since an event was last seen, optionally by a user of one "role": '
    '{"metric": "days_since", "event": "login", "role": "champion", "op": ">=", "value": 14}',
    "change": 'percent change against the prior baseline: {"metric": "change", "of": "active_users", "window": "7d", "baseline": "28d", "op": "<=", "value": -40}',
    "seat_utilisation": 'active users in the window as a percent of seats: {"metric": "seat_utilisation", "window": "28d", "op": ">=", "value": 90}',
    "aggregate": "sum, avg, min, max or latest of a numeric event property in a window: "
    '{"metric": "aggregate", "fn": "latest", "event": "nps_answered", "property": "score", "window": "90d", "op": "<=", "value": 6}',
    "contacts": "how many contacts of a role the account has, optionally only those active within a window: "
    '{"metric": "contacts", "role": "champion", "active_within": "14d", "op": "<", "value": 1}',
    "health": 'the account\'s current health score, 0 to 100 (docs/health.md): {"metric": "health", "op": "<", "value": 40}',
    "health_change": 'points the health score moved in the window: {"metric": "health_change", "window": "14d", "op": "<=", "value": -20}',
}
MAX_WHERE_KEYS = 10  # property filters in one "where"
PROPERTY_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_PROPERTY_DEPTH = 4
# Size limits (docs/rules.md, "Limits"). They bound the work of validating, storing
# and evaluating a rule, whoever sends it; they are checked on the raw JSON, without
# recursion, before anything else looks at the condition.
MAX_PREDICATES = 100  # metric and field predicates in one condition
MAX_DEPTH = 8  # nesting of all / any / not
MAX_LIST_ITEMS = 500  # an in / not_in list, an audience list, trigger events
MAX_NUMBER = 1e12  # |value|, min, max: far beyond any real threshold
LIMITS = {"max_predicates": MAX_PREDICATES, "max_depth": MAX_DEPTH, "max_list_items": MAX_LIST_ITEMS, "max_number": MAX_NUMBER}

RULE_KEYS = ("id", "name", "description", "kind", "severity", "trigger", "audience", "condition", "cooldown", "actions")
AUDIENCE_KEYS = (
    "segment",
    "plan",
    "lifecycle_stage",
    "arr",
    "tenure_days",
    "days_in_stage",
    "renewal_within_days",
    "health_label",
    "health",
)


class RuleValidationError(Unprocessable):
    """422 ``{"error": "validation_error", "detail": [{"pointer", "message"}, ...]}``"""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__(errors)
        self.errors = errors


def pointer(base: str, *parts: Any) -> str:
    return base + json_pointer(parts)


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Parser:
    def __init__(self, retention_days: int, event_context: bool):
        self.retention_days = retention_days
        self.event_context = event_context
        self.errors: list[dict[str, str]] = []

    def err(self, ptr: str, message: str, limit: str | None = None) -> None:
        self.errors.append({"pointer": ptr, "message": message, **({"limit": limit} if limit else {})})

    def within_limits(self, obj: Any, ptr: str) -> bool:
        """Check a raw condition against the size limits, iteratively and stopping at the
        first limit passed, so a 10,000-predicate or 10,000-deep condition costs
        microseconds to refuse (the full parse compares predicates pairwise)."""
        predicates = 0
        stack: list[tuple[Any, str, int]] = [(obj, ptr, 0)]
        while stack:
            node, where, depth = stack.pop()
            if not isinstance(node, dict):
                continue
            for combinator in ("all", "any", "not"):
                if combinator in node:
                    if depth + 1 > MAX_DEPTH:
                        self.err(
                            where,
                            f"conditions nest more than {MAX_DEPTH} levels of all/any/not (max_depth); flatten them",
                            limit="max_depth",
                        )
                        return False
                    children = node[combinator]
                    if combinator == "not":
                        stack.append((children, pointer(where, "not"), depth + 1))
                        continue
                    if not isinstance(children, list):
                        continue
                    if len(children) > MAX_PREDICATES:
                        self.err(
                            pointer(where, combinator),
                            f'"{combinator}" lists {len(children)} conditions; a condition '
                            f"holds at most {MAX_PREDICATES} predicates (max_predicates)",
                            limit="max_predicates",
                        )
                        return False
                    stack.extend((c, pointer(where, combinator, i), depth + 1) for i, c in enumerate(children))
            if "metric" in node or "field" in node:
                predicates += 1
                if predicates > MAX_PREDICATES:
                    self.err(
                        ptr,
                        f"the condition has more than {MAX_PREDICATES} predicates (max_predicates); split the "
                        "rule in two or use in / not_in lists",
                        limit="max_predicates",
                    )
                    return False
                value = node.get("value")
                if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
                    self.err(
                        pointer(where, "value"),
                        f"the list has {len(value)} items; the limit is {MAX_LIST_ITEMS} (max_list_items)",
                        limit="max_list_items",
                    )
                    return False
        return True

    def list_within_limit(self, value: Any, ptr: str) -> bool:
        if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
            self.err(ptr, f"the list has {len(value)} items; the limit is {MAX_LIST_ITEMS} (max_list_items)", limit="max_list_items")
            return False
        return True

    def unknown_keys(self, obj: dict[str, Any], allowed: Collection[str], ptr: str, what: str) -> None:
        for key in obj:
            if key not in allowed:
                self.err(pointer(ptr, key), f"unknown field {key!r} in {what}{_hint(key, allowed)}; allowed fields: {', '.join(allowed)}")

    # ---- conditions ----------------------------------------------------
    def node(self, obj: Any, ptr: str) -> Condition | None:
        if not isinstance(obj, dict) or not obj:
            self.err(
                ptr, 'a condition is an object: {"all": [...]}, {"any": [...]}, {"not": {...}}, or a predicate with "metric" or "field"'
            )
            return None
        for combinator in ("all", "any"):
            if combinator in obj:
                if len(obj) != 1:
                    self.err(ptr, f'"{combinator}" must be alone in its object; move the other fields into a predicate inside the list')
                    return None
                items = obj[combinator]
                if not isinstance(items, list) or not items:
                    self.err(
                        pointer(ptr, combinator),
                        f'"{combinator}" needs a non-empty list of conditions; an empty '
                        f"{combinator} is ambiguous, so add at least one predicate",
                    )
                    return None
                parsed = [self.node(c, pointer(ptr, combinator, i)) for i, c in enumerate(items)]
                children = [c for c in parsed if c is not None]
                if len(children) != len(parsed):
                    return None
                if combinator == "all":
                    self.contradictions(children, pointer(ptr, "all"))
                    return All(tuple(children))
                return AnyOf(tuple(children))
        if "not" in obj:
            if len(obj) != 1:
                self.err(ptr, '"not" must be alone in its object: {"not": {<condition>}}')
                return None
            child = self.node(obj["not"], pointer(ptr, "not"))
            return Not(child) if child is not None else None
        if "metric" in obj:
            return self.metric(obj, ptr)
        if "field" in obj:
            return self.field(obj, ptr)
        self.err(
            ptr,
            'unknown condition: use "all", "any", "not", or a predicate with "metric" '
            f'(one of {", ".join(METRICS)}) or "field" (account.*, user.*, event.*)',
        )
        return None

    def window(self, value: Any, ptr: str) -> int | None:
        m = WINDOW.match(value) if isinstance(value, str) else None
        if m is None:
            self.err(ptr, f'a window is a duration in whole days such as "7d", "28d" or "4w"; got {value!r}')
            return None
        days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
        if days > self.retention_days:
            self.err(
                ptr,
                f"a window of {days} days is longer than the retained history ({self.retention_days} days, "
                "TOUCHLINE_RAW_EVENT_RETENTION_DAYS); shorten it",
            )
            return None
        return days

    def number(self, value: Any, ptr: str, what: str = "value") -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            self.err(ptr, f"{what} must be a number such as 3 or 0.5; got {_short(value)}")
            return None
        if abs(value) > MAX_NUMBER:
            self.err(ptr, f"{what} is {_short(value)}; numbers are limited to ±{MAX_NUMBER:.0e} (max_number)", limit="max_number")
            return None
        return float(value)

    def event_name(self, value: Any, ptr: str) -> str | None:
        if not isinstance(value, str) or not value or len(value) > 128:
            self.err(ptr, f'"event" is an event name such as "login" (1 to 128 characters); got {value!r}')
            return None
        return value

    def property_path(self, value: Any, ptr: str, what: str) -> str | None:
        parts = value.split(".") if isinstance(value, str) else []
        if not parts or len(parts) > MAX_PROPERTY_DEPTH or not all(PROPERTY_KEY.match(k) for k in parts):
            self.err(
                ptr,
                f'{what} is an event property name such as "score" or "plan.seats" (keys of letters, digits, "_" and "-", '
                f'at most 64 each, nested keys joined with ".", at most {MAX_PROPERTY_DEPTH}); got {_short(value)}',
            )
            return None
        path: str = value
        return path

    def where(self, value: Any, ptr: str) -> tuple[tuple[str, tuple[Any, ...]], ...] | None:
        help_ = 'where is an object of event property filters, all of which must match: {"priority": "P0"} or {"priority": {"in": ["P0", "P1"]}}'
        if not isinstance(value, dict) or not value:
            self.err(ptr, f"{help_}; got {_short(value)}")
            return None
        if len(value) > MAX_WHERE_KEYS:
            self.err(ptr, f"where has {len(value)} filters; at most {MAX_WHERE_KEYS}")
            return None
        out: list[tuple[str, tuple[Any, ...]]] = []
        for key, v in value.items():
            kptr = pointer(ptr, key)
            path = self.property_path(key, kptr, "a where key")
            values: list[Any] | None = None
            if isinstance(v, dict):
                listed = v.get("in")
                if set(v) != {"in"} or not isinstance(listed, list) or not listed:
                    self.err(kptr, f'a filter is a value or {{"in": [<values>]}} (a non-empty list); got {_short(v)}')
                elif not self.list_within_limit(listed, pointer(kptr, "in")):
                    pass
                elif not all(_scalar(x) for x in listed):
                    self.err(pointer(kptr, "in"), "the values to match are strings, numbers or booleans")
                else:
                    values = listed
            elif _scalar(v):
                values = [v]
            else:
                self.err(kptr, f'a filter value is a string, number or boolean, or {{"in": [<values>]}}; got {_short(v)}')
            if path is not None and values is not None:
                canonical = [float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in values]
                out.append((path, tuple(_dedupe(canonical))))
        return tuple(sorted(out, key=lambda kv: kv[0]))

    def role(self, value: Any, ptr: str) -> str | None:
        if value not in USER_ROLES or not isinstance(value, str):
            self.err(ptr, f"role is one of {', '.join(USER_ROLES)} (the contacts' role); got {_short(value)}{_hint(value, USER_ROLES)}")
            return None
        return value

    def metric(self, obj: dict[str, Any], ptr: str) -> Metric | None:
        name = obj["metric"]
        if name not in METRICS:
            self.err(
                pointer(ptr, "metric"),
                f"unknown metric {name!r}{_hint(name, METRICS)}; known metrics: " + "; ".join(f"{m}: {METRIC_HELP[m]}" for m in METRICS),
            )
            return None
        params = METRIC_PARAMS[name]
        before = len(self.errors)
        self.unknown_keys(obj, ("metric", *params, "op", "value"), ptr, f"a {name} predicate ({METRIC_HELP[name]})")
        for param, required in params.items():
            if required and param not in obj:
                self.err(pointer(ptr, param), f'{name} needs "{param}": {METRIC_HELP[name]}')
        op = obj.get("op")
        if op not in NUMERIC_OPS:
            self.err(pointer(ptr, "op"), f"op must be one of {', '.join(NUMERIC_OPS)}; got {op!r}")
        value = self.number(obj.get("value"), pointer(ptr, "value"), '"value"') if "value" in obj else None
        if "value" not in obj:
            self.err(pointer(ptr, "value"), f'add the threshold: "value": <number> ({METRIC_HELP[name]})')
        event = self.event_name(obj["event"], pointer(ptr, "event")) if "event" in obj else None
        window = self.window(obj["window"], pointer(ptr, "window")) if "window" in obj else None
        baseline = of = None
        fn = obj.get("fn")
        if "fn" in obj and fn not in AGGREGATE_FNS:
            self.err(pointer(ptr, "fn"), f"fn is one of {', '.join(AGGREGATE_FNS)}; got {_short(fn)}{_hint(str(fn), AGGREGATE_FNS)}")
        prop = self.property_path(obj["property"], pointer(ptr, "property"), '"property"') if "property" in obj else None
        where = self.where(obj["where"], pointer(ptr, "where")) if "where" in obj else ()
        role = self.role(obj["role"], pointer(ptr, "role")) if "role" in obj else None
        if "active_within" in obj:
            window = self.window(obj["active_within"], pointer(ptr, "active_within"))
        scope = obj.get("scope", "account")
        if name == "days_since" and "role" in obj and scope == "user":
            self.err(pointer(ptr, "role"), 'role narrows the account\'s users; scope "user" already names one user: use one or the other')
        if name == "days_since":
            if scope not in ("account", "user"):
                self.err(pointer(ptr, "scope"), f'scope is "account" (default) or "user" (the triggering event\'s user); got {scope!r}')
            elif scope == "user" and not self.event_context:
                self.err(
                    pointer(ptr, "scope"),
                    'scope "user" needs a triggering event with a user: use it in a rule triggered by events, or use scope "account"',
                )
        if name == "change":
            of = obj.get("of")
            if "of" in obj and of not in CHANGE_OF:
                self.err(pointer(ptr, "of"), f'"of" is the metric that changes, one of {", ".join(CHANGE_OF)}; got {of!r}')
            if of == "count" and "event" not in obj:
                self.err(pointer(ptr, "event"), 'change of count needs "event": which event to count')
            if of == "active_users" and "event" in obj:
                self.err(pointer(ptr, "event"), 'active users count any activity; remove "event" or use "of": "count"')
            if "baseline" in obj:
                baseline = self.window(obj["baseline"], pointer(ptr, "baseline"))
            if window and baseline:
                if baseline % window:
                    self.err(
                        pointer(ptr, "baseline"),
                        f"the baseline ({baseline}d) must be a whole number of windows ({window}d): "
                        "it is split into windows and averaged, e.g. 7d against 28d = the 4 prior weeks",
                    )
                elif baseline // window > MAX_CHANGE_CHUNKS:
                    self.err(
                        pointer(ptr, "baseline"), f"at most {MAX_CHANGE_CHUNKS} prior windows; lengthen the window or shorten the baseline"
                    )
                elif window + baseline > self.retention_days:
                    self.err(
                        pointer(ptr, "baseline"),
                        f"window + baseline = {window + baseline} days is longer than the retained "
                        f"history ({self.retention_days} days); shorten the baseline",
                    )
        if len(self.errors) > before:
            return None
        assert op is not None and value is not None  # both validated above, or an error was recorded
        return Metric(
            metric=name,
            op=op,
            value=value,
            event=event,
            window=window,
            baseline=baseline,
            of=of,
            scope=scope if name == "days_since" else "account",
            fn=fn,
            prop=prop,
            where=where or (),
            role=role,
        )

    def field(self, obj: dict[str, Any], ptr: str) -> Field | None:
        before = len(self.errors)
        self.unknown_keys(obj, ("field", "op", "value"), ptr, "a field predicate")
        path_text = obj["field"]
        kind = None
        path: tuple[str, ...] = ()
        if not isinstance(path_text, str) or not path_text:
            self.err(
                pointer(ptr, "field"),
                'field is a path such as "account.plan", "account.traits.industry", "user.role" or "event.properties.report_type"',
            )
        else:
            path = tuple(path_text.split("."))
            kind = self.field_kind(path, pointer(ptr, "field"))
        op = obj.get("op")
        if op not in FIELD_OPS:
            self.err(pointer(ptr, "op"), f"op must be one of {', '.join(FIELD_OPS)}; got {op!r}")
            op = None
        value = obj.get("value", True if op == "exists" else None)
        vptr = pointer(ptr, "value")
        if kind == "set" and op not in ("in", "not_in", None):
            self.err(
                pointer(ptr, "op"),
                f"{path_text} is the account's named segments: test it with in (a member of one of them) or not_in "
                f'(of none of them), e.g. {{"field": "{path_text}", "op": "in", "value": ["fintech-smb"]}}',
            )
        elif kind == "set" and (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)):
            self.err(vptr, f'{op} needs a non-empty list of segment ids, e.g. ["fintech-smb"]')
        elif op in ("in", "not_in"):
            if not isinstance(value, list) or not value or not all(_scalar(v) for v in value):
                self.err(vptr, f'{op} needs a non-empty list of strings or numbers, e.g. ["pro", "enterprise"]')
            else:
                value = tuple(value)
        elif op == "exists":
            if not isinstance(value, bool):
                self.err(vptr, 'exists takes true (the field is present) or false (it is missing); or leave "value" out')
        elif op in (">", ">=", "<", "<="):
            if kind == "str":
                self.err(pointer(ptr, "op"), f"{path_text} is text: compare it with ==, !=, in or not_in")
            else:
                value = self.number(value, vptr, '"value"')
        elif op in ("==", "!="):
            if "value" not in obj or not _scalar(value):
                self.err(vptr, f'{op} needs a string, number or boolean "value"')
            elif kind == "num":
                value = self.number(value, vptr, '"value"')
            elif kind == "str" and not isinstance(value, str):
                self.err(vptr, f"{path_text} is text: compare it with a string")
        if kind == "set" and isinstance(value, list) and len(self.errors) == before:
            value = tuple(value)
        if path == ("account", "health_label") and op in ("==", "!=", "in", "not_in") and len(self.errors) == before:
            wanted = list(value) if isinstance(value, tuple) else [value]
            if set(wanted) - set(HEALTH_LABELS):
                self.err(vptr, f"account.health_label is one of {', '.join(HEALTH_LABELS)}; got {_short(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_NUMBER:
            value = float(value)
        if len(self.errors) > before:
            return None
        assert op is not None  # validated above, or an error was recorded
        return Field(path=path, op=op, value=value)

    def field_kind(self, path: tuple[str, ...], ptr: str) -> str | None:
        """'str', 'num' or 'any' for a valid path; None (and an error) otherwise."""
        root, rest = path[0], path[1:]
        fields = {"account": ACCOUNT_FIELDS, "user": USER_FIELDS, "event": EVENT_FIELDS}
        if root not in fields:
            self.err(ptr, f"a field starts with account., user. or event.; got {'.'.join(path)!r}")
            return None
        if root in ("user", "event") and not self.event_context:
            self.err(
                ptr,
                f"{root}.* fields need a triggering event: use them in a rule triggered by events "
                "(a scheduled rule looks at accounts, not at one event or user)",
            )
            return None
        bag = "properties" if root == "event" else "traits"
        if rest and rest[0] == bag:
            if len(rest) < 2 or not all(rest[1:]):
                self.err(ptr, f'name the key: "{root}.{bag}.<name>"')
                return None
            return "any"
        if len(rest) != 1 or rest[0] not in fields[root]:
            known = [f"{root}.{f}" for f in fields[root]] + [f"{root}.{bag}.<name>"]
            self.err(ptr, f"unknown field {'.'.join(path)!r}{_hint('.'.join(path), known)}; known: {', '.join(known)}")
            return None
        return fields[root][rest[0]]

    def contradictions(self, children: list[Condition], ptr: str) -> None:
        """Predicates in one "all" on the same measure whose ranges cannot overlap."""
        seen: dict[tuple[Any, ...], list[tuple[int, Metric | Field]]] = {}
        for i, c in enumerate(children):
            if isinstance(c, (Metric, Field)) and not (isinstance(c, Field) and c.path == SEGMENTS_FIELD):
                seen.setdefault(c.operand, []).append((i, c))  # a set-valued field (segments) holds several at once
        for group in seen.values():
            for j in range(1, len(group)):
                for i in range(j):
                    a, b = group[i][1], group[j][1]
                    if not _compatible(a, b):
                        self.err(
                            pointer(ptr, group[j][0]),
                            f"contradicts {pointer(ptr, group[i][0])}: {a.label} cannot be both {a.op} {_show(a.value)} "
                            f'and {b.op} {_show(b.value)}, so the rule could never fire; fix one threshold or use "any"',
                        )

    # ---- rules ---------------------------------------------------------
    def duration(self, value: Any, ptr: str, what: str, minimum: int) -> int | None:
        m = DURATION.match(value) if isinstance(value, str) else None
        if m is None:
            self.err(ptr, f'{what} is a duration such as "30m", "12h", "7d" or "2w"; got {value!r}')
            return None
        seconds = int(m.group(1)) * UNIT_SECONDS[m.group(2)]
        if seconds < minimum:
            self.err(ptr, f"{what} must be at least {minimum} seconds; got {value!r}")
            return None
        return seconds

    def strings(self, value: Any, ptr: str, what: str) -> tuple[str, ...] | None:
        if isinstance(value, str):
            value = [value]
        if not self.list_within_limit(value, ptr):
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.err(ptr, f'{what} is a string or a non-empty list of strings, e.g. ["smb", "mid_market"]')
            return None
        return tuple(value)

    def range(self, value: Any, ptr: str, what: str) -> Range | None:
        if not isinstance(value, dict) or not value or set(value) - {"min", "max"}:
            self.err(ptr, f'{what} is a range: {{"min": <number>, "max": <number>}} (either bound may be left out)')
            return None
        lo = self.number(value["min"], pointer(ptr, "min"), "min") if "min" in value else None
        hi = self.number(value["max"], pointer(ptr, "max"), "max") if "max" in value else None
        if lo is not None and hi is not None and lo > hi:
            self.err(ptr, f"min ({_show(lo)}) is above max ({_show(hi)}): no account could match; swap them")
        return Range(lo, hi)

    def audience(self, obj: Any, ptr: str) -> Audience:
        if obj is None:
            return Audience()
        if not isinstance(obj, dict):
            self.err(ptr, 'audience is an object of account filters, e.g. {"segment": ["smb"], "renewal_within_days": 60}')
            return Audience()
        self.unknown_keys(obj, AUDIENCE_KEYS, ptr, "audience")
        kw: dict[str, Any] = {}
        for name in ("segment", "plan", "lifecycle_stage"):
            if name in obj:
                kw[name] = self.strings(obj[name], pointer(ptr, name), name)
        if "health_label" in obj:
            labels = self.strings(obj["health_label"], pointer(ptr, "health_label"), "health_label")
            if labels is not None and set(labels) - set(HEALTH_LABELS):
                self.err(pointer(ptr, "health_label"), f"health_label is one or more of {', '.join(HEALTH_LABELS)}; got {list(labels)!r}")
            kw["health_label"] = labels
        for name in ("arr", "tenure_days", "days_in_stage", "health"):
            if name in obj:
                kw[name] = self.range(obj[name], pointer(ptr, name), name)
        if "renewal_within_days" in obj:
            v = obj["renewal_within_days"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 3660:
                self.err(pointer(ptr, "renewal_within_days"), "renewal_within_days is a whole number of days from 0 to 3660, e.g. 60")
            else:
                kw["renewal_within_days"] = v
        return Audience(**kw)

    def trigger(self, obj: Any, ptr: str) -> Trigger | None:
        help_ = (
            'trigger is {"events": ["login", ...]} (evaluated on each such event) or {"schedule": {"every": "1h"}} (evaluated on the tick)'
        )
        if not isinstance(obj, dict) or len(obj) != 1 or next(iter(obj)) not in ("events", "schedule"):
            self.err(ptr, help_)
            return None
        if "events" in obj:
            names = obj["events"]
            if not self.list_within_limit(names, pointer(ptr, "events")):
                return None
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and 0 < len(n) <= 128 for n in names):
                self.err(pointer(ptr, "events"), 'list the event names that trigger the rule, e.g. ["login", "report_created"]')
                return None
            return Trigger(events=tuple(dict.fromkeys(names)))
        sched = obj["schedule"]
        if not isinstance(sched, dict) or set(sched) - {"every"}:
            self.err(pointer(ptr, "schedule"), 'schedule is {"every": "1h"} or {} (every tick)')
            return None
        every = self.duration(sched.get("every", "1m"), pointer(ptr, "schedule", "every"), "every", 60)
        return Trigger(every_seconds=every) if every else None


def _finite(v: int | float) -> bool:
    # math.isfinite(int) converts to float, which overflows for ints past ~1e308.
    return isinstance(v, int) or math.isfinite(v)


def _dedupe(values: list[Any]) -> list[Any]:
    """Values in first-seen order without repeats (``True`` and ``1.0`` are different values here)."""
    seen: set[tuple[type, Any]] = set()
    out = []
    for v in values:
        if (type(v), v) not in seen:
            seen.add((type(v), v))
            out.append(v)
    return out


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, int) or abs(v) < 10**30 else f"an integer of {len(str(abs(v)))} digits"
    return text if len(text) <= 80 else text[:77] + "..."


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, bool)) or (isinstance(v, (int, float)) and _finite(v) and abs(v) <= MAX_NUMBER)


def _show(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, str) else str(v)


def _interval(p: Metric | Field) -> tuple[float, bool, float, bool] | None:
    """(lo, lo_inclusive, hi, hi_inclusive) of a numeric comparison, or None."""
    v, op = p.value, p.op
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return {
        ">": (v, False, math.inf, False),
        ">=": (v, True, math.inf, False),
        "<": (-math.inf, False, v, False),
        "<=": (-math.inf, False, v, True),
        "==": (v, True, v, True),
    }.get(op)


def _allowed_set(p: Metric | Field) -> set[Any] | None:
    value: Any = p.value  # a list for in/not_in
    if p.op == "==":
        return {value}
    if p.op == "in":
        return set(value)
    return None


def _compatible(a: Metric | Field, b: Metric | Field) -> bool:
    ia, ib = _interval(a), _interval(b)
    if ia and ib:
        lo, lo_inc = max((ia[0], ia[1]), (ib[0], ib[1]), key=lambda t: (t[0], not t[1]))
        hi, hi_inc = min((ia[2], ia[3]), (ib[2], ib[3]), key=lambda t: (t[0], t[1]))
        return bool(lo < hi or (lo == hi and lo_inc and hi_inc))
    sa, sb = _allowed_set(a), _allowed_set(b)
    if sa is not None and sb is not None:
        return bool(sa & sb)
    for s, other in ((sa, b), (sb, a)):
        if s is not None and other.op in ("!=", "not_in"):
            value: Any = other.value  # a list for not_in
            banned = {value} if other.op == "!=" else set(value)
            return bool(s - banned)
    return True


# ---- public API ------------------------------------------------------------


def parse_condition(obj: Any, *, retention_days: int = DEFAULT_RETENTION_DAYS, event_context: bool = False, base: str = "") -> Condition:
    """Parse a condition tree. Account-level by default; ``event_context=True`` also
    allows ``event.*``, ``user.*`` and user-scoped metrics (event-triggered rules)."""
    p = _Parser(retention_days, event_context)
    if not p.within_limits(obj, base):
        raise RuleValidationError(p.errors)
    node = p.node(obj, base)
    if p.errors:
        raise RuleValidationError(p.errors)
    assert node is not None  # a None node always comes with an error
    return node


def parse_rule(obj: Any, *, retention_days: int = DEFAULT_RETENTION_DAYS, rule_id: str | None = None) -> RuleDefinition:
    """Parse and validate a whole rule. ``rule_id`` (from the URL) wins over the body's."""
    p = _Parser(retention_days, event_context=False)
    if not isinstance(obj, dict):
        raise RuleValidationError([{"pointer": "", "message": "a rule is a JSON object; see docs/rules.md for an example"}])
    p.unknown_keys(obj, RULE_KEYS, "", "a rule")
    rid = obj.get("id", rule_id)
    if rule_id is not None and "id" in obj and obj["id"] != rule_id:
        p.err("/id", f"the body's id {obj['id']!r} differs from the URL's {rule_id!r}; remove it or make them equal")
    if rid is None and isinstance(obj.get("name"), str):
        rid = re.sub(r"[^a-z0-9]+", "-", obj["name"].lower()).strip("-")[:64] or None
    if not isinstance(rid, str) or not SLUG.match(rid):
        p.err("/id", 'id is a slug of lowercase letters, digits, "-" and "_" (at most 64), e.g. "no-login-14d"')
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        p.err("/name", 'name is required: a short sentence CS Ops recognise, e.g. "No login in 14 days" (at most 200 characters)')
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        p.err("/description", "description is text of at most 4000 characters")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not SLUG.match(kind):
        p.err("/kind", 'kind is churn_risk, expansion, lifecycle or a custom slug such as "advocacy"')
    severity = obj.get("severity", "medium")
    if severity not in SEVERITIES:
        p.err("/severity", f"severity is one of {', '.join(SEVERITIES)}; got {severity!r}")
    trigger = None
    if "trigger" not in obj:
        p.err("/trigger", 'add a trigger: {"events": ["login"]} or {"schedule": {"every": "1h"}}')
    else:
        trigger = p.trigger(obj["trigger"], "/trigger")
    audience = p.audience(obj.get("audience"), "/audience")
    condition = None
    if "condition" not in obj:
        p.err("/condition", 'add a condition, e.g. {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 14}]}')
    else:
        p.event_context = bool(trigger and not trigger.scheduled)
        if p.within_limits(obj["condition"], "/condition"):
            condition = p.node(obj["condition"], "/condition")
    cooldown = p.duration(obj.get("cooldown", "7d"), "/cooldown", "cooldown", 60)
    actions = Actions()
    if "actions" in obj:
        a = obj["actions"]
        if not isinstance(a, dict):
            p.err("/actions", 'actions is an object, e.g. {"set_lifecycle_stage": "at_risk"}')
        else:
            p.unknown_keys(a, ("set_lifecycle_stage",), "/actions", "actions")
            stage = a.get("set_lifecycle_stage")
            if stage is not None and (not isinstance(stage, str) or not SLUG.match(stage)):
                p.err("/actions/set_lifecycle_stage", 'a lifecycle stage is a slug such as "at_risk" or "expanding"')
            actions = Actions(set_lifecycle_stage=stage)
    if p.errors:
        raise RuleValidationError(p.errors)
    # Every missing or invalid part recorded an error above.
    assert isinstance(rid, str) and isinstance(name, str) and isinstance(kind, str)
    assert trigger is not None and condition is not None and cooldown is not None
    return RuleDefinition(
        id=rid,
        name=name.strip(),
        description=description,
        kind=kind,
        severity=severity,
        trigger=trigger,
        audience=audience,
        condition=condition,
        cooldown_seconds=cooldown,
        actions=actions,
    )
