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


def test_a_recommend_step_is_drawn_as_a_send_of_a_library_resource() -> None:
    from services.console.views.playbooks import flow
    from services.outreach.interface import PlaybookDefinition

    definition = PlaybookDefinition.model_validate(
        {
            "name": "Route",
            "trigger": {"kinds": ["churn_risk"]},
            "steps": [
                {"id": "pick", "type": "recommend", "template": "resource-pick", "to": ["champion"]},
                {"id": "mail", "type": "send", "template": "win-back", "to": ["admin"]},
            ],
        }
    )
    assert [(s["type"], s["detail"]) for s in flow(definition)] == [
        ("recommend", "a library resource by email resource-pick to champion"),
        ("send", "email win-back to admin"),
    ]
