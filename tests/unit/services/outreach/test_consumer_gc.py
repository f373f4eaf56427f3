"""The signal consumer pauses Python's cyclic garbage collector for a batch, and leaves
it as it found it (the pause itself: tests/unit/shared/test_collector.py)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

from services.outreach.playbooks import worker as playbooks_worker

pytestmark = pytest.mark.usefixtures("collector_as_found")


def test_a_batch_runs_with_the_collector_off():
    gc.enable()
    seen: list[bool] = []
    worker = SimpleNamespace(_handle_batch=lambda session, records: seen.append(gc.isenabled()) or "result")
    assert playbooks_worker.SignalWorker.handle_batch(worker, None, []) == "result"
    assert seen == [False] and gc.isenabled()
