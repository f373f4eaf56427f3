"""The event contract: validation rules and the published JSON Schema (fast unit tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.events import (
    ContractOutcomeIn,
    Event,
    Rejection,
    ValidEvent,
    event_json_schema,
    validate_event_bytes,
    validate_event_obj,
    validate_record,
)
from tests.support.helpers import ROOT

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SKEW = timedelta(days=1)
BASE = {"event_id": "e1", "account_id": "acme", "name": "login", "timestamp": "2026-03-02T11:00:00+01:00"}


def check(obj_or_bytes):
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return validate_event_bytes(raw, NOW, 64 * 1024, SKEW)


def test_a_track_event_is_accepted_and_normalised():
    ev = check(BASE)
    assert isinstance(ev, Event)
    assert ev.type == "track" and ev.timestamp == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "patch, reason, fragment",
    [
        ({"event_id": None}, "invalid_field", "event_id"),
        ({"account_id": 42}, "invalid_field", "account_id"),
        ({"timestamp": "2026-03-02T10:00:00"}, "timestamp_without_zone", "zone offset"),
        ({"timestamp": 1772445600}, "invalid_field", "timestamp"),
        ({"timestamp": "yesterday"}, "invalid_field", "timestamp"),
        ({"timestamp": "2026-03-04T12:00:01Z"}, "timestamp_in_future", "ahead of the server clock"),
        ({"name": ""}, "invalid_field", "name"),
        ({"properties": []}, "invalid_field", "properties"),
        ({"surprise": 1}, "invalid_field", "unknown field"),
        ({"type": "page"}, "invalid_field", "type"),
        ({"account_id": "a\nb"}, "invalid_field", "account_id"),
        ({"properties": {"x": "nul\u0000"}}, "invalid_field", "NUL"),
    ],
)
def test_mistyped_fields_are_rejected_with_a_reason_and_a_hint(patch, reason, fragment):
    obj = {**BASE, **patch}
    result = check(obj)
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert fragment in result.detail


@pytest.mark.parametrize("field", ["event_id", "account_id", "timestamp"])
def test_missing_required_fields(field):
    obj = {k: v for k, v in BASE.items() if k != field}
    result = check(obj)
    assert isinstance(result, Rejection) and result.reason == "missing_field" and field in result.detail


def test_track_needs_a_name_but_identify_and_group_do_not():
    assert check({k: v for k, v in BASE.items() if k != "name"}).reason == "invalid_field"
    ident = {**BASE, "type": "identify", "user_id": "u1", "traits": {"role": "champion"}}
    del ident["name"]
    assert check(ident).name == "$identify"
    group = {**BASE, "type": "group", "traits": {"seats": 5}}
    del group["name"]
    assert check(group).name == "$group"


@pytest.mark.parametrize(
    "event, fragment",
    [
        ({"type": "identify", "traits": {"role": "ceo"}, "user_id": "u"}, "traits.role"),
        ({"type": "identify", "traits": {"timezone": "Mars/Olympus"}, "user_id": "u"}, "IANA"),
        ({"type": "identify", "traits": {"email": "not-an-email"}, "user_id": "u"}, "traits.email"),
        ({"type": "identify", "traits": {}}, "user_id"),
        ({"type": "group", "traits": {"seats": "ten"}}, "traits.seats"),
        ({"type": "group", "traits": {"arr": -1}}, "traits.arr"),
        ({"type": "group", "traits": {"renewal_date": "next spring"}}, "traits.renewal_date"),
        ({"type": "group", "traits": {"segment": "Not A Slug"}}, "traits.segment"),
    ],
)
def test_traits_are_typed(event, fragment):
    result = check({**BASE, **event})
    assert isinstance(result, Rejection) and fragment in result.detail


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{nope", "invalid_json"),
        (b"", "invalid_json"),
        (b'"a string"', "not_an_object"),
        (b"null", "not_an_object"),
        (None, "not_an_object"),
        (b"{" + b'"a":"' + b"x" * 70_000 + b'"}', "oversized"),
    ],
)
def test_undecodable_records(raw, reason):
    result = validate_event_bytes(raw, NOW, 64 * 1024, SKEW)
    assert isinstance(result, Rejection) and result.reason == reason


def test_parsed_objects_follow_the_same_rules():
    assert isinstance(validate_event_obj(BASE, NOW, 64 * 1024, SKEW), Event)
    assert validate_event_obj([BASE], NOW, 64 * 1024, SKEW).reason == "not_an_object"
    assert validate_event_obj({**BASE, "properties": {"b": "é" * 40_000}}, NOW, 64 * 1024, SKEW).reason == "oversized"


def test_the_published_json_schema_is_current_and_its_examples_validate():
    path = ROOT / "schemas" / "product-event.schema.json"
    assert json.loads(path.read_text()) == event_json_schema(), "regenerate with `touchline schema > schemas/product-event.schema.json`"
    for example in Event.model_config["json_schema_extra"]["examples"]:
        assert isinstance(check({**example, "timestamp": "2026-03-01T09:00:00Z"}), Event)


def _records() -> list[bytes | None]:
    """Valid and invalid records, many near the edges the consumers' fast path checks."""
    objs = [
        BASE,
        {**BASE, "user_id": "u1", "properties": {"a": [1, {"b": None, "c": True}], "n": -(10**32) + 1}},
        {**BASE, "properties": {"n": 10**32}},
        {**BASE, "properties": {"n": 10**40}},
        {**BASE, "properties": {"f": 1.5}},
        {**BASE, "properties": {"f": 1.0000000000000000000000000000000001}},
        {**BASE, "user_id": None, "name": "x" * 128},
        {**BASE, "name": "x" * 129},
        {**BASE, "event_id": "é" * 128},
        {**BASE, "event_id": "e\x7f"},
        {**BASE, "user_id": ""},
        {**BASE, "name": "a\tb"},
        {**BASE, "properties": {"deep": json.loads('{"a":' * 14 + "1" + "}" * 14)}},
        {**BASE, "properties": {"deep": json.loads('{"a":' * 15 + "1" + "}" * 15)}},
        {**BASE, "properties": {"q": 'say "hi" \\ \n'}},
        {**BASE, "timestamp": "2026-03-02T11:00:00.123456Z"},
        {**BASE, "timestamp": "2026-03-02T11:00:00.1234567Z"},
        {**BASE, "timestamp": "2026-03-02t11:00:00z"},
        {**BASE, "timestamp": "2026-03-02 11:00:00Z"},
        {**BASE, "timestamp": "2026-02-30T11:00:00Z"},
        {**BASE, "timestamp": "2026-03-02T24:00:00Z"},
        {**BASE, "timestamp": "2026-03-02T11:00:60Z"},
        {**BASE, "timestamp": "2026-03-02T11:00:00+24:00"},
        {**BASE, "timestamp": "2026-03-03T11:59:59Z"},
        {**BASE, "timestamp": "2026-03-03T12:00:01Z"},
        {**BASE, "timestamp": "20260302T110000Z"},
        {**BASE, "type": "identify", "user_id": "u1", "traits": {"email": "a@b.c", "role": "admin", "x": 1}},
        {**BASE, "type": "identify", "traits": {"email": "a@b.c"}},
        {**BASE, "type": "identify", "user_id": "u1", "traits": {"role": "ceo"}},
        {**BASE, "type": "group", "traits": {"plan": "pro", "seats": 3, "arr": 10.5}},
        {**BASE, "type": "group", "name": None},
        {**BASE, "type": "group", "traits": {"seats": 10**30}},
        {**BASE, "type": None},
        {**BASE, "properties": None},
        {**BASE, "traits": {"a": 1}},
        {**BASE, "extra": 1},
        {**BASE, "account_id": 42},
        {**BASE, "event_id": None},
    ]
    raws: list[bytes | None] = [json.dumps(o).encode() for o in objs]
    raws += [json.dumps(o, ensure_ascii=False).encode() for o in objs]
    raws += [
        None,
        b"",
        b"null",
        b"[]",
        b"{nope",
        b"\xff\xfe{}",
        b'{"event_id":"x","name":"\xff\xfe"}',
        json.dumps({**BASE, "properties": {"x": "nul\u0000"}}).encode(),
        b'{"event_id":"e1","event_id":"e2","account_id":"acme","name":"n","timestamp":"2026-03-02T11:00:00Z"}',
        b'{"event_id":"e1","account_id":"acme","name":"n","timestamp":"2026-03-02T11:00:00Z","properties":{"x":NaN}}',
        b'{"event_id":"e1","account_id":"acme","name":"n","timestamp":"2026-03-02T11:00:00Z","properties":{"x":1e400}}',
        b'{"event_id":"e1","account_id":"acme","name":"n","timestamp":"2026-03-02T11:00:00Z","properties":{"x":"\\ud800"}}',
        b' {"event_id" : "e1", "account_id":"acme",\n"name":"n","timestamp":"2026-03-02T11:00:00Z"} ',
    ]
    return raws


