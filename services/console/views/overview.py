"""Overview: signals per day by kind (30 days), messages sent and skipped by reason,
engagements open, due this week and overdue, ARR at risk and accounts by health label
(90 days), events dead-lettered (counted as the Dead
letters page lists them), consumer lag and the embedded broker's memory (from this
process's Prometheus metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from services.console import charts
from services.console.views import health
from services.console.web import READER, Viewer, home_of, now_of, render
from services.ingest import interface as ingest
from services.outreach import interface as outreach
from services.rules import interface as rules
from shared import deadletters
from shared.api import SessionDep, context_of
from shared.broker import memory_warning
from shared.metrics import render_metrics

router = APIRouter()
DAYS = 30


def metric_samples(*names: str) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Samples of the named metrics as this API process sees them (all processes under
    ``touchline run``, which shares a multiprocess directory)."""
    body, _ = render_metrics()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {n: [] for n in names}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name].append((sample.labels, sample.value))
    return out


def window_start(now: datetime) -> datetime:
    """The overview's window: the last DAYS UTC days, today included, from midnight."""
    return datetime.combine(now.date() - timedelta(days=DAYS - 1), time.min, tzinfo=UTC)


def signal_chart(session: Session, now: datetime) -> tuple[Markup | None, int, dict[str, int]]:
    end = now.date()
    start = end - timedelta(days=DAYS - 1)
    rows = rules.signal_counts_by_day_and_kind(session, start, end)  # a daily rollup, kept by the signals' writer
    days = [start + timedelta(days=i) for i in range(DAYS)]
    kinds = sorted({k for _, k, _ in rows})
    series = {k: [0] * DAYS for k in kinds}
    for d, k, n in rows:
        if start <= d <= end:
            series[k][(d - start).days] += n
    total = sum(n for _, _, n in rows)
    chart = (
        charts.bars(
            f"Signals per day by kind, last {DAYS} days",
            [d.strftime("%m-%d") for d in days],
            series,
            x_label="day (UTC)",
            y_label="signals",
        )
        if kinds
        else None
    )
    return chart, total, {k: sum(v) for k, v in series.items()}


def count_labelled(session: Session, now: datetime, label: str) -> int:
    """The accounts currently labelled ``label``: the count of the accounts list filtered by it."""
    only = rules.accounts_health_labelled(session, now.date(), label)
    return ingest.search_accounts(session, text=None, segment=None, lifecycle_stage=None, plan=None, only_ids=only, offset=0, limit=0)[1]


@router.get("/")
def overview(request: Request, session: Session = SessionDep, viewer: Viewer = READER) -> Response:
    if not viewer.can("ops"):  # the console's root is everyone's landing: a CSM's home is the inbox
        return RedirectResponse(home_of(viewer.principal), status_code=303)
    now = now_of(request)
    chart, total, by_kind = signal_chart(session, now)
    since = window_start(now)
    # Messages by channel and state (and skip reason): each figure is the count of the
    # Messages list it links to (same window, same filters).
    sent = {c: 0 for c in ("email", "inapp", "webhook")}
    by_state: dict[tuple[str, str, str], int] = {}
    skipped_total = 0
    for channel, state, reason, n in outreach.message_counts_by_state_reason(session, since):
        if state == "sent":
            sent[channel] = sent.get(channel, 0) + n
        if state == "skipped":
            skipped_total += n
        by_state[(channel, state, reason or "")] = by_state.get((channel, state, reason or ""), 0) + n
    m = metric_samples("touchline_consumer_lag", "touchline_embedded_broker_rss_bytes", "touchline_embedded_broker_warn_bytes")
    rejected = deadletters.count_by_reason(session)  # what the Dead letters page lists, counted the same way
    lag: dict[str, float] = {}
    for labels, value in m["touchline_consumer_lag"]:
        key = f"{labels.get('worker', '?')} on {labels.get('topic', '?')}"
        lag[key] = lag.get(key, 0) + value
    # Sampled by the `touchline run` supervisor; absent on a real Kafka.
    broker_mb = max((v for _l, v in m["touchline_embedded_broker_rss_bytes"]), default=0) or None  # 0: not sampled
    warn_mb = max((v for _l, v in m["touchline_embedded_broker_warn_bytes"]), default=0) / 2**20
    broker_warning = None
    if broker_mb is not None and warn_mb and broker_mb / 2**20 >= warn_mb:
        broker_warning = memory_warning(broker_mb / 2**20, int(warn_mb), context_of(request).settings.embedded_broker_max_mb)
    open_engagements, due_week, overdue = outreach.engagement_due_counts(session, now, now + timedelta(days=7))
    # ARR at risk: the ARR of the accounts currently labelled at_risk, the sum of the
    # accounts list it links to (filtered the same way, through the same select).
    at_risk = rules.accounts_health_labelled(session, now.date(), "at_risk")
    label_chart, by_label, _ = health.label_chart(session, now.date())
    return render(
        request,
        "overview.html",
        open_engagements=open_engagements,
        due_week=due_week,
        overdue=overdue,
        chart=chart,
        total=total,
        by_kind=by_kind,
        sent=sent,
        skipped_total=skipped_total,
        by_state=sorted(by_state.items(), key=lambda kv: (kv[0][0], kv[0][1] != "sent", -kv[1])),
        since=since.date().isoformat(),
        rejected=rejected,
        lag=lag,
        broker_mb=None if broker_mb is None else broker_mb / 2**20,
        broker_warn_mb=warn_mb,
        broker_warning=broker_warning,
        days=DAYS,
        arr_at_risk=ingest.total_arr(session, at_risk),
        by_label={label: count_labelled(session, now, label) for label in by_label},
        label_chart=label_chart,
        health_days=health.HISTORY_DAYS,
    )
