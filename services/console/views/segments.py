"""Named segments in the console (issue 22, item 1; docs/segments.md): the list with
each segment's size, and a segment's page with its definition, its size per day (a
chart with its data table), its versions and audit, and its members, in pages. CS Ops
only, like the rules. Every figure is the rules service's (its door)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from services.console import charts
from services.console.web import OPS, Viewer, now_of, render
from services.rules import interface as rules
from shared.api import SessionDep

router = APIRouter()
SIZE_DAYS = 30
MEMBERS_PAGE = 50


@router.get("/segments")
def segments_list(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    items = rules.list_segments(session, limit=1000)
    sizes = rules.segment_member_counts(session, [s.id for s in items])
    rows = [{"segment": s, "size": sizes.get(s.id, 0), "definition": rules.current_segment_definition(session, s)} for s in items]
    return render(request, "segments.html", rows=rows)


def size_chart(session: Session, segment_id: str, name: str, today: Any) -> tuple[Markup | None, list[Any]]:
    """The last 30 UTC days' sizes (the days the tick measured) as a line with its table."""
    start = today - timedelta(days=SIZE_DAYS - 1)
    rows = rules.segment_sizes(session, segment_id, start, today)
    if not rows:
        return None, []
    chart = charts.lines(
        f"Size of {name}, last {SIZE_DAYS} days",
        [r.day.isoformat() for r in rows],
        {"accounts": [float(r.size) for r in rows]},
        x_label="Day",
        y_label="Accounts",
    )
    return chart, rows


@router.get("/segments/{segment_id}")
def segment_page(
    request: Request,
    segment_id: str,
    after: str = Query("", max_length=128, description="the members after this account id (the next page)"),
    session: Session = SessionDep,
    viewer: Viewer = OPS,
) -> HTMLResponse:
    seg = rules.get_segment(session, segment_id, include_deleted=False)
    definition = rules.current_segment_definition(session, seg)
    chart, sizes = size_chart(session, seg.id, seg.name, now_of(request).date())
    members = rules.list_segment_members(session, seg.id, after=after or None, limit=MEMBERS_PAGE)
    total = rules.segment_member_counts(session, [seg.id]).get(seg.id, 0)
    return render(
        request,
        "segment.html",
        segment=seg,
        definition=definition,
        chart=chart,
        sizes=sizes,
        members=members,
        total=total,
        after=after,
        next_after=members[-1].account_id if len(members) == MEMBERS_PAGE else "",
    )
