"""A pytest plugin for make mutation only (pyproject.toml [tool.mutmut] loads it with -p):
run a mutant's tests fastest first. mutmut stops a mutant's run at the first failing test
(-x), so a killed mutant costs its quickest killing test instead of whatever the set order
gives; a surviving mutant still runs every one of its tests. The durations are the ones
mutmut measured in its first, traced run (mutants/mutmut-stats.json; absent during that run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.hookimpl(trylast=True)  # after -k and the tier marks: only the order changes
def pytest_collection_modifyitems(config, items) -> None:
    stats = Path(config.rootpath) / "mutmut-stats.json"
    if not stats.is_file():
        return
    duration = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: duration.get(item.nodeid, float("inf")))
