"""The one shape of a 422's problems (shared/errors.py): FastAPI's request errors get an
RFC 6901 pointer into the part of the request they concern."""

from __future__ import annotations

from shared.errors import request_problem, request_problems


def test_a_request_error_points_into_its_part_with_the_pointer_escapes():
    got = request_problem({"loc": ("body", "traits", "a/b~c", 0), "msg": "Value error, too long", "type": "value_error"})
    assert got == {
        "in": "body",
        "pointer": "/traits/a~1b~0c/0",
        "message": "too long",
        "loc": ["body", "traits", "a/b~c", 0],
        "msg": "Value error, too long",
        "type": "value_error",
    }
    assert request_problem({"loc": ("query", "limit"), "msg": "m", "type": "t"})["pointer"] == "/limit"
    assert request_problem({"loc": ("body",), "msg": "Field required", "type": "missing"})["pointer"] == ""  # the whole body
    assert request_problem({"loc": ("name",), "msg": "m", "type": "t"})["pointer"] == "/name"  # no location given: the body's


def test_a_body_that_is_not_json_points_at_the_whole_body_not_at_its_offset():
    """FastAPI puts the character offset of a JSON decode error in its loc (``["body", 12]``):
    as a pointer that would name element 12 of a body that has no elements; the problem is
    the whole body, and the offset belongs in the message."""
    got = request_problem({"loc": ("body", 12), "msg": "JSON decode error", "type": "json_invalid", "ctx": {"error": "Expecting value"}})
    assert (got["in"], got["pointer"]) == ("body", "")
    assert got["message"] == "the body is not valid JSON: Expecting value at character 12" and got["loc"] == ["body", 12]


def test_a_union_members_tags_are_no_part_of_the_pointer():
    """CsmPatch's ``capacity: int | SkipJsonSchema[None]`` (optional, never null) fails once
    per member, its tag in the loc: the pointer was /capacity/int and /capacity/none, paths
    that are not in the body. Now one problem at /capacity; the tag stays in loc."""
    body = {"capacity": "x", "working_hours": {}, "name": {"str": 1}, "skills": ["a", 5]}
    errors = [
        {"loc": ("body", "capacity", "int"), "msg": "Input should be a valid integer", "type": "int_parsing"},
        {"loc": ("body", "capacity", "none"), "msg": "Input should be None", "type": "none_required"},
        {"loc": ("body", "working_hours", "WorkingHours", "monday"), "msg": "Field required", "type": "missing"},
        {"loc": ("body", "skills", "list[str]", 1), "msg": "Input should be a valid string", "type": "string_type"},
        {"loc": ("body", "active", "none"), "msg": "Input should be None", "type": "none_required"},
    ]
    got = [(p["pointer"], p["message"]) for p in request_problems(errors, {**body, "active": 3})]
    assert got == [
        ("/capacity", "Input should be a valid integer"),
        ("/working_hours/monday", "Field required"),
        ("/skills/1", "Input should be a valid string"),
        ("/active", "Input should be None"),  # alone at its place: kept
    ]
    assert request_problems(errors[:1], body)[0]["loc"] == ["body", "capacity", "int"]
