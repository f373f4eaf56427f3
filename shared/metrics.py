"""Prometheus metrics. Workers and the API share these definitions.

Under ``touchline run`` every process writes to ``PROMETHEUS_MULTIPROC_DIR`` and the
API's ``/metrics`` aggregates them; a worker deployed on its own serves its metrics
with ``--metrics-port``.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

EVENTS_CONSUMED = Counter("touchline_events_consumed_total", "Records consumed from a topic", ["worker", "topic"])
EVENTS_REJECTED = Counter("touchline_events_rejected_total", "Records sent to the DLQ, by reason", ["worker", "reason"])
EVENTS_DUPLICATE = Counter("touchline_events_duplicate_total", "Records skipped as already processed", ["worker"])
BATCH_SECONDS = Histogram(
    "touchline_batch_seconds",
    "Time to process and commit one consumer batch",
    ["worker"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "touchline_consumer_lag",
    "Records behind the partition high-watermark",
    ["worker", "topic", "partition"],
    multiprocess_mode="livemax",
)
JOBS_FINISHED = Counter("touchline_jobs_finished_total", "Background jobs finished, by kind and state", ["kind", "state"])
JOB_SECONDS = Histogram(
    "touchline_job_seconds", "Run time of background jobs", ["kind"], buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800)
)
TICKS_DEFERRED = Counter(
    "touchline_rules_ticks_deferred_total",
    "Scheduled rule ticks held back because ingest has not stored everything yet, by reason "
    "(ingest_lag: behind by more than TOUCHLINE_RULES_MAX_INGEST_LAG; ingest_silent: no recent progress report)",
    ["reason"],
)
TICK_INGEST_LAG = Gauge(
    "touchline_rules_tick_ingest_lag",
    "Ingest's lag (records) as the rules tick last saw it",
    multiprocess_mode="livemax",
)
TICK_WAITING = Gauge(
    "touchline_rules_tick_waiting_seconds",
    "How long the due scheduled tick has been held back (0 when it is running normally)",
    multiprocess_mode="livemax",
)
STALE_EVENTS = Counter(
    "touchline_rules_stale_events_total",
    "Events older than TOUCHLINE_RULES_EVENT_FRESHNESS_SECONDS, not evaluated by event-triggered rules",
)
SIGNALS_REPUBLISHED = Counter(
    "touchline_signals_republished_total",
    "Signals with no outreach decision after the grace period, published again to cs.signals",
)
OUTREACH_DECISIONS = Counter("touchline_outreach_decisions_total", "Outreach decisions recorded for signals, by decision", ["decision"])
HTTP_EVENTS = Counter("touchline_http_events_total", "Events received over HTTP, by outcome", ["outcome"])
SIGNALS_FIRED = Counter("touchline_signals_fired_total", "New signals written (with their outbox row), by kind", ["kind"])
RULES_TICK_SECONDS = Histogram(
    "touchline_rules_tick_seconds",
    "Time one scheduled-rules tick took",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
RULES_TICK_INTERVAL = Gauge(
    "touchline_rules_tick_interval_seconds",
    "The configured tick interval (TOUCHLINE_RULES_TICK_SECONDS): a tick longer than this overruns",
    multiprocess_mode="livemax",
)
# Sampled by the process that drains each outbox (the rules worker's relay for
# ``signals``, the sender for ``messages``), at most every OUTBOX_SAMPLE_SECONDS.
OUTBOX_SAMPLE_SECONDS = 15
OUTBOX_BACKLOG = Gauge(
    "touchline_outbox_backlog",
    "Outbox rows due and not yet sent (signals: unsent rows; messages: queued email/webhook messages that are due)",
    ["outbox"],
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_AGE = Gauge(
    "touchline_outbox_oldest_age_seconds",
    "How long the oldest due, unsent outbox row has waited (0 when there is none)",
    ["outbox"],
    multiprocess_mode="livemax",
)
HTTP_IN_FLIGHT = Gauge(
    "touchline_http_requests_in_flight",
    "API requests being served (TOUCHLINE_API_MAX_CONCURRENT_REQUESTS caps it; probes not counted)",
    multiprocess_mode="livesum",
)
HTTP_OVERLOADED = Counter(
    "touchline_http_overloaded_total",
    "Requests answered 503 overloaded, by the limit reached (concurrency: the in-flight cap; pool: no database connection free)",
    ["limit"],
)
HTTP_CONNECTIONS_EVICTED = Counter(
    "touchline_http_connections_evicted_total",
    "Connections closed at TOUCHLINE_API_MAX_CONNECTIONS to make room for a new one: the one longest waiting for a "
    "request head, by what it was doing (keep_alive: idle between requests, closed; head: nothing or part of a head "
    "sent, answered 408)",
    ["waiting"],
)
SIGNINS = Counter(
    "touchline_signins_total",
    "Keys presented to the API (bearer) or the console sign-in form, by outcome: success, failure, "
    "throttled (refused with 429 before any check; docs/security.md)",
    ["channel", "outcome"],
)
DEPENDENCY_UP = Gauge(
    "touchline_dependency_up",
    "1 if the last /readyz check reached the dependency, else 0",
    ["dependency"],
    multiprocess_mode="livemin",
)


def metrics_registry() -> CollectorRegistry:
    """Under ``touchline run``, every process's metrics, aggregated; else this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
        return registry
    return REGISTRY


def render_metrics() -> tuple[bytes, str]:
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST


MESSAGES_DELIVERED = Counter(
    "touchline_messages_delivered_total", "Outbox delivery attempts, by channel and outcome", ["channel", "outcome"]
)
STALE_OUTCOMES = Counter(
    "touchline_outreach_stale_outcomes_total", "Delivery outcomes a sender could not record: another sender had taken over its claim"
)
MESSAGES_ENQUEUED = Counter("touchline_messages_enqueued_total", "Outbox rows written, by channel and state", ["channel", "state"])
DB_RETRIES = Counter(
    "touchline_db_retries_total",
    "Database errors a worker rolled back and will retry (locked, connection, serialization)",
    ["worker", "kind"],
)
PROCESS_RESTARTS = Gauge(
    "touchline_process_restarts", "Times `touchline run` has restarted this process after it died", ["process"], multiprocess_mode="max"
)
# Set by the `touchline run` supervisor, which samples the embedded broker every 30 s
# (services/wiring/supervisor.py); absent when the broker is a real Kafka.
EMBEDDED_BROKER_RSS = Gauge(
    "touchline_embedded_broker_rss_bytes",
    "Resident memory of the embedded broker, which keeps every record (no retention); 0: not sampled (a real Kafka)",
    multiprocess_mode="livemax",
)
EMBEDDED_BROKER_WARN = Gauge(
    "touchline_embedded_broker_warn_bytes",
    "The embedded broker RSS above which touchline run warns (TOUCHLINE_EMBEDDED_BROKER_WARN_MB; 0: off)",
    multiprocess_mode="livemax",
)
LINK_CLICKS = Counter(
    "touchline_link_clicks_total",
    "Requests to the tracked-link redirect /r/{token}, by outcome (recorded, replayed, expired, invalid, unpublished)",
    ["outcome"],
)