@pytest.mark.parametrize("raw", _records())
def test_the_consumers_fast_path_gives_the_reference_verdict(raw):
    """validate_record (the Kafka consumers') decides every record as validate_event_bytes
    (the reference, the API's) does: the same event, or the same reason and detail."""
    expected = validate_event_bytes(raw, NOW, 64 * 1024, SKEW)
    got = validate_record(None, raw, NOW, 64 * 1024, SKEW)
    if isinstance(expected, Rejection):
        assert got == expected
    else:
        assert got == ValidEvent.of(expected)
        assert got.timestamp.utcoffset() == expected.timestamp.utcoffset()


def test_common_events_take_the_fast_path():
    from shared.events import _fast_event

    ident = {**BASE, "type": "identify", "user_id": "u1", "traits": {"email": "a@b.c", "role": "admin"}}
    for obj in (BASE, {**BASE, "user_id": "u1", "properties": {"plan": "pro", "n": 3}}, ident):
        assert isinstance(_fast_event(json.dumps(obj).encode(), NOW, 64 * 1024, SKEW), ValidEvent)


CONTRACT = {"event_id": "c1", "type": "contract", "account_id": "acme", "timestamp": "2026-03-02T09:00:00Z"}


@pytest.mark.parametrize(
    "properties, arr_after",
    [
        ({"kind": "renewed", "arr_before": 100, "arr_after": 100, "effective_date": "2026-03-01"}, 100),
        ({"kind": "renewed", "arr_before": 100, "arr_after": 90, "effective_date": "2026-03-01"}, 90),
        ({"kind": "churned", "arr_before": 100, "effective_date": "2026-03-01"}, 0),
        ({"kind": "churned", "arr_before": 100, "arr_after": 0, "effective_date": "2026-03-01"}, 0),
        ({"kind": "expanded", "arr_before": 100, "arr_after": 100.01, "effective_date": "2026-03-01"}, 100.01),
        ({"kind": "contracted", "arr_before": 100, "arr_after": 0.01, "effective_date": "2026-03-01"}, 0.01),
    ],
)
def test_a_contract_outcome_at_the_edges_of_its_arr_rules_is_accepted(properties, arr_after):
    ev = check({**CONTRACT, "properties": properties})
    assert isinstance(ev, Event) and ev.name == "$contract"
    assert ContractOutcomeIn.model_validate(ev.properties).arr_after == arr_after
    # The consumers' fast path hands it to the reference validation, which accepts it the same.
    assert isinstance(validate_record(b"acme", json.dumps({**CONTRACT, "properties": properties}).encode(), NOW, 65536, SKEW), ValidEvent)


