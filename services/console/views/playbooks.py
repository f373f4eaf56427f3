"""Playbooks: the list, and a playbook's page: its steps drawn as a flow, its funnel
and the holdout report (conversion with 95% intervals, and the lift's interval)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console import charts
from services.console.web import OPS, Viewer, render
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared.api import SessionDep
from shared.stats import wilson

router = APIRouter()
SEGMENTS_SHOWN = 200  # the named segments offered for the holdout report by segment


def flow(definition: outreach.PlaybookDefinition) -> list[dict[str, Any]]:
    """Each step with what it does and where it goes next (branch targets by name).
    Steps of other types (open_engagement, ...) show their type alone."""
    parsed = definition.parsed_steps()
    out = []
    for i, s in enumerate(parsed.steps):
        item: dict[str, Any] = {"id": s.id, "type": s.type, "detail": "", "then": None, "else": None}
        if isinstance(s, outreach.SendStep):
            who = ", ".join(s.to) if s.to else ("webhook " + (s.url or "") if s.channel == "webhook" else "—")
            item["detail"] = f"{s.channel} {s.template or ''} to {who}".replace("  ", " ")
            if isinstance(s, outreach.RecommendStep):  # a send whose template names the resource chosen per recipient
                item["detail"] = "a library resource by " + item["detail"]
        elif isinstance(s, outreach.WaitStep):
            item["detail"] = f"wait {s.duration}"
        elif isinstance(s, outreach.BranchStep):
            item["detail"] = "if " + _condition_text(s.if_)
            item["then"] = s.then
            item["else"] = s.else_ or (parsed.steps[i + 1].id if i + 1 < len(parsed.steps) else "end")
        elif isinstance(s, outreach.EndStep):
            item["detail"] = f"end as {s.outcome}"
        out.append(item)
    return out


def _condition_text(cond: Any) -> str:
    if not isinstance(cond, dict):
        return str(cond)
    if "all" in cond or "any" in cond:
        word = " and " if "all" in cond else " or "
        parts = cond.get("all") if "all" in cond else cond.get("any")
        return "(" + word.join(_condition_text(c) for c in parts or []) + ")"
    if "not" in cond:
        return "not " + _condition_text(cond["not"])
    what = cond.get("metric") or cond.get("field") or "?"
    if cond.get("event"):
        what += f" of {cond['event']}"
    if cond.get("window"):
        what += f" in {cond['window']}"
    return f"{what} {cond.get('op', '')} {cond.get('value', '')}".strip()


@router.get("/playbooks")
def playbooks(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    rows = []
    for head in outreach.list_playbook_heads(session):
        out = outreach.playbook_out(session, head)
        rows.append({"out": out, "report": outreach.playbook_report(session, head.id)})
    return render(request, "playbooks.html", rows=rows)


@router.get("/playbooks/{playbook_id}")
def playbook(
    request: Request,
    playbook_id: str,
    segment: str = Query("", max_length=64, description="a named segment: the holdout report among its members"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    head = outreach.get_playbook(session, playbook_id)
    out = outreach.playbook_out(session, head)
    definition = outreach.PlaybookDefinition.model_validate(out.definition)
    report = outreach.playbook_report(session, playbook_id)
    funnel = outreach.playbook_funnel(session, playbook_id)
    # Two charts, never one: enrolments (one per account and run) reaching each step, and
    # messages (one per recipient) per send step. A step that emails two contacts of each
    # of 15 enrolments writes 30 messages: mixed in one chart the figures contradict.
    rows = [("enrolled", funnel["enrolled"])]
    message_rows = []
    for s in funnel["steps"]:
        rows.append((f"reached {s['id']}", s["reached"]))
        if s["type"] in ("send", "recommend"):
            message_rows.append((f"{s['id']}: sent", s["sent"]))
            for reason, n in sorted(s["skipped"].items()):
                message_rows.append((f"{s['id']}: skipped ({reason})", n))
    rows.append(("converted", funnel["converted"]))
    funnel_chart = charts.hbars(f"Enrolments of {playbook_id} reaching each step", rows, x_label="enrolments")
    messages_chart = (
        charts.hbars(f"Messages of {playbook_id} per send step", message_rows, x_label="messages (one per recipient)")
        if message_rows
        else None
    )
    interval_chart = None
    if report.treated.enrolled or report.holdout.enrolled:
        t, h = report.treated, report.holdout
        tl, th = wilson(t.converted, t.enrolled) if t.enrolled else (None, None)
        hl, hh = wilson(h.converted, h.enrolled) if h.enrolled else (None, None)
        ci = report.confidence_interval
        ci_lo, ci_hi = (ci[0], ci[1]) if ci else (None, None)
        rows_i = [
            ("treated conversion", t.conversion_rate, tl, th),
            ("holdout conversion", h.conversion_rate, hl, hh),
            ("lift (treated − holdout)", report.lift, ci_lo, ci_hi),
        ]
        lo = min([-0.1] + [v for r in rows_i for v in r[1:] if v is not None])
        hi = max([0.1] + [v for r in rows_i for v in r[1:] if v is not None])
        interval_chart = charts.intervals(
            f"Holdout report of {playbook_id}: conversion and lift with 95% intervals",
            rows_i,
            x_label="conversion rate / lift (percentage points)",
            lo=lo,
            hi=hi,
        )
    enrollments = outreach.list_playbook_enrollments(session, playbook_id, status=None, account_id=None, limit=20)
    # The holdout report among a named segment's members as of their enrolment (docs/segments.md).
    segment_ids = [s.id for s in rules.list_segments(session, limit=SEGMENTS_SHOWN)]
    by_segment = outreach.playbook_report_by_segment(session, playbook_id, [segment]).segments[0] if segment in segment_ids else None
    return render(
        request,
        "playbook.html",
        out=out,
        definition=definition,
        flow=flow(definition),
        report=report,
        funnel=funnel,
        funnel_chart=funnel_chart,
        messages_chart=messages_chart,
        interval_chart=interval_chart,
        enrollments=enrollments,
        segment_ids=segment_ids,
        segment=segment,
        by_segment=by_segment,
    )
