"""Named segments in the rule language (docs/segments.md), pure: a definition's
canonical form, its errors with their JSON pointers, and account.segments' set-valued
predicate."""

from __future__ import annotations

import pytest

from services.rules.language import RuleValidationError, parse_condition
from services.rules.language.evaluate import matching_from_values, predicate
from services.rules.language.segment import parse_segment

SEGMENT = {
    "id": "fintech-smb",
    "name": "  Fintech SMB ",
    "audience": {"segment": "smb"},
    "condition": {
        "all": [
            {"field": "account.traits.industry", "op": "==", "value": "fintech"},
            {"metric": "active_users", "window": "28d", "op": ">=", "value": 2},
        ]
    },
}


def test_the_canonical_form_parses_to_itself():
    once = parse_segment(SEGMENT).to_dict()
    assert once["name"] == "Fintech SMB" and once["audience"] == {"segment": ["smb"]} and once["description"] == ""
    assert parse_segment(once).to_dict() == once


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"id": "Not A Slug"}, "/id"),
        ({"name": ""}, "/name"),
        ({"colour": "red"}, "/colour"),
        ({"audience": {"tier": ["a"]}}, "/audience/tier"),
        ({"condition": {"field": "event.name", "op": "==", "value": "login"}}, "/condition/field"),
        ({"condition": {"metric": "count", "event": "login", "window": "7d", "op": "=>", "value": 1}}, "/condition/op"),
        ({"condition": {"all": [{"not": {"field": "account.segments", "op": "in", "value": ["x"]}}]}}, "/condition/all/0/not/field"),
    ],
)
def test_each_problem_names_its_path(change, pointer):
    with pytest.raises(RuleValidationError) as exc:
        parse_segment({**SEGMENT, **change})
    assert [e["pointer"] for e in exc.value.errors] == [pointer]


def test_a_missing_condition_and_an_id_unlike_the_urls():
    with pytest.raises(RuleValidationError) as exc:
        parse_segment({"id": "a", "name": "A"}, segment_id="b")
    assert [e["pointer"] for e in exc.value.errors] == ["/id", "/condition"]


def test_account_segments_is_set_valued():
    member_of = parse_condition({"field": "account.segments", "op": "in", "value": ["a", "b"]})
    in_none = parse_condition({"field": "account.segments", "op": "not_in", "value": ["a", "b"]})
    values = {"x": ("a",), "y": ("b", "c"), "z": ("c",)}  # w: in no segment (no value)
    universe = {"w", "x", "y", "z"}
    assert matching_from_values(member_of, universe, values, None) == {"x", "y"}
    assert matching_from_values(in_none, universe, values, None) == {"w", "z"}
    assert predicate(member_of)(("c", "b")) and not predicate(member_of)(None)
    # Two "in" of one "all" are no contradiction: an account may be in both segments.
    both = parse_condition(
        {"all": [{"field": "account.segments", "op": "in", "value": ["a"]}, {"field": "account.segments", "op": "in", "value": ["b"]}]}
    )
    assert matching_from_values(both.children[0], universe, values, None) == {"x"}  # type: ignore[attr-defined]
    for op, value in (("==", "a"), ("exists", True), ("in", [1])):
        with pytest.raises(RuleValidationError):
            parse_condition({"field": "account.segments", "op": op, "value": value})