@pytest.mark.parametrize(
    "properties, fragment",
    [
        ({"kind": "renewed", "arr_before": 100, "effective_date": "2026-03-01"}, "properties.arr_after: required for a renewed"),
        ({"kind": "expanded", "arr_before": 100, "arr_after": 100, "effective_date": "2026-03-01"}, "properties.arr_after: an expansion"),
        (
            {"kind": "contracted", "arr_before": 100, "arr_after": 100, "effective_date": "2026-03-01"},
            "properties.arr_after: a contraction",
        ),
        ({"kind": "contracted", "arr_before": 100, "arr_after": 0, "effective_date": "2026-03-01"}, "to 0 is 'churned'"),
        (
            {"kind": "churned", "arr_before": 100, "arr_after": 1, "effective_date": "2026-03-01"},
            "properties.arr_after: a churned contract",
        ),
        ({"kind": "churn", "arr_before": 100, "effective_date": "2026-03-01"}, "properties.kind: Input should be 'renewed'"),
        ({"kind": "churned", "arr_before": -1, "effective_date": "2026-03-01"}, "properties.arr_before"),
        ({"kind": "churned", "arr_before": 1, "effective_date": "2026-03-01T00:00:00Z"}, "properties.effective_date"),
        ({"kind": "churned", "arr_before": 1}, "properties.effective_date: Field required"),
        ({"kind": "churned", "arr_before": 1, "effective_date": "2026-03-01", "crm": "x"}, "properties.crm: Extra inputs"),
    ],
)
def test_a_bad_contract_outcome_is_refused_naming_the_property(properties, fragment):
    result = check({**CONTRACT, "properties": properties})
    assert isinstance(result, Rejection) and result.reason == "invalid_field"
    assert fragment in result.detail, result.detail
