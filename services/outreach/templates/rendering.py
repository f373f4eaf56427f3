"""Template rendering: Jinja2's immutable sandbox, strict undefined variables, HTML
autoescape for the HTML body only (subject and text are plain text).

A template can read the variables it is given and call the sandbox's safe filters;
it cannot reach Python internals (``__class__``, ``__globals__``, ``mro`` ...), mutate
its context, or produce a subject that injects mail headers.
"""
from __future__ import annotations

import traceback
from functools import lru_cache
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

PARTS = ("subject", "html_body", "text_body")
MAX_SUBJECT = 998 - len("Subject: ")  # RFC 5322 line limit


def _env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=autoescape,
                                         trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


_TEXT = _env(False)
_HTML = _env(True)


def env_for(part: str) -> ImmutableSandboxedEnvironment:
    return _HTML if part == "html_body" else _TEXT


@dataclass
class TemplateProblem(Exception):
    part: str
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        where = f" on line {self.line}" if self.line else ""
        return {"part": self.part, "line": self.line, "message": f"{self.part}{where}: {self.message}"}


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


def render_part(part: str, source: str, context: dict[str, Any]) -> str:
    template = compile_part(part, source)
    try:
        out = template.render(context)
    except UndefinedError as exc:
        raise TemplateProblem(part, _template_line(exc),
                              f"undefined variable: {exc.message}. Variables available: {', '.join(sorted(context))}") from None
    except SecurityError as exc:
        raise TemplateProblem(part, _template_line(exc), f"not allowed in a template: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(part, _template_line(exc), f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # e.g. a ZeroDivisionError from template arithmetic
        raise TemplateProblem(part, _template_line(exc), f"{type(exc).__name__}: {exc}") from None
    if part == "subject":
        out = out.strip()
        if "\n" in out or "\r" in out:
            raise TemplateProblem(part, None, "the subject renders to more than one line; a subject must be a single line")
        if len(out) > MAX_SUBJECT:
            raise TemplateProblem(part, None, f"the subject renders to {len(out)} characters; the limit is {MAX_SUBJECT}")
    return out


def render(parts: dict[str, str], context: dict[str, Any]) -> Rendered:
    return Rendered(**{p: render_part(p, parts.get(p) or "", context) for p in PARTS})


# ---- context -------------------------------------------------------------

def _jsonable(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def account_context(account) -> dict[str, Any]:
    if account is None:
        return {}
    return {
        "id": account.id, "name": account.name or account.id, "plan": account.plan, "arr": account.arr,
        "seats": account.seats, "segment": account.segment, "lifecycle_stage": account.lifecycle_stage,
        "renewal_date": account.renewal_date, "owner_email": account.owner_email, "traits": dict(account.traits or {}),
    }


def recipient_context(user=None, *, email: str | None = None, role: str | None = None) -> dict[str, Any]:
    name = getattr(user, "name", None) or ""
    return {
        "id": getattr(user, "id", None), "email": getattr(user, "email", None) or email, "name": name,
        "first_name": name.split()[0] if name.strip() else "there", "role": getattr(user, "role", None) or role,
        "timezone": getattr(user, "timezone", None),
    }


def build_context(*, account: dict, recipient: dict, signal: dict, playbook: dict, unsubscribe_url: str,
                  settings) -> dict[str, Any]:
    return {
        "account": account, "recipient": recipient, "signal": signal, "playbook": playbook,
        "unsubscribe_url": unsubscribe_url,
        "product": {"name": settings.product_name, "url": settings.product_url},
        "sender": {"name": settings.mail_from_name, "email": settings.mail_from},
    }


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sample_context(settings, extra: dict | None = None) -> dict[str, Any]:
    """What a template is validated against on save: every variable a real send has."""
    ctx = build_context(
        account={"id": "acme", "name": "Acme Inc", "plan": "pro", "arr": 24000.0, "seats": 25, "segment": "smb",
                 "lifecycle_stage": "adopted", "renewal_date": date(2027, 3, 1), "owner_email": "owner@acme.example",
                 "traits": {}},
        recipient={"id": "ada", "email": "ada@acme.example", "name": "Ada Lovelace", "first_name": "Ada",
                   "role": "champion", "timezone": "Europe/London"},
        signal={"signal_id": "sample", "rule_id": "sample-rule", "rule_version": 1, "rule_name": "Sample rule",
                "kind": "churn_risk", "severity": "medium", "fired_at": datetime(2026, 3, 2, 9, tzinfo=timezone.utc),
                "user_id": None, "evidence": {}},
        playbook={"id": "sample-playbook", "name": "Sample playbook", "version": 1},
        unsubscribe_url="https://touchline.example/unsubscribe/sample-token",
        settings=settings,
    )
    return _merge(ctx, extra or {})
