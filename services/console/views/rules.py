"""Rules: the list (enabled state, firings in the last 7 days), a rule's page
(definition, versions, audit, recent signals), the editor (YAML or JSON, errors next to
their line), enable/disable, dry-run for an account, and backtest (a background job,
polled by the page) with the diff against the current version. Every decision is the rules service's."""

from __future__ import annotations

import difflib
from datetime import date, timedelta
from typing import Any

import yaml
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from services.console import charts
from services.console.web import OPS, Form, FormDep, Viewer, now_of, render, seg
from services.rules import interface as rules
from shared import jobs
from shared.api import SessionDep, context_of
from shared.errors import NotFound, TouchlineError, Unprocessable
from shared.jobs import FINISHED
from shared.jobs import service as job_service
from shared.limits import yaml_compose, yaml_load

router = APIRouter()
FIRING_DAYS = 7
# Finding a line by pointer composes text that parse_text may not have bounded yet (the
# error may be another's): bounded at the deepest TOUCHLINE_MAX_JSON_DEPTH allowed.
POINTER_MAX_DEPTH = 200

NEW_RULE = """id: my-rule
name: My rule
kind: churn_risk
severity: medium
trigger: {schedule: daily}
condition:
  all:
    - {metric: count, event: login, window: 14d, op: "==", value: 0}
cooldown: 30d
"""


