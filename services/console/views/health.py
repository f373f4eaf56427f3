"""Customer health in the console (issue 21, item 6; docs/health.md): what the accounts
list, the overview, the account and engagement pages and the inbox show of it, and the
health model page. Every figure is the rules service's (its door); nothing here scores.

A CSM sees health only on the accounts of their own engagements (CS Ops see it
everywhere): :func:`visible_accounts` is the one place that decides it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from services.console import charts
from services.console.views import rules as editor
from services.console.web import OPS, Form, FormDep, Viewer, now_of, render
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared import jobs
from shared.api import SessionDep, context_of
from shared.errors import NotFound, TouchlineError, Unprocessable
from shared.jobs import FINISHED
from shared.jobs import service as job_service

router = APIRouter()
SPARK_DAYS = 30
HISTORY_DAYS = 90
CURRENT_DAYS = 7  # the rules service's "current" score: the latest of the last 7 days


def visible_accounts(session: Session, viewer: Viewer, ids: Iterable[str]) -> set[str]:
    """Of ``ids``, the accounts whose health ``viewer`` may see: all for CS Ops, for a CSM
    those of their own engagements (open or closed)."""
    ids = set(ids)
    if viewer.can("ops"):
        return ids
    csm = viewer.principal.csm_id
    if not csm or not ids:
        return set()
    # By the accounts asked about (a page of them), never by the CSM's whole history: a CSM
    # with 50,000 past engagements made the accounts page take seconds (bench-console).
    return outreach.accounts_engaged_by(session, csm, ids)


def current(session: Session, today: date, ids: list[str]) -> dict[str, Any]:
    """Each account's current score row (the latest of the last 7 days)."""
    return dict(rules.latest_health(session, today, today - timedelta(days=CURRENT_DAYS - 1), ids)) if ids else {}


def sparklines(session: Session, today: date, ids: list[str]) -> dict[str, Markup]:
    """A 30-day sparkline of daily scores per account, from one query per chunk."""
    start = today - timedelta(days=SPARK_DAYS - 1)
    out = {}
    for a, points in rules.health_histories(session, ids, start, today).items():
        out[a] = charts.sparkline(f"Health of {a}, last {SPARK_DAYS} days", SPARK_DAYS, [((d - start).days, v) for d, v in points])
    return out


def change_since(opened: Any, now_score: float | None) -> float | None:
    """Points moved since an engagement opened (its reason recorded the account's health then)."""
    if not isinstance(opened, dict) or opened.get("score") is None or now_score is None:
        return None
    return round(float(now_score) - float(opened["score"]), 1)


def of_engagements(session: Session, today: date, engagements: list[Any]) -> dict[str, dict[str, Any]]:
    """Per engagement id: the account's current health (``score``, ``label``), what its
    reason recorded when it opened (``opened``) and the points moved since (``change``).
    Only for engagements the viewer may already see (the inbox's, the engagement page's)."""
    now = current(session, today, sorted({e.account_id for e in engagements}))
    out = {}
    for e in engagements:
        row = now.get(e.account_id)
        opened = (e.reason or {}).get("health")
        if row is None and not opened:
            continue
        score = None if row is None else row.score
        out[e.id] = {
            "score": score,
            "label": None if row is None else row.label,
            "opened": opened if isinstance(opened, dict) else None,
            "change": change_since(opened, score),
        }
    return out


def label_chart(session: Session, today: date) -> tuple[Markup | None, dict[str, list[int]], list[str]]:
    """Accounts by label per day over HISTORY_DAYS (the daily scores)."""
    start = today - timedelta(days=HISTORY_DAYS - 1)
    days = [start + timedelta(days=i) for i in range(HISTORY_DAYS)]
    series = {label: [0] * HISTORY_DAYS for label in rules.HEALTH_LABELS}
    for d, label, n in rules.health_label_counts_by_day(session, start, today):
        if label in series:
            series[label][(d - start).days] += n
    labels = [d.strftime("%m-%d") for d in days]
    if not any(any(v) for v in series.values()):
        return None, series, labels
    chart = charts.bars(
        f"Accounts by health label, last {HISTORY_DAYS} days", labels, series, x_label="day (UTC)", y_label="accounts scored"
    )
    return chart, series, labels


