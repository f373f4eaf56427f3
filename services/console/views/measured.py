"""What the content library and the surveys achieved, in the console (issue 22, items 7
and 8; docs/content.md and docs/surveys.md): the library (filtered by tag) and a
resource's page with its report (sent, clicked, treated vs holdout with the lift and its
interval, per step and per named segment); the surveys answered and a survey's page
(NPS or CSAT over time, a chart with its data table beside it, by segment, and its
report). CS Ops and CSMs, like the APIs they show: counts only, no account is named.
Every figure is outreach's (its door)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from services.console import charts
from services.console.web import READER, Viewer, now_of, render
from services.outreach import interface as outreach
from shared.api import SessionDep
from shared.errors import Unprocessable
from shared.stats import wilson

router = APIRouter()
LIBRARY_PAGE = 100
SURVEYS_PAGE = 100


def lift_chart(title: str, report: Any) -> Markup | None:
    """Treated and holdout conversion with their Wilson intervals and the lift with its
    interval, as the playbook page draws them."""
    t, h = report.treated, report.holdout
    if not (t.enrolled or h.enrolled):
        return None
    tl, th = wilson(t.converted, t.enrolled) if t.enrolled else (None, None)
    hl, hh = wilson(h.converted, h.enrolled) if h.enrolled else (None, None)
    ci = report.confidence_interval
    rows = [
        ("treated conversion", t.conversion_rate, tl, th),
        ("holdout conversion", h.conversion_rate, hl, hh),
        ("lift (treated − holdout)", report.lift, ci[0] if ci else None, ci[1] if ci else None),
    ]
    lo = min([-0.1] + [v for r in rows for v in r[1:] if v is not None])
    hi = max([0.1] + [v for r in rows for v in r[1:] if v is not None])
    return charts.intervals(title, rows, x_label="conversion rate / lift (percentage points)", lo=lo, hi=hi)


@router.get("/resources")
def library(
    request: Request,
    tag: str = Query("", max_length=64, description="a value in any tag list"),
    after: str = Query("", max_length=128, description="the resources after this id (the next page)"),
    deleted: str = Query("", max_length=128, description="the resource just deleted (said above the list)"),
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    items = outreach.list_resources(session, tag=tag or None, after=after or None, limit=LIBRARY_PAGE)
    return render(
        request,
        "resources.html",
        items=items,
        tag=tag,
        after=after,
        deleted=deleted,
        next_after=items[-1].id if len(items) == LIBRARY_PAGE else "",
    )


@router.get("/resources/{resource_id}")
def resource_page(
    request: Request,
    resource_id: str,
    segment_cursor: str = Query("", max_length=128, description="the next page of segments"),
    saved: bool = False,
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    resource = outreach.get_resource(session, resource_id)
    report = outreach.resource_report(session, resource.id, None, segment_cursor or None)
    return render(
        request,
        "resource.html",
        resource=resource,
        report=report,
        chart=lift_chart(f"Report of {resource.id}: conversion and lift with 95% intervals", report),
        segment_cursor=segment_cursor,
        saved=saved,
        base=f"/console/resources/{resource.id}",
    )


@router.get("/surveys")
def surveys(
    request: Request,
    after: str = Query("", max_length=64, description="the surveys after this id (the next page)"),
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    rows = outreach.list_surveys(session, after=after or None, limit=SURVEYS_PAGE)
    return render(request, "surveys.html", rows=rows, after=after, next_after=rows[-1][0] if len(rows) == SURVEYS_PAGE else "")


@router.get("/surveys/{survey_id}")
def survey_page(
    request: Request,
    survey_id: str,
    start: date | None = Query(None, description="first UTC day (default: 90 days before end)"),
    end: date | None = Query(None, description="last UTC day (default: today)"),
    segment: str = Query("", max_length=64, description="only the answers of accounts in this named segment now"),
    segment_cursor: str = Query("", max_length=128, description="the next page of segments in the report"),
    session: Session = SessionDep,
    viewer: Viewer = READER,
) -> HTMLResponse:
    end = end or now_of(request).date()
    try:
        start = start or end - timedelta(days=90)
    except OverflowError:
        raise Unprocessable("start: the default period reaches before year 1; give a start") from None
    if start > end or (end - start).days > 3660:
        raise Unprocessable("the period is from a start on or before its end, at most ten years")
    results = outreach.survey_results(session, survey_id, start=start, end=end, segment=segment or None)
    report = outreach.survey_report(session, survey_id, None, segment_cursor or None)  # 404 if never sent nor answered
    chart = None
    if results and results["by_day"]:
        days = [d["day"] for d in results["by_day"]]
        if results["scale"] == "nps":
            series = {k: [float(d[k]) for d in results["by_day"]] for k in ("promoters", "passives", "detractors")}
        else:
            series = {
                "satisfied": [float(d["satisfied"]) for d in results["by_day"]],
                "not satisfied": [float(d["answered"] - d["satisfied"]) for d in results["by_day"]],
            }
        chart = charts.bars(f"Answers to {survey_id} per day", days, series, x_label="Day", y_label="Answers")
    return render(
        request,
        "survey.html",
        survey_id=survey_id,
        results=results,
        report=report,
        chart=chart,
        lift=lift_chart(f"Report of {survey_id}: conversion and lift with 95% intervals", report),
        start=start.isoformat(),
        end=end.isoformat(),
        segment=segment,
        segment_cursor=segment_cursor,
        base=f"/console/surveys/{survey_id}",
    )
