"""Template rendering: Jinja2's immutable sandbox, strict undefined variables, HTML
autoescape for the HTML body only (subject and text are plain text), and a budget.

A template can read the variables it is given and call the sandbox's safe filters;
it cannot reach Python internals (``__class__``, ``__globals__``, ``mro`` ...), mutate
its context, or produce a subject that injects mail headers.

Every render (at save, preview and send) runs in the budgeted sandbox (sandbox.py); an
overrun is reported as a :class:`TemplateProblem` naming the limit (a 422 at save and
preview; a message skipped with reason ``render_error`` at send). What a template renders
with is built in context.py.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from services.outreach.templates.sandbox import BudgetExceeded, RenderBudget, env_for, render_within

PARTS = ("subject", "html_body", "text_body")
MAX_SUBJECT = 998 - len("Subject: ")  # RFC 5322 line limit


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
def compile_part(part: str, source: str) -> Template:
    """Compiled once per distinct source (compiling is ~100x the cost of rendering)."""
    try:
        return env_for(part).from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(part, exc.lineno, f"syntax error: {exc.message}") from None


def render_part(part: str, source: str, context: dict[str, Any], budget: RenderBudget | None = None) -> str:
    template = compile_part(part, source)
    try:
        out = render_within(template, context, budget or RenderBudget())
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
