"""Every job kind Touchline runs, by the module that registers it. The API and the jobs
worker (``touchline worker jobs``) load them all. A new long operation registers its
kind in its own module (``jobs.register(...)``) and is listed here."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock
from shared.jobs.runner import JobWorker as _JobWorker
from shared.settings import Settings

JOB_KIND_MODULES = [
    "services.rules.interface",  # rules.backtest (rules.backtest.jobs, imported by the rules door)
]


def load_kinds() -> None:
    for module in JOB_KIND_MODULES:
        importlib.import_module(module)


class JobWorker(_JobWorker):
    """The jobs worker with every kind loaded."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        owner: str | None = None,
        on_progress: Callable[[int, int | None, str], None] | None = None,
    ) -> None:
        load_kinds()
        super().__init__(settings, session_factory, clock, owner, on_progress)
