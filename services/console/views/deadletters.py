"""Dead letters: the newest records of the DLQ topic with reason and source offset,
counted by reason, and the rejection counters this process's metrics hold."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request

from services.console.views.overview import metric_samples
from services.console.web import OPS, Viewer, context_of, render
from shared.kafka import read_dlq_tail

router = APIRouter()
KEEP = 100


@router.get("/dead-letters")
def dead_letters(request: Request, viewer: Viewer = OPS):
    settings = context_of(request).settings
    error = None
    records: list[dict] = []
    scanned = 0
    try:
        records, scanned = read_dlq_tail(settings, keep=KEEP, timeout=1.0)
    except Exception as exc:  # the broker is down or unreachable: say so, the page still renders
        error = f"could not read {settings.topic_events_dlq} from {settings.bootstrap_servers}: {type(exc).__name__}: {exc}"
    by_reason = Counter(r["reason"] or "unknown" for r in records)
    rejected: dict[str, float] = {}
    for labels, value in metric_samples("touchline_events_rejected_total")["touchline_events_rejected_total"]:
        rejected[labels.get("reason", "?")] = rejected.get(labels.get("reason", "?"), 0) + value
    return render(
        request,
        "dead_letters.html",
        records=records,
        scanned=scanned,
        by_reason=by_reason.most_common(),
        rejected=rejected,
        error=error,
        keep=KEEP,
        topic=settings.topic_events_dlq,
    )
