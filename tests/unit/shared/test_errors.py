"""The one shape of a 422's problems (shared/errors.py): FastAPI's request errors get an
RFC 6901 pointer into the part of the request they concern."""

from __future__ import annotations

from shared.errors import request_problem


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
