"""The health model in the rule language: validation with pointers, canonical form,
bands at their edges, linear scoring, missing values, overrides and a weighted score
worked by hand."""

from __future__ import annotations

import math

import pytest

from services.rules.language import RuleValidationError
from services.rules.language.health import parse_health_model

LOGIN = {"metric": "days_since", "event": "login"}


def model(*components, **extra) -> dict:
    return {"name": "Health", "components": list(components), **extra}


def comp(cid="recency", measure=LOGIN, weight=1, **scoring) -> dict:
    if "bands" not in scoring and "linear" not in scoring:
        scoring["bands"] = [{"below": 3, "points": 100}, {"below": 14, "points": 60}, {"points": 0}]
    return {"id": cid, "measure": measure, "weight": weight, **scoring}


def errors(obj) -> dict[str, str]:
    with pytest.raises(RuleValidationError) as e:
        parse_health_model(obj)
    return {err["pointer"]: err["message"] for err in e.value.errors}


def test_bands_at_their_edges():
    m = parse_health_model(model(comp()))
    c = m.components[0]
    # A band covers [previous below, below): the bound itself belongs to the next band.
    cases = [(0, 100, "< 3"), (2.999, 100, "< 3"), (3, 60, "3 to < 14"), (13.99, 60, "3 to < 14"), (14, 0, ">= 14"), (math.inf, 0, ">= 14")]
    for value, points, band in cases:
        assert c.scoring.points(value) == (points, band), value
    assert m.score({"recency": 3})["score"] == 60
    never = m.score({"recency": math.inf})
    assert never["score"] == 0 and never["components"][0]["never_seen"] and never["components"][0]["value"] is None


def test_linear_between_two_points_is_clamped_and_may_fall():
    m = parse_health_model(model(comp(linear={"from": {"value": 0, "points": 100}, "to": {"value": 30, "points": 0}})))
    s = m.components[0].scoring
    assert s.points(-5)[0] == 100 and s.points(0)[0] == 100
    assert s.points(15)[0] == 50 and s.points(27)[0] == pytest.approx(10)
    assert s.points(30)[0] == 0 and s.points(math.inf)[0] == 0


def test_a_weighted_score_by_hand_and_its_label():
    m = parse_health_model(
        model(
            comp("recency", weight=3),  # 3 days: 60 points
            comp(
                "seats",
                {"metric": "seat_utilisation", "window": "28d"},
                weight=1,
                linear={"from": {"value": 0, "points": 0}, "to": {"value": 100, "points": 100}},
            ),  # 20%: 20 points
            comp("trend", {"metric": "change", "of": "active_users", "window": "7d", "baseline": "28d"}, weight=2),  # no value: left out
            labels={"healthy": 70, "watch": 40},
        )
    )
    out = m.score({"recency": 3.0, "seats": 20.0, "trend": None})
    # (60 * 3 + 20 * 1) / (3 + 1) = 50: the missing component's weight is not counted.
    assert out["score"] == 50.0 and out["label"] == "watch"
    assert [(c["id"], c["points"], c["band"]) for c in out["components"]] == [
        ("recency", 60, "3 to < 14"),
        ("seats", 20, "linear 0..100"),
        ("trend", None, "no value: left out"),
    ]
    # With missing_points the component counts: (60*3 + 20 + 50*2) / 6 = 50, and labels cut at their bounds.
    m2 = parse_health_model(model(*[dict(c, missing_points=50) if c["id"] == "trend" else c for c in m.to_dict()["components"]]))
    assert m2.score({"recency": 3.0, "seats": 20.0})["score"] == 50.0
    assert m.label(70) == "healthy" and m.label(69.9) == "watch" and m.label(40) == "watch" and m.label(39.9) == "at_risk"
    nothing = m.score({})  # no component has a value: no score, no label
    assert nothing["score"] is None and nothing["label"] is None


def test_a_value_that_is_not_a_number_counts_as_missing():
    """A flag or a text (a trait component reading the wrong field) is no value: left out,
    or missing_points when set; never scored as 1 (True) nor compared with the bands."""
    c = parse_health_model(model(comp())).components[0]
    for value in (None, True, False, "12", float("nan")):
        assert c.scoring.points(value) == (None, "no value: left out"), value
    c = parse_health_model(model(comp(missing_points=25))).components[0]
    for value in (None, True, "12"):
        assert c.scoring.points(value) == (25, "no value: missing_points"), value


