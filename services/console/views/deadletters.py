"""Dead letters: the newest rejected records (reason, source offset, original bytes) from
the database, where every worker stores them before publishing to its DLQ topic, so the
page shows the same after a restart of the embedded broker; every one kept counted by
reason; and the rejection counters this process's metrics hold."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from services.console.views.overview import metric_samples
from services.console.web import OPS, Viewer, render
from shared import deadletters
from shared.api import SessionDep

router = APIRouter()
KEEP = 100


@router.get("/dead-letters")
def dead_letters(request: Request, session: Session = SessionDep, viewer: Viewer = OPS) -> HTMLResponse:
    records = [deadletters.as_dict(r, head) for r, head in deadletters.newest_heads(session, limit=KEEP, head_bytes=1024)]
    by_reason = deadletters.count_by_reason(session)
    rejected: dict[str, float] = {}
    for labels, value in metric_samples("touchline_events_rejected_total")["touchline_events_rejected_total"]:
        rejected[labels.get("reason", "?")] = rejected.get(labels.get("reason", "?"), 0) + value
    return render(
        request,
        "dead_letters.html",
        records=records,
        total=sum(by_reason.values()),
        by_reason=list(by_reason.items()),
        rejected=rejected,
        keep=KEEP,
    )
