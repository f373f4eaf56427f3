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


def test_a_bar_charts_description_counts_its_axis_in_words() -> None:
    """What a screen reader hears for a bar chart (its <desc>): "over 30 days (UTC)", not
    "over 30 day (utc)s" (review: every day-by-day chart read so)."""
    from services.console.charts import bars

    def desc(labels: list[str], x_label: str) -> str:
        return str(bars("T", labels, {"a": [1.0] * len(labels)}, x_label=x_label, y_label="n")).split("<desc", 1)[1].split("</desc>")[0]

    assert desc(["d"] * 30, "day (UTC)").endswith("in total over 30 days (UTC)")
    assert desc(["d"], "day (UTC)").endswith("in total over 1 day (UTC)")
    assert desc(["ada", "ken"], "CSM").endswith("in total over 2 CSMs")
    assert desc(["d"] * 7, "Day").endswith("in total over 7 days")


def test_evidence_that_is_no_comparison_reads_as_json_not_python() -> None:
    """A segment signal's evidence (``segment``: its id, version and change) and an event
    trigger read as the API shows them, not as a Python dict (review: the account page
    showed "segment = {'id': 'use-case-analytics', ...}")."""
    evidence = env.filters["evidence"]
    assert evidence({"id": "use-case-analytics", "version": 1, "change": "entered"}) == (
        '{"id": "use-case-analytics", "version": 1, "change": "entered"}'
    )
    assert evidence({"value": ["a", "b"], "op": "in", "threshold": ["a"]}) == '["a", "b"] (needs in ["a"])'
    assert evidence({"value": 15.2, "op": ">=", "threshold": 14.0}) == "15.20 (needs >= 14)"
    assert evidence("nps") == "nps"