def history_chart(session: Session, account_id: str, name: str, today: date) -> tuple[Markup | None, list[Any]]:
    start = today - timedelta(days=HISTORY_DAYS - 1)
    rows = rules.health_history(session, account_id, start, today)  # newest first
    if not rows:
        return None, rows
    scored = sorted((r.day, float(r.score)) for r in rows if r.score is not None)
    if not scored:
        return None, rows
    chart = charts.lines(
        f"Health of {name}, last {HISTORY_DAYS} days",
        [d.strftime("%m-%d") for d, _ in scored],
        {"score": [v for _, v in scored]},
        x_label="scored day (UTC)",
        y_label="score (0-100)",
    )
    return chart, rows


def _n(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def scoring_text(part: dict[str, Any]) -> str:
    """A component's (or an override's) scoring as a person reads it:
    "under 3: 100 points; 3 to 8: 70; from 8: 0"."""
    out = []
    if part.get("bands"):
        lower = None
        for b in part["bands"]:
            below = b.get("below")
            if below is None:
                span = "otherwise" if lower is None else f"from {_n(lower)}"
            elif lower is None:
                span = f"under {_n(below)}"
            else:
                span = f"{_n(lower)} to under {_n(below)}"
            out.append(f"{span}: {_n(b['points'])}")
            lower = below
    if part.get("linear"):
        a, b = part["linear"]["from"], part["linear"]["to"]
        out.append(f"linear from {_n(a['value'])} ({_n(a['points'])} points) to {_n(b['value'])} ({_n(b['points'])} points), clamped")
    if part.get("missing_points") is not None:
        out.append(f"without a value: {_n(part['missing_points'])}")
    elif "bands" in part or "linear" in part:
        out.append("without a value: left out")
    return "; ".join(out)


def validation_rows(result: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The report's groups (``by_band`` or ``by_label``) as the page's table rows: each
    group's name, outcomes, churns, churn rate and its 95% interval, as the API has them."""
    out = []
    for g in result.get(key) or []:
        name = f"{_n(g['from'])} to {'under ' if g['to'] < 100 else ''}{_n(g['to'])}" if key == "by_band" else g["label"]
        ci = g.get("ci95") or [None, None]
        out.append({"name": name, "outcomes": g["outcomes"], "churned": g["churned"], "rate": g["churn_rate"], "low": ci[0], "high": ci[1]})
    return out


def validation_chart(result: dict[str, Any]) -> Markup:
    """Churn rate per 20-point band of the score with its 95% interval (the bands without
    outcomes are drawn empty), titled with the AUC."""
    rows = [(f"{r['name']} ({r['outcomes']})", r["rate"], r["low"], r["high"]) for r in validation_rows(result, "by_band")]
    auc = result.get("auc")
    return charts.intervals(
        f"Churn rate per health band with 95% intervals (AUC {'n/a' if auc is None else _n(auc)})",
        rows,
        x_label="churn rate of the contract outcomes scored in the band",
        lo=0.0,
        hi=1.0,
    )


def latest_validation(session: Session, viewer: Viewer) -> Any:
    """The latest validation job that succeeded (its result is what the model page draws)."""
    done = job_service.list_visible(session, viewer.role, kind=rules.HEALTH_VALIDATION_KIND, state="succeeded", before=None, limit=1)
    return done[0] if done else None


@router.get("/health")
def model(request: Request, saved: str = "", session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    cur = rules.current_health_model(session)
    versions = rules.list_health_model_versions(session, limit=100) if cur is not None else []
    audit = rules.health_model_audit(session, limit=50) if cur is not None else []
    definition: dict[str, Any] = cur.row.definition if cur is not None else {}
    components = [dict(c, scoring=scoring_text(c)) for c in definition.get("components", [])]
    overrides = [
        {
            "when": o.get("when", {}),
            "components": {
                cid: scoring_text(ch) or ", ".join(f"{k} {_n(v)}" for k, v in ch.items()) for cid, ch in o.get("components", {}).items()
            },
        }
        for o in definition.get("overrides", [])
    ]
    return render(
        request,
        "health_model.html",
        current=cur,
        definition=definition,
        components=components,
        overrides=overrides,
        versions=versions,
        audit=audit,
        saved=saved if saved in ("1", "unchanged") else "",
        **_validation_context(latest_validation(session, viewer) if cur is not None else None),
    )


def _validation_context(job: Any) -> dict[str, Any]:
    result = job.result if job is not None and job.state == "succeeded" else None
    return {
        "validation": job,
        "result": result,
        "chart": validation_chart(result) if result else None,
        "bands": validation_rows(result, "by_band") if result else [],
        "labels": validation_rows(result, "by_label") if result else [],
    }


@router.post("/health/validate")
def validate_model(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """Queue the validation of the current model against the contract outcomes (as POST
    /v1/health/validation does) and go to its page."""
    settings = context_of(request).settings
    if form.problems:
        raise Unprocessable(form.problem_text())
    try:
        body = rules.HealthValidationIn(horizon_days=int(form.get("horizon_days") or 90))
    except ValueError:  # not a number, or pydantic's range check
        raise Unprocessable("horizon_days is a whole number of days from 1 to 730") from None
    now = now_of(request)
    rules.prepare_health_validation(session, body, settings, now.date())
    job = jobs.submit(
        session, rules.HEALTH_VALIDATION_KIND, body.model_dump(mode="json"), created_by=viewer.principal.actor, now=now, settings=settings
    )
    return RedirectResponse(f"/console/health/validations/{job.id}", status_code=303)


@router.get("/health/validations/{job_id}")
def validation_job(request: Request, job_id: int, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    """The validation job's progress (the page refreshes itself while it runs), then its result."""
    job = job_service.get_visible(session, job_id, viewer.role)
    if job.kind != rules.HEALTH_VALIDATION_KIND:
        raise NotFound(f"job {job_id} is not a validation of the health model")
    return render(request, "health_validation.html", refresh=job.state not in FINISHED, **_validation_context(job))


def _editor(request: Request, session: Session, text: str, exc: TouchlineError | None = None) -> HTMLResponse:
    """The model editor with ``text``: after a failed save, the API's validation errors
    under the lines their JSON pointers name (and its status)."""
    errors = editor.errors_of(text, exc) if exc is not None else []
    return render(
        request,
        "health_edit.html",
        status_code=exc.status_code if exc is not None else 200,
        current=rules.current_health_model(session),
        text=text,
        errors=errors,
        lines=editor.numbered(text, errors) if exc is not None else [],
    )


@router.get("/health/edit")
def edit_model(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    """The current model as YAML (the starter model before the first save)."""
    cur = rules.current_health_model(session)
    return _editor(request, session, editor.to_text(cur.row.definition if cur is not None else rules.starter_health_model()))


@router.post("/health/edit")
def save_model(request: Request, session: Session = SessionDep, viewer: Viewer = OPS, form: Form = FormDep) -> Response:
    """Validated as PUT /v1/health/model validates; a changed definition is a new version."""
    text = form.get("definition", "")
    settings = context_of(request).settings
    try:
        editor.refuse_form_problems(form, text)
        model = rules.parse_health_model(editor.parse_text(text, settings.max_json_depth), settings.raw_event_retention_days)
        _row, changed = rules.save_health_model(session, model, viewer.principal.actor, now_of(request))
    except TouchlineError as exc:
        return _editor(request, session, text, exc)
    return RedirectResponse(f"/console/health?saved={'1' if changed else 'unchanged'}", status_code=303)
