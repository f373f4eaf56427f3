"""The registry of workers that ``touchline worker <name>`` and ``touchline run`` start."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings


class Worker(Protocol):
    """What ``touchline worker`` and the supervisor's children use of a worker."""

    stop_event: threading.Event

    def run(self) -> None: ...


WORKERS: dict[str, str] = {
    "ingest": "services.ingest.events.worker:IngestWorker",
    "rules": "services.rules.evaluation.worker:RulesWorker",
    "outreach": "services.outreach.playbooks.worker:SignalWorker",
    "outreach-timers": "services.outreach.timers:TimerWorker",
    "outreach-sender": "services.outreach.delivery.worker:SenderWorker",
    "outreach-engagements": "services.outreach.engagements.worker:EngagementWorker",
    "jobs": "services.jobs:JobWorker",
}


def load_worker(name: str) -> Callable[[Settings, sessionmaker[Session]], Worker]:
    try:
        target = WORKERS[name]
    except KeyError:
        raise SystemExit(f"unknown worker {name!r}; choose one of {', '.join(WORKERS)}") from None
    module, _, cls = target.partition(":")
    worker_class: Callable[[Settings, sessionmaker[Session]], Worker] = getattr(importlib.import_module(module), cls)
    return worker_class
