"""The template sandbox and its budget: Jinja2's immutable sandbox with strict undefined
variables, every operation counted against a :class:`RenderBudget`.

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

An overrun raises :class:`BudgetExceeded`, reported as a ``TemplateProblem`` (rendering.py)
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, nodes
from jinja2.runtime import Context, new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, pass_context

from shared.settings import Settings


@dataclass(frozen=True)
class RenderBudget:
    cpu_seconds: float = 0.5
    max_output_chars: int = 1_000_000
    max_loop_iterations: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderBudget:
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


def _precheck(spend: _Spend, name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
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


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = _PassArg.from_obj(func)

    @pass_context  # never folded at compile time, where no budget is in force
    @functools.wraps(func)
    def wrapper(context: Context, value: Any = None, *args: Any, **kwargs: Any) -> Any:
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
def _counted(_context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
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
def _concat_checked(_context: Context, value: str) -> str:
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = {name: _budgeted_filter(name, f) for name, f in self.filters.items()}
        self.filters[self._LOOP] = _counted
        self.filters[self._CONCAT] = _concat_checked

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
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

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``x.name`` on a plain dict that has no such attribute is ``x["name"]``: what
        # Jinja2 finds after a failed getattr() (an AttributeError raised and caught, the
        # costliest part of rendering a template of dicts), found first. Same result.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, KeyError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
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

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja2's signature)
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


def render_within(template: Template, context: dict[str, Any], budget: RenderBudget) -> str:
    """Render a compiled template under ``budget``; raises :class:`BudgetExceeded` on an overrun."""
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


def _new_context(template: Template, variables: dict[str, Any]) -> Context:
    """``template.new_context(variables)``, without reading the template's globals (a
    ChainMap) twice per render: they are copied once per compiled template."""
    flat = getattr(template, "_tl_globals", None)
    if flat is None:
        flat = template._tl_globals = dict(template.globals)  # type: ignore[attr-defined]  # our cache on Jinja2's Template
    return new_context(template.environment, template.name, template.blocks, {**flat, **variables}, True, flat)
