"""The registry of workers that ``touchline worker <name>`` and ``touchline run`` start."""

from __future__ import annotations

import importlib

WORKERS: dict[str, str] = {
    "ingest": "services.ingest.events.worker:IngestWorker",
    "rules": "services.rules.evaluation.worker:RulesWorker",
    "outreach": "services.outreach.playbooks.worker:SignalWorker",
    "outreach-timers": "services.outreach.playbooks.worker:TimerWorker",
    "outreach-sender": "services.outreach.delivery.worker:SenderWorker",
    "outreach-engagements": "services.outreach.engagements.worker:EngagementWorker",
    "jobs": "services.jobs:JobWorker",
}


def load_worker(name: str):
    try:
        target = WORKERS[name]
    except KeyError:
        raise SystemExit(f"unknown worker {name!r}; choose one of {', '.join(WORKERS)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)