def test_overrides_per_segment_and_stage():
    m = parse_health_model(
        model(
            comp("recency", weight=1),
            comp("seats", {"metric": "seat_utilisation", "window": "28d"}, weight=1, bands=[{"below": 50, "points": 0}, {"points": 100}]),
            overrides=[{"when": {"lifecycle_stage": "onboarding"}, "components": {"seats": {"weight": 0}}}],
        )
    )
    values = {"recency": 0.0, "seats": 10.0}
    assert m.score(values, "smb", "active")["score"] == 50.0
    onboarding = m.score(values, "smb", "onboarding")
    assert onboarding["score"] == 100.0 and onboarding["components"][1]["override"] == 0
    assert m.to_dict()["overrides"] == [{"when": {"lifecycle_stage": ["onboarding"]}, "components": {"seats": {"weight": 0}}}]


def test_canonical_form_round_trips():
    raw = model(comp(), comp("renewal", {"field": "account.days_to_renewal"}, weight=2, missing_points=50))
    m = parse_health_model(raw)
    assert parse_health_model(m.to_dict()).to_dict() == m.to_dict()
    assert m.to_dict()["labels"] == {"healthy": 70, "watch": 40}
    assert m.to_dict()["components"][0]["measure"] == {"metric": "days_since", "event": "login"}


def test_bad_models_name_the_path_and_the_allowed_values():
    e = errors(model(comp(measure={"metric": "logins"})))
    assert "known metrics" in e["/components/0/measure/metric"] and "days_since" in e["/components/0/measure/metric"]
    e = errors(model(comp(bands=[{"below": 10, "points": 100}, {"below": 5, "points": 50}, {"points": 0}])))
    assert "low to high" in e["/components/0/bands/1/below"]
    e = errors(model(comp(bands=[{"below": 10, "points": 120}, {"below": 20, "points": 50}])))
    assert "0 to 100" in e["/components/0/bands/0/points"] and "last band" in e["/components/0/bands/1/below"]
    e = errors(model(comp(measure={"field": "account.plan"})))
    assert "account.days_to_renewal" in e["/components/0/measure/field"]
    e = errors(model(comp(measure={**LOGIN, "op": ">=", "value": 3})))
    assert set(e) == {"/components/0/measure/op", "/components/0/measure/value"}
    e = errors(model(comp(measure={"metric": "health"})))
    assert "health itself" in e["/components/0/measure/metric"]
    e = errors(model(comp(), comp(), labels={"healthy": 40, "watch": 70}))
    assert "unique" in e["/components/1/id"] and "below healthy" in e["/labels/watch"]
    e = errors(model(comp(linear={"from": {"value": 5, "points": 0}, "to": {"value": 5, "points": 100}})))
    assert "/components/0/linear/to/value" in e
    e = errors(model(comp(), overrides=[{"when": {"segment": "smb"}, "components": {"recenci": {"weight": 0}}}]))
    assert "did you mean 'recency'" in e["/overrides/0/components/recenci"]
    e = errors({"components": [], "colour": "red"})
    assert {"/name", "/components", "/colour"} <= set(e)
    e = errors(model(comp(weight=-1)))
    assert "/components/0/weight" in e
    e = errors(model(comp(measure={"metric": "change", "of": "active_users", "window": "7d", "baseline": "10d"})))
    assert "whole number of windows" in e["/components/0/measure/baseline"]


def test_the_starter_model_validates_and_reads_the_metrics_of_today():
    from services.rules.health.service import starter_definition

    d = starter_definition()
    assert [c["id"] for c in d["components"]] == [
        "usage_trend",
        "seat_use",
        "login_recency",
        "champion_coverage",
        "p0_tickets",
        "nps",
        "renewal",
    ]
    m = parse_health_model(d)
    healthy = {"usage_trend": 10.0, "seat_use": 80.0, "login_recency": 0.5, "champion_coverage": 2.0, "p0_tickets": 0.0, "renewal": 200.0}
    # Usage up, 80% of seats, logged in today, two active champions, no P0, renewal in 200 days; no NPS answer: left out.
    out = m.score(healthy)
    assert out["score"] == 100.0 and out["label"] == "healthy" and out["components"][5]["band"] == "no value: left out"
    # The same account answering NPS 3 (a detractor) and with three P0 tickets: (0 * 10 + 0 * 10 + 100 * 90) / 110.
    assert m.score({**healthy, "nps": 3.0, "p0_tickets": 3.0})["score"] == round(9000 / 110, 1)
    # A fading one: usage down half, 10% of seats, three weeks without a login, no active champion, renewal in 20 days.
    fading = {"usage_trend": -50.0, "seat_use": 10.0, "login_recency": 21.0, "champion_coverage": 0.0, "p0_tickets": 0.0, "renewal": 20.0}
    assert m.score(fading)["label"] == "at_risk"
