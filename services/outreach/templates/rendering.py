"""Template rendering: Jinja2's immutable sandbox, strict undefined variables, HTML
autoescape for the HTML body only (subject and text are plain text), and a budget.

A template can read the variables it is given and call the sandbox's safe filters;
it cannot reach Python internals (``__class__``, ``__globals__``, ``mro`` ...), mutate
its context, or produce a subject that injects mail headers.

The budget. Jinja2's sandbox stops a template reaching Python, not a template that
spins (two nested ``range(100000)`` loops) or allocates (``'x' * 10**9``). Every render
(at save, preview and send) runs under a :class:`RenderBudget`:

- **CPU time** (``TOUCHLINE_TEMPLATE_CPU_SECONDS``, per part): checked on every loop
  iteration, call, filter and output chunk, with the thread's CPU clock;
- **loop iterations** (``TOUCHLINE_TEMPLATE_MAX_LOOP_ITERATIONS``, all ``for`` loops of
  the part together): every ``for`` loop's iterable is wrapped at compile time;
- **output size** (``TOUCHLINE_TEMPLATE_MAX_OUTPUT_CHARS``): the rendered part, and
  every string or list an operation builds on the way. Operations that could build a
  huge value in one step are checked *before* they run: ``*``, ``+``, ``%``, ``**``,
  ``~``, ``join``, ``replace``, ``wordwrap``, ``indent``, ``sum``, ``format`` and the
  padding methods (``center``, ``ljust`` ...), and any number argument of a filter or
  string method is capped at the output limit. Every other filter's result is checked
  after it runs, so no value can compound past the limit.

An overrun raises :class:`BudgetExceeded`, reported as a :class:`TemplateProblem`
naming the limit (a 422 at save and preview; a message skipped with reason
``render_error`` at send). The checks work on the template's own operations, with no
tracing hook and no extra process: they cost about what the render itself costs.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, pass_context

PARTS = ("subject", "html_body", "text_body")
MAX_SUBJECT = 998 - len("Subject: ")  # RFC 5322 line limit


@dataclass(frozen=True)
class RenderBudget:
    cpu_seconds: float = 0.5
    max_output_chars: int = 1_000_000
    max_loop_iterations: int = 100_000

    @classmethod
    def from_settings(cls, settings) -> RenderBudget:
        return cls(settings.template_cpu_seconds, settings.template_max_output_chars, settings.template_max_loop_iterations)


class BudgetExceeded(Exception):
    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit, self.message = limit, message


class _Spend:
    """What one render has used so far (per part)."""

    __slots__ = ("budget", "cpu_deadline", "wall_deadline", "iterations", "ops")

    def __init__(self, budget: RenderBudget):
        self.budget = budget
        # The thread's CPU clock is a system call (~13 us here); the wall clock is not
        # (~1 us). A thread cannot use more CPU than wall time, so the CPU clock is only
        # read once the wall clock says the budget could have been spent.
        self.cpu_deadline = time.thread_time() + budget.cpu_seconds
        self.wall_deadline = time.perf_counter() + budget.cpu_seconds
        self.iterations = 0
        self.ops = 0

    def tick(self) -> None:
        self.ops += 1
        if self.ops & 63 == 0 and time.perf_counter() > self.wall_deadline and time.thread_time() > self.cpu_deadline:
            raise BudgetExceeded(
                "cpu_seconds",
                f"rendering used more than {self.budget.cpu_seconds} s of CPU time (TOUCHLINE_TEMPLATE_CPU_SECONDS); simplify the loops",
            )

    def size(self, n: int, what: str) -> None:
        if n > self.budget.max_output_chars:
            raise BudgetExceeded(
                "max_output_chars",
                f"{what} would be {n} long; the limit is {self.budget.max_output_chars} (TOUCHLINE_TEMPLATE_MAX_OUTPUT_CHARS)",
            )

    def number(self, v: Any, what: str) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > self.budget.max_output_chars:
            raise BudgetExceeded(
                "max_output_chars",
                f"{what} takes {v}; numbers given to it are limited to "
                f"{self.budget.max_output_chars} (TOUCHLINE_TEMPLATE_MAX_OUTPUT_CHARS)",
            )

    def check_result(self, value: Any, what: str) -> Any:
        if isinstance(value, (str, list, tuple, dict)):
            self.size(len(value), f"the result of {what}")
        return value


_SPEND: contextvars.ContextVar[_Spend | None] = contextvars.ContextVar("template_spend", default=None)
_WIDTH = re.compile(r"\d+")


def _sized(v: Any) -> int:
    return len(v) if isinstance(v, (str, list, tuple)) else 0


def _format_widths(spend: _Spend, fmt: Any, what: str) -> None:
    if isinstance(fmt, str):
        for m in _WIDTH.finditer(fmt):
            if len(m.group()) > 7 or int(m.group()) > spend.budget.max_output_chars:
                spend.number(int(m.group()[:12]), what)


def _precheck(spend: _Spend, name: str, value: Any, args: tuple, kwargs: dict) -> Any:
    """Refuse, before it runs, an operation that would build something over the limit.
    Returns the value to operate on (an iterator is read into a list to be measured)."""
    for a in (*args, *kwargs.values()):
        spend.number(a, name)
    if name in ("join", "sum") and not isinstance(value, (str, list, tuple, dict, range)) and hasattr(value, "__iter__"):
        value = list(value)
    if name == "join":
        sep = args[0] if args else kwargs.get("d", "")
        items = value if hasattr(value, "__len__") else ()
        extra = sum(_sized(i) for i in items) if isinstance(items, (list, tuple)) else len(items) * 20
        spend.size(len(items) * _sized(sep) + extra, "join")
    elif name == "replace" and isinstance(value, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        hits = value.count(old) if old else len(value) + 1
        spend.size(len(value) + hits * len(new), "replace")
    elif name == "wordwrap" and isinstance(value, str):
        width = args[0] if args else kwargs.get("width", 79)
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring", "\n")
        spend.size(len(value) + (len(value) // max(int(width or 1), 1) + 1) * _sized(wrap), "wordwrap")
    elif name == "indent" and isinstance(value, str):
        width = args[0] if args else kwargs.get("width", 4)
        spend.size(len(value) + (value.count("\n") + 1) * (_sized(width) or int(width or 0)), "indent")
    elif name == "sum" and isinstance(value, (list, tuple)):
        spend.size(sum(_sized(i) for i in value), "sum")
    elif name in ("format", "format_map"):
        _format_widths(spend, value, name)
    elif name in ("tojson", "pprint"):
        indent = kwargs.get("indent", args[0] if args else None)
        if isinstance(indent, int) and indent > 16:
            spend.number(indent * spend.budget.max_output_chars, f"{name}'s indent")
    return value


def _budgeted_filter(name: str, func):
    pass_arg = _PassArg.from_obj(func)

    @pass_context  # never folded at compile time, where no budget is in force
    @functools.wraps(func)
    def wrapper(context, value=None, *args, **kwargs):
        spend = _SPEND.get()
        if spend is not None:
            spend.tick()
            value = _precheck(spend, name, value, args, kwargs)
        if pass_arg is _PassArg.context:
            out = func(context, value, *args, **kwargs)
        elif pass_arg is _PassArg.eval_context:
            out = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg is _PassArg.environment:
            out = func(context.environment, value, *args, **kwargs)
        else:
            out = func(value, *args, **kwargs)
        return spend.check_result(out, f"|{name}") if spend is not None else out

    wrapper.jinja_pass_arg = _PassArg.context  # type: ignore[attr-defined]  # Jinja2 reads this marker; functools.wraps copied the original's
    return wrapper


@pass_context
def _counted(_context, iterable):
    """Wraps every ``for`` loop's iterable: counts iterations against the budget."""
    spend = _SPEND.get()
    if spend is None:
        yield from iterable
        return
    limit = spend.budget.max_loop_iterations
    for item in iterable:
        spend.iterations += 1
        if spend.iterations > limit:
            raise BudgetExceeded(
                "max_loop_iterations", f"the loops ran more than {limit} iterations in all (TOUCHLINE_TEMPLATE_MAX_LOOP_ITERATIONS)"
            )
        spend.tick()
        yield item


