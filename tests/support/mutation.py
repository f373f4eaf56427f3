"""A pytest plugin for make mutation only (pyproject.toml [tool.mutmut] loads it with -p).

It orders a mutant's tests so that a killing test comes early: mutmut stops a mutant's
run at the first failing test (-x), so a killed mutant costs the tests before its killer,
while a surviving mutant runs every one of its tests whatever the order. First come the
tests that killed mutants of the same function so far in this run, most kills per second
of their own time first (mutants of one function tend to die by the same tests: the batch
loop's held-records mutants are killed only by the rules worker's tests, which
fastest-first would run near the end), then the others, fastest first. The durations are the ones mutmut measured in its first, traced
run (mutants/mutmut-stats.json; absent during that run).

It also appends one line per mutant's session to mutants/mutation-times.jsonl (the
mutant, its session's seconds, its exit status and the test that killed it):
tools/mutation_report.py sums them, to show where a run's time went (mutmut 3.8 records
no duration of its own under the fork server)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

_started = time.monotonic()
_killed_by: list[str] = []


@pytest.hookimpl(trylast=True)  # after -k and the tier marks: only the order changes
def pytest_collection_modifyitems(config, items) -> None:
    stats = Path(config.rootpath) / "mutmut-stats.json"
    if not stats.is_file():
        return
    duration = json.loads(stats.read_text()).get("duration_by_test", {})
    kills = _kills_so_far(Path(config.rootpath) / "mutation-times.jsonl", os.environ.get("MUTANT_UNDER_TEST", ""))
    items.sort(key=lambda item: _order(kills.get(item.nodeid, 0), duration.get(item.nodeid, float("inf"))))


def _order(kills: int, seconds: float) -> tuple[int, float]:
    """Tests that have killed mutants of this function first, by kills per second of their
    own time (the order that makes the expected time to the first failure least when each
    test's chance to kill is its share of the kills so far): a unit test that killed 10 in
    0.3 s goes before a worker test that killed 60 in 5 s. Then the others, fastest first."""
    if kills:
        return (0, -kills / max(seconds, 0.01))
    return (1, seconds)


def _kills_so_far(times: Path, mutant: str) -> dict[str, int]:
    """How many mutants of ``mutant``'s function each test has killed so far in this run."""
    function = mutant.rsplit("__mutmut_", 1)[0]
    kills: dict[str, int] = {}
    if not function or not times.is_file():
        return kills
    for line in times.read_text().splitlines():
        try:
            t = json.loads(line)
        except ValueError:  # a line another session is writing
            continue
        if t["killed_by"] and t["mutant"].rsplit("__mutmut_", 1)[0] == function:
            kills[t["killed_by"]] = kills.get(t["killed_by"], 0) + 1
    return kills


def pytest_sessionstart(session) -> None:
    global _started
    _started = time.monotonic()


def pytest_runtest_logreport(report) -> None:
    if report.failed and not _killed_by:
        _killed_by.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if not mutant or mutant in ("stats", "fail", "list_all_tests") or not (Path(session.config.rootpath) / "mutmut-stats.json").is_file():
        return
    line = {
        "mutant": mutant,
        "seconds": round(time.monotonic() - _started, 2),
        "exit": int(exitstatus),
        "killed_by": _killed_by[0] if _killed_by else None,
    }
    with open(Path(session.config.rootpath) / "mutation-times.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