def to_text(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def definition_diff(old: dict[str, Any], new: dict[str, Any], a: int, b: int) -> list[str]:
    """The unified diff of two versions' definitions as YAML (a versions page's)."""
    return list(difflib.unified_diff(to_text(old).splitlines(), to_text(new).splitlines(), f"v{a}", f"v{b}", lineterm="", n=3))


def pointer_line(text: str, pointer: str | None) -> int | None:
    """The 1-based line of the node a JSON pointer names in YAML (or JSON) text; for a
    missing member, the line of its nearest existing parent."""
    try:
        node = yaml_compose(text, POINTER_MAX_DEPTH)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    for raw in (pointer or "").split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            nxt = node.value[int(part)]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
    return node.start_mark.line + 1


def parse_text(text: str, max_depth: int) -> Any:
    """YAML (JSON is YAML too) under the API's limits: a syntax error, or nesting deeper
    than ``max_depth`` (TOUCHLINE_MAX_JSON_DEPTH, as the API refuses JSON), becomes a
    validation error at its line, never RecursionError."""
    try:
        return yaml_load(text, max_depth)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "the text"
        problem: dict[str, Any] = {
            "pointer": "",
            "message": f"not valid YAML or JSON at {where}: {getattr(exc, 'problem', None) or exc}",
            "line": mark.line + 1 if mark else None,
        }
        raise rules.RuleValidationError([problem]) from None


def refuse_form_problems(form: Form, text: str) -> None:
    """The form's input-limit problems (web.Form: a NUL, its size) as validation errors,
    a NUL in the definition at its line."""
    if form.problems:
        problems: list[dict[str, Any]] = [
            {
                "pointer": "",
                "message": f"{name} {message}",
                "line": text.count("\n", 0, text.index("\x00")) + 1 if name == "definition" and "\x00" in text else None,
            }
            for name, message in form.problems.items()
        ]
        raise rules.RuleValidationError(problems)


def errors_of(text: str, exc: TouchlineError) -> list[dict[str, Any]]:
    errors = exc.detail if isinstance(exc.detail, list) else [{"pointer": "", "message": str(exc.detail)}]
    out: list[dict[str, Any]] = []
    for raw in errors:
        e: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {"pointer": "", "message": str(raw)}
        if e.get("line") is None:
            e["line"] = pointer_line(text, e.get("pointer"))
        out.append(e)
    return out


def numbered(text: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text's lines, each with the errors that point at it (shown under the line)."""
    at: dict[int, list[str]] = {}
    for e in errors:
        at.setdefault(e.get("line") or 0, []).append(f"{e.get('pointer') or '/'}: {e.get('message')}")
    lines = text.splitlines() or [""]
    return [{"n": i + 1, "text": line, "errors": at.get(i + 1, [])} for i, line in enumerate(lines)]


def _backtest_window(request: Request) -> dict[str, Any]:
    """The backtest form's default window: the 30 days ending today."""
    today = now_of(request).date()
    return {"default_start": (today - timedelta(days=29)).isoformat(), "default_end": today.isoformat()}


def _editor(request: Request, rule: Any, text: str, exc: TouchlineError | None = None) -> HTMLResponse:
    """The editor with ``text``: after a failed save, ``exc``'s errors under their lines
    (and its status); for a saved rule, the backtest form too."""
    errors = errors_of(text, exc) if exc is not None else []
    return render(
        request,
        "rule_edit.html",
        status_code=exc.status_code if exc is not None else 200,
        rule=rule,
        text=text,
        errors=errors,
        lines=numbered(text, errors) if exc is not None else [],
        saved=False,
        **(_backtest_window(request) if rule is not None else {}),
    )


@router.get("/rules")
def rules_list(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    listed = rules.list_rules(session, kind=None, enabled=None, trigger_type=None, include_deleted=False, after=None, limit=500)
    firings = rules.signal_counts_by_rule(session, now_of(request) - timedelta(days=FIRING_DAYS))
    return render(request, "rules.html", rules=listed, firings=firings, days=FIRING_DAYS)


@router.get("/rules/new")
def new_rule(request: Request, viewer: Viewer = OPS) -> Response:
    return _editor(request, None, NEW_RULE)


@router.post("/rules/new")
def create_rule(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    text = form.get("definition", "")
    settings = context_of(request).settings
    try:
        refuse_form_problems(form, text)
        definition, _ = rules.parse_rule(parse_text(text, settings.max_json_depth), settings.raw_event_retention_days)
        rule = rules.create_rule(session, definition, form.get("enabled") == "on", viewer.principal.actor, now_of(request))
    except TouchlineError as exc:
        return _editor(request, None, text, exc)
    return RedirectResponse(f"/console/rules/{rule.id}?saved=1", status_code=303)


@router.get("/rules/{rule_id}")
def rule_page(request: Request, rule_id: str, saved: bool = False, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    rule = rules.get_rule(session, rule_id)
    definition = rules.current_definition(session, rule)
    signals = rules.list_signals(session, kind=None, rule_id=rule_id, account_id=None, since=None, until=None, before=None, limit=20)
    return render(
        request,
        "rule.html",
        rule=rule,
        definition=definition,
        text=to_text(definition),
        versions=rules.list_rule_versions(session, rule_id),
        audit=rules.rule_audit(session, rule_id),
        signals=signals,
        saved=saved,
        **_backtest_window(request),
    )


@router.get("/rules/{rule_id}/edit")
def edit_rule(request: Request, rule_id: str, session: Session = SessionDep, viewer: Viewer = OPS) -> Response:
    rule = rules.get_rule(session, rule_id, include_deleted=False)
    return _editor(request, rule, to_text(rules.current_definition(session, rule)))


@router.post("/rules/{rule_id}/edit")
def save_rule(request: Request, rule_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    text = form.get("definition", "")
    rule = rules.get_rule(session, rule_id, include_deleted=False)
    settings = context_of(request).settings
    try:
        refuse_form_problems(form, text)
        definition, enabled = rules.parse_rule(
            parse_text(text, settings.max_json_depth), settings.raw_event_retention_days, rule_id=rule_id
        )
        rules.update_rule(session, rule_id, definition, enabled, viewer.principal.actor, now_of(request))
    except TouchlineError as exc:
        return _editor(request, rule, text, exc)
    return RedirectResponse(f"/console/rules/{rule_id}?saved=1", status_code=303)


def _set_enabled(request: Request, rule_id: str, enabled: bool, session: Session, viewer: Viewer) -> RedirectResponse:
    rules.set_rule_enabled(session, rule_id, enabled, viewer.principal.actor, now_of(request))
    return RedirectResponse(f"/console/rules/{rule_id}", status_code=303)


@router.post("/rules/{rule_id}/enable")
def enable_rule(request: Request, rule_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep) -> Response:
    return _set_enabled(request, rule_id, True, session, viewer)


@router.post("/rules/{rule_id}/disable")
def disable_rule(request: Request, rule_id: str, session: Session = SessionDep, viewer: Viewer = OPS, _form: Form = FormDep) -> Response:
    return _set_enabled(request, rule_id, False, session, viewer)


@router.get("/rules/{rule_id}/dry-run")
def rule_dry_run(
    request: Request, rule_id: str, account_id: str = Query("", max_length=128), session: Session = SessionDep, viewer: Viewer = OPS
) -> HTMLResponse:
    rule = rules.get_rule(session, rule_id)
    result = error = None
    if account_id:
        definition, _ = rules.parse_rule(rules.current_definition(session, rule), 100_000)
        try:
            result = rules.dry_run(session, definition, rule.current_version, account_id, now_of(request))
        except TouchlineError as exc:
            error = exc.detail
    return render(request, "dry_run.html", rule=rule, account_id=account_id, result=result, error=error)


@router.post("/rules/{rule_id}/backtest")
def rule_backtest(request: Request, rule_id: str, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """Queue a backtest job (as POST /v1/rules/backtest does) and go to its page."""
    rule = rules.get_rule(session, rule_id)
    settings = context_of(request).settings
    text = form.get("definition") or ""
    if form.problems and not text.strip():
        raise Unprocessable(form.problem_text())
    try:
        start, end = date.fromisoformat(form.get("start", "")), date.fromisoformat(form.get("end", ""))
    except ValueError:
        raise Unprocessable("start and end are dates like 2026-03-01") from None
    try:
        refuse_form_problems(form, text)
        if text.strip():
            body = rules.BacktestIn(
                rule=parse_text(text, settings.max_json_depth), rule_id=rule_id, start=start, end=end, compare_with_current=True, samples=10
            )
        else:
            body = rules.BacktestIn(rule_id=rule_id, start=start, end=end, samples=10)
        rules.prepare_backtest(session, body, settings)
        job = jobs.submit(
            session,
            rules.BACKTEST_KIND,
            body.model_dump(mode="json"),
            created_by=viewer.principal.actor,
            now=now_of(request),
            settings=settings,
        )
    except TouchlineError as exc:
        if not text.strip():
            raise
        errors = errors_of(text, exc)
        return render(
            request,
            "backtest.html",
            status_code=exc.status_code,
            rule=rule,
            job=None,
            result=None,
            chart=None,
            text=text,
            errors=errors,
            lines=numbered(text, errors),
            start=start,
            end=end,
            refresh=False,
        )
    return RedirectResponse(f"/console/rules/{seg(rule_id)}/backtests/{job.id}", status_code=303)


@router.get("/rules/{rule_id}/backtests/{job_id}")
def backtest_job(request: Request, rule_id: str, job_id: int, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    """The job's progress (the page refreshes itself while it runs), then its result."""
    rule = rules.get_rule(session, rule_id)
    job = job_service.get_visible(session, job_id, viewer.role)
    params = job.params or {}
    if job.kind != rules.BACKTEST_KIND or params.get("rule_id") != rule_id:
        raise NotFound(f"job {job_id} is not a backtest of {rule_id!r}")
    result = job.result if job.state == "succeeded" else None
    chart = None
    if result:
        labels = [d["day"][5:] for d in result["per_day"]]
        diff = result.get("diff") or {}
        if diff.get("per_day"):  # an edit against the saved version: both, day by day
            version = (result.get("compared_with") or {}).get("version")
            chart = charts.bars(
                f"Firings per day of {rule_id}: the edit against v{version} ({result['start']} to {result['end']})",
                labels,
                {"the edit": [d["edited"] for d in diff["per_day"]], f"v{version}": [d["current"] for d in diff["per_day"]]},
                x_label="day (UTC)",
                y_label="firings",
            )
        else:
            chart = charts.bars(
                f"Firings per day of {rule_id} ({result['start']} to {result['end']})",
                labels,
                {"firings": [d["firings"] for d in result["per_day"]]},
                x_label="day (UTC)",
                y_label="firings",
            )
    return render(
        request,
        "backtest.html",
        rule=rule,
        job=job,
        result=result,
        chart=chart,
        text=bool(params.get("rule")),
        errors=[],
        lines=[],
        start=params.get("start"),
        end=params.get("end"),
        refresh=job.state not in FINISHED,
    )
