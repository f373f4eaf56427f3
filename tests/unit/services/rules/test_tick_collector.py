"""The rules tick runs with Python's cyclic garbage collector paused, and leaves it as it
found it (the pause itself: tests/unit/shared/test_collector.py)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

from services.rules.evaluation import service as evaluation
from shared.settings import Settings

pytestmark = pytest.mark.usefixtures("collector_as_found")


def _session_factory():
    return SimpleNamespace(commit=lambda: None, rollback=lambda: None, close=lambda: None)


def test_the_rules_tick_runs_with_the_collector_off_and_turns_it_on_again(monkeypatch):
    gc.enable()
    seen: list[bool] = []
    monkeypatch.setattr(evaluation, "load_enabled", lambda session, trigger, retention: seen.append(gc.isenabled()) or [])
    assert evaluation.run_tick(_session_factory, Settings(env="test"), None).ran == 0
    assert seen == [False] and gc.isenabled()

    def fails(session, trigger, retention):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(evaluation, "load_enabled", fails)
    with pytest.raises(RuntimeError):
        evaluation.run_tick(_session_factory, Settings(env="test"), None)
    assert gc.isenabled()
