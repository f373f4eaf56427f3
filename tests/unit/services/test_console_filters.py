"""The console's filters for what a page says about a step path (issue 19, finding 6:
"wait-2m waiting" shown after the enrolment had moved on or converted)."""

from __future__ import annotations

from services.console.web import env


def _path(history: list[dict], status: str) -> list[str]:
    step_result = env.filters["step_result"]
    return [step_result(h, i == len(history) - 1, status) for i, h in enumerate(history)]


def test_a_wait_reads_waiting_only_while_the_enrolment_waits_there() -> None:
    waiting = [{"step": "email", "result": "done"}, {"step": "wait-2m", "result": "waiting"}]
    assert _path(waiting, "active") == ["done", "waiting"]
    assert _path(waiting, "converted") == ["done", "waited"]
    moved_on = [*waiting, {"step": "back-yet", "result": "done"}, {"step": "wait-7d", "result": "waiting"}]
    assert _path(moved_on, "active") == ["done", "waited", "done", "waiting"]