@pass_context
def _concat_checked(_context, value):
    spend = _SPEND.get()
    if spend is not None:
        spend.size(len(value), "the ~ concatenation")
    return value


_DICT_ATTRIBUTES = frozenset(dir(dict))


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the render budget (see the module docstring)."""

    intercepted_binops = frozenset(["*", "+", "%", "**"])
    _LOOP = "_tl_counted"
    _CONCAT = "_tl_concat"
    _PADDING = ("center", "ljust", "rjust", "zfill", "expandtabs", "join", "replace", "format", "format_map")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}
        self.filters[self._LOOP] = _counted
        self.filters[self._CONCAT] = _concat_checked

    def _parse(self, source, name, filename):
        # Jinja2 3.1 (pinned): every template compiles from this tree, so wrapping here
        # covers every loop and every ~ of every template.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, self._LOOP, [], [], None, None, lineno=loop.lineno)
        for parent in list(tree.find_all(nodes.Node)):
            for field, child in parent.iter_fields():
                if isinstance(child, nodes.Concat):
                    setattr(parent, field, nodes.Filter(child, self._CONCAT, [], [], None, None, lineno=child.lineno))
                elif isinstance(child, list):
                    for i, c in enumerate(child):
                        if isinstance(c, nodes.Concat):
                            child[i] = nodes.Filter(c, self._CONCAT, [], [], None, None, lineno=c.lineno)
        return tree

    def getattr(self, obj, attribute):
        # ``x.name`` on a plain dict that has no such attribute is ``x["name"]``: what
        # Jinja2 finds after a failed getattr() (an AttributeError raised and caught, the
        # costliest part of rendering a template of dicts), found first. Same result.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, KeyError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator, left, right):
        spend = _SPEND.get()
        if spend is not None:
            spend.tick()
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        spend.size(len(seq) * max(n, 0), "the * repetition")
            elif operator == "+":
                spend.size(_sized(left) + _sized(right), "the + concatenation")
            elif operator == "%" and isinstance(left, str):
                _format_widths(spend, left, "the % format")
            elif operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
                if abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > 4096:
                    raise BudgetExceeded(
                        "max_output_chars", f"{left} ** {right} is a number of more than 4096 bits; templates do not need such numbers"
                    )
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (Jinja2's signature)
        spend = _SPEND.get()
        if spend is None:
            return super().call(__context, __obj, *args, **kwargs)
        spend.tick()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str) and name in __self._PADDING:
            _precheck(spend, name, owner, args, kwargs)
        return spend.check_result(super().call(__context, __obj, *args, **kwargs), f"{name or 'the call'}()")


def _env(autoescape: bool) -> BudgetedSandbox:
    return BudgetedSandbox(
        undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
    )


_TEXT = _env(False)
_HTML = _env(True)


def env_for(part: str) -> BudgetedSandbox:
    return _HTML if part == "html_body" else _TEXT


@dataclass
class TemplateProblem(Exception):
    part: str
    line: int | None
    message: str
    limit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        where = f" on line {self.line}" if self.line else ""
        out = {"part": self.part, "line": self.line, "message": f"{self.part}{where}: {self.message}"}
        if self.limit:
            out["limit"] = self.limit
        return out


@dataclass
class Rendered:
    subject: str
    html_body: str
    text_body: str


def _template_line(exc: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


@lru_cache(maxsize=512)
def compile_part(part: str, source: str):
    """Compiled once per distinct source (compiling is ~100x the cost of rendering)."""
    try:
        return env_for(part).from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, exc.lineno, f"syntax error: {exc.message}") from None


def _render_within(template, context: dict[str, Any], budget: RenderBudget) -> str:
    spend = _Spend(budget)
    token = _SPEND.set(spend)
    try:
        chunks: list[str] = []
        size = 0
        limit = budget.max_output_chars
        try:
            for chunk in template.root_render_func(_new_context(template, context)):
                size += len(chunk)
                if size > limit:
                    spend.size(size, "the rendered text")
                spend.tick()
                chunks.append(chunk)
        except Exception:
            template.environment.handle_exception()  # re-raises with the template's line numbers
        return template.environment.concat(chunks)
    finally:
        _SPEND.reset(token)


def _new_context(template, variables: dict[str, Any]):
    """``template.new_context(variables)``, without reading the template's globals (a
    ChainMap) twice per render: they are copied once per compiled template."""
    flat = getattr(template, "_tl_globals", None)
    if flat is None:
        flat = template._tl_globals = dict(template.globals)
    return new_context(template.environment, template.name, template.blocks, {**flat, **variables}, True, flat)


def render_part(part: str, source: str, context: dict[str, Any], budget: RenderBudget | None = None) -> str:
    template = compile_part(part, source)
    try:
        out = _render_within(template, context, budget or RenderBudget())
    except BudgetExceeded as exc:
        raise TemplateProblem(part, _template_line(exc), f"over the rendering budget: {exc.message}", exc.limit) from None
    except UndefinedError as exc:
        raise TemplateProblem(
            part, _template_line(exc), f"undefined variable: {exc.message}. Variables available: {', '.join(sorted(context))}"
        ) from None
    except SecurityError as exc:
        raise TemplateProblem(part, _template_line(exc), f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(part, _template_line(exc), f"{type(exc).__name__}: {exc}") from None
    except (MemoryError, RecursionError) as exc:
        raise TemplateProblem(
            part,
            _template_line(exc),
            f"over the rendering budget: {type(exc).__name__}",
            "memory" if isinstance(exc, MemoryError) else "recursion",
        ) from None
    except Exception as exc:  # e.g. a ZeroDivisionError from template arithmetic
        raise TemplateProblem(part, _template_line(exc), f"{type(exc).__name__}: {exc}") from None
    if part == "subject":
        out = out.strip()
        if "\n" in out or "\r" in out:
            raise TemplateProblem(part, None, "the subject renders to more than one line; a subject must be a single line")
        if len(out) > MAX_SUBJECT:
            raise TemplateProblem(part, None, f"the subject renders to {len(out)} characters; the limit is {MAX_SUBJECT}")
    return out


def render(parts: dict[str, str], context: dict[str, Any], budget: RenderBudget | None = None) -> Rendered:
    return Rendered(**{p: render_part(p, parts.get(p) or "", context, budget) for p in PARTS})


# ---- context -------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def account_context(account) -> dict[str, Any]:
    if account is None:
        return {}
    return {
        "id": account.id,
        "name": account.name or account.id,
        "plan": account.plan,
        "arr": account.arr,
        "seats": account.seats,
        "segment": account.segment,
        "lifecycle_stage": account.lifecycle_stage,
        "renewal_date": account.renewal_date,
        "owner_email": account.owner_email,
        "traits": dict(account.traits or {}),
    }


def recipient_context(user=None, *, email: str | None = None, role: str | None = None) -> dict[str, Any]:
    name = getattr(user, "name", None) or ""
    return {
        "id": getattr(user, "id", None),
        "email": getattr(user, "email", None) or email,
        "name": name,
        "first_name": name.split()[0] if name.strip() else "there",
        "role": getattr(user, "role", None) or role,
        "timezone": getattr(user, "timezone", None),
    }


def build_context(
    *, account: dict, recipient: dict, signal: dict, playbook: dict, unsubscribe_url: str, settings, brief: dict | None = None
) -> dict[str, Any]:
    """What a template renders with. ``brief`` is for internal templates (a message to
    the account owner): the evidence as sentences, what automation already sent, what
    happens next and where to look (:func:`brief_context`); empty for customer copy."""
    return {
        "account": account,
        "recipient": recipient,
        "signal": signal,
        "playbook": playbook,
        "unsubscribe_url": unsubscribe_url,
        "product": {"name": settings.product_name, "url": settings.product_url},
        "sender": {"name": settings.mail_from_name, "email": settings.mail_from},
        "brief": brief or {"evidence": [], "sent": [], "next": [], "account_url": ""},
    }


def _evidence_line(name: str, value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        needs = f" (the rule needs {value.get('op', '')} {value['threshold']})" if "threshold" in value else ""
        return f"{name}: {value['value']}{needs}"
    return f"{name}: {value}"


def brief_context(*, account_id: str, signal: dict, sent: list[dict[str, Any]], next_steps: list[str], settings) -> dict[str, Any]:
    """The ``brief`` an internal template renders: which evidence made the signal fire
    (one sentence each), what automation sent so far (at, channel, to, subject, state),
    what the playbook does next, and the account's console page."""
    return {
        "evidence": [_evidence_line(k, v) for k, v in sorted(dict(signal.get("evidence") or {}).items())],
        "sent": sent,
        "next": next_steps,
        "account_url": f"{settings.public_url}/console/accounts/{quote(account_id, safe='')}",
    }


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sample_context(settings, extra: dict | None = None) -> dict[str, Any]:
    """What a template is validated against on save: every variable a real send has."""
    ctx = build_context(
        account={
            "id": "acme",
            "name": "Acme Inc",
            "plan": "pro",
            "arr": 24000.0,
            "seats": 25,
            "segment": "smb",
            "lifecycle_stage": "adopted",
            "renewal_date": date(2027, 3, 1),
            "owner_email": "owner@acme.example",
            "traits": {},
        },
        recipient={
            "id": "ada",
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "first_name": "Ada",
            "role": "champion",
            "timezone": "Europe/London",
        },
        signal={
            "signal_id": "sample",
            "rule_id": "sample-rule",
            "rule_version": 1,
            "rule_name": "Sample rule",
            "kind": "churn_risk",
            "severity": "medium",
            "fired_at": datetime(2026, 3, 2, 9, tzinfo=UTC),
            "user_id": None,
            "evidence": {},
        },
        playbook={"id": "sample-playbook", "name": "Sample playbook", "version": 1},
        unsubscribe_url="https://touchline.example/unsubscribe/sample-token",
        settings=settings,
        brief={
            "evidence": ["days_since_last_login: 15 (the rule needs >= 14)"],
            "sent": [
                {
                    "at": "2026-03-02T09:00:00+00:00",
                    "channel": "email",
                    "to": "ada@acme.example",
                    "subject": "Ada, your Acme Inc workspace is waiting",
                    "state": "sent",
                }
            ],
            "next": ["wait 7d", "open a recover_usage engagement for a pooled CSM (time-box 30d)"],
            "account_url": "https://touchline.example/console/accounts/acme",
        },
    )
    return _merge(ctx, extra or {})
