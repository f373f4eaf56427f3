"""The public event contract (``product.events``), its validation and the reasons a
record is rejected. Kafka records and ``POST /v1/events`` go through the same code.

The contract follows Segment's conventions: ``type`` is ``track`` (a usage event,
the default), ``identify`` (user traits) or ``group`` (account traits); Touchline adds
``contract``, a contract outcome (renewed, churned, contracted, expanded) a CRM or the
billing system reports, carried in ``properties`` (:class:`ContractOutcomeIn`). The JSON
Schema in ``schemas/product-event.schema.json`` is generated from :class:`Event`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.limits import DB_INT_MAX, has_non_finite_number, longest_number_digits, nesting_depth_exceeds

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), Field(strict=True)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_\-]*$"), Field(strict=True)]

USER_ROLES = ("champion", "power_user", "buyer", "admin", "member")
EVENT_TYPES = ("track", "identify", "group", "contract")
# What became of a contract (docs/events.md, "contract"): a "contract outcome", never
# just an "outcome", which is an engagement's (docs/glossary.md).
CONTRACT_KINDS = ("renewed", "churned", "contracted", "expanded")


class AccountTraits(BaseModel):
    """Known account traits. Unknown traits are kept as they are in ``traits``."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    plan: Slug | None = None
    arr: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    seats: Annotated[int, Field(ge=0, le=DB_INT_MAX, strict=True)] | None = None
    segment: Slug | None = None
    lifecycle_stage: Slug | None = None
    renewal_date: date | None = None
    signup_date: date | None = None
    owner_email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


class UserTraits(BaseModel):
    """Known user (contact) traits. Unknown traits are kept as they are in ``traits``."""

    model_config = ConfigDict(extra="allow")

    email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    role: Literal[USER_ROLES] | None = None  # type: ignore[valid-type]
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}; use a name such as 'Europe/Paris'") from None
        return v


Arr = Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False)]


class ContractOutcomeIn(BaseModel):
    """A contract outcome: the ``properties`` of a ``contract`` event, and the body of
    ``POST /v1/accounts/{id}/contract-outcomes``. ARR before and after the change; a
    churn ends at 0, an expansion goes up, a contraction goes down (to more than 0: to 0
    is a churn)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "renewed", "arr_before": 24000, "arr_after": 26000, "effective_date": "2027-03-01"}]},
    )

    kind: Literal[CONTRACT_KINDS] = Field(description="renewed, churned, contracted or expanded")  # type: ignore[valid-type]
    arr_before: Arr = Field(description="ARR before the change")
    arr_after: Arr | None = Field(None, validate_default=True, description="ARR after it; 0 (the default) for churned, required otherwise")
    effective_date: date = Field(description="the day it takes effect (YYYY-MM-DD), e.g. the renewal date")
    note: Annotated[str, StringConstraints(max_length=500)] | None = Field(None, description="free text, e.g. the CRM opportunity")

    @field_validator("effective_date", mode="before")
    @classmethod
    def _a_day(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
            raise ValueError("a day, YYYY-MM-DD (e.g. 2027-03-01), without a time")
        return v

    @field_validator("arr_after")
    @classmethod
    def _arr_follows_kind(cls, v: float | None, info: ValidationInfo) -> float | None:
        kind, before = info.data.get("kind"), info.data.get("arr_before")
        if kind is None or before is None:  # already refused
            return v
        if kind == "churned":
            if v not in (None, 0):
                raise ValueError("a churned contract ends at 0 ARR; send 0 or leave it out (a reduction is 'contracted')")
            return 0.0
        if v is None:
            raise ValueError(f"required for a {kind} contract (the ARR after it)")
        if kind == "expanded" and not v > before:
            raise ValueError("an expansion ends above arr_before; at the same or a lower ARR it is 'renewed' or 'contracted'")
        if kind == "contracted" and not 0 < v < before:
            raise ValueError("a contraction ends below arr_before and above 0 (to 0 is 'churned')")
        return v


_TYPE_DOC = "track (usage), identify (user traits), group (account traits) or contract (a contract outcome in properties)"


class Event(BaseModel):
    """One event on ``product.events`` (key = account_id)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b7f6c8e-2a51-4a8e-9a53-1d2f3c4b5a69",
                    "account_id": "acme",
                    "user_id": "u-42",
                    "name": "report_created",
                    "timestamp": "2026-11-23T09:15:00+01:00",
                    "properties": {"report_type": "funnel"},
                },
                {
                    "event_id": "7f3e...-identify",
                    "type": "identify",
                    "account_id": "acme",
                    "user_id": "u-42",
                    "timestamp": "2026-11-23T09:00:00Z",
                    "traits": {"email": "ada@acme.test", "name": "Ada", "role": "champion", "timezone": "Europe/London"},
                },
                {
                    "event_id": "crm-opp-0061",
                    "type": "contract",
                    "account_id": "acme",
                    "timestamp": "2027-02-20T16:00:00Z",
                    "properties": {"kind": "renewed", "arr_before": 24000, "arr_after": 26000, "effective_date": "2027-03-01"},
                },
                {
                    "event_id": "7f3e...-group",
                    "type": "group",
                    "account_id": "acme",
                    "timestamp": "2026-11-23T09:00:00Z",
                    "traits": {
                        "name": "Acme Inc",
                        "plan": "pro",
                        "arr": 24000,
                        "seats": 25,
                        "segment": "smb",
                        "lifecycle_stage": "onboarding",
                        "renewal_date": "2027-03-01",
                        "signup_date": "2026-11-01",
                    },
                },
            ]
        },
    )

    event_id: Id = Field(description="Unique id chosen by the sender; resending the same id is a no-op")
    account_id: Id = Field(description="The customer account; also the Kafka record key")
    user_id: Id | None = Field(None, description="The user who acted, if any")
    type: Literal[EVENT_TYPES] = Field("track", description=_TYPE_DOC)  # type: ignore[valid-type]
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), Field(strict=True)] | None = (
        Field(None, description="The event name; required for track events")
    )
    timestamp: AwareDatetime = Field(strict=True, description="When it happened: RFC 3339 with a zone offset")
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _by_type(self) -> Event:
        if self.type == "track":
            if not self.name:
                raise ValueError("track events need a 'name' (e.g. \"report_created\")")
        else:
            self.name = self.name or f"${self.type}"
        if self.type == "identify":
            if not self.user_id:
                raise ValueError("identify events need a 'user_id': traits in an identify call describe a user")
            _check_traits(UserTraits, self.traits)
        elif self.type == "group":
            _check_traits(AccountTraits, self.traits)
        elif self.type == "contract":
            if self.traits:
                raise ValueError("contract events carry the outcome in 'properties', not 'traits'")
            _check_traits(ContractOutcomeIn, self.properties, "properties")
        return self


def _check_traits(model: type[BaseModel], traits: dict[str, Any], where: str = "traits") -> None:
    try:
        model.model_validate(traits)
    except ValidationError as exc:
        raise ValueError("; ".join(_located(where, e) for e in exc.errors(include_url=False))) from None


def _located(where: str, e: Any) -> str:
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    return f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}"


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


# How deep an event may nest, counting the event object itself: properties and traits
# may hold objects and arrays down to MAX_EVENT_DEPTH - 1 levels (docs/events.md).
MAX_EVENT_DEPTH = 16
# Longer numbers cannot round-trip through every store and parser (Python refuses to
# print an int of more than 4,300 digits); an identifier that long is a string.
MAX_NUMBER_DIGITS = 32

# Every reason a record can be dead-lettered with (docs/events.md lists them; a test
# checks each has a DLQ case).
REJECTION_REASONS = (
    "oversized",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "timestamp_without_zone",
    "timestamp_in_future",
    "key_mismatch",
    "processing_error",
)


def _describe(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False)
    parts = []
    reason = "invalid_field"
    for e in errors:
        loc = ".".join(str(p) for p in e["loc"]) or "(event)"
        if e["type"] == "missing":
            reason = "missing_field" if reason == "invalid_field" else reason
            parts.append(f"{loc}: required field is missing")
        elif e["type"] == "timezone_aware":
            reason = "timestamp_without_zone"
            parts.append(f"{loc}: timestamp has no zone offset; send RFC 3339 such as 2026-11-23T09:15:00Z")
        elif e["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field; allowed fields are {', '.join(Event.model_fields)}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}")
    return Rejection(reason, "; ".join(parts))


def validate_event_bytes(raw: bytes | None, now: datetime, max_bytes: int, max_future: timedelta) -> Event | Rejection:
    """Validate one raw record. Fast path: pydantic parses the bytes directly; the
    slow path only runs to name the reason of a rejection."""
    if raw is None:
        return Rejection("not_an_object", "record has no value (tombstone)")
    if len(raw) > max_bytes:
        return Rejection("oversized", f"record is {len(raw)} bytes; the limit is {max_bytes} (TOUCHLINE_MAX_EVENT_BYTES)")
    if b"\\u0000" in raw:
        return Rejection("invalid_field", "the event contains a NUL character (\\u0000), which PostgreSQL cannot store; remove it")
    depth = nesting_depth_exceeds(raw, MAX_EVENT_DEPTH)
    if depth is not None:
        return Rejection(
            "invalid_field",
            f"the event nests {depth} levels deep (objects and arrays); the limit is {MAX_EVENT_DEPTH}: flatten properties and traits",
        )
    if has_non_finite_number(raw):
        return Rejection("invalid_json", "NaN and Infinity are not JSON numbers (RFC 8259); send null, a number or a string")
    digits = longest_number_digits(raw, MAX_NUMBER_DIGITS)
    if digits is not None:
        return Rejection(
            "invalid_field",
            f"the event holds a number of {digits} digits; numbers are limited to {MAX_NUMBER_DIGITS} digits: send a string instead",
        )
    try:
        event = Event.model_validate_json(raw)
    except ValidationError as exc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejection("invalid_utf8", f"not valid UTF-8 at byte {uexc.start}")
        try:
            obj = json.loads(text)
        except ValueError as jexc:
            return Rejection("invalid_json", f"not JSON: {jexc}")
        if not isinstance(obj, dict):
            return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        return _describe(exc)
    return _check_time(event, now, max_future)


class ValidEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid event as the Kafka consumers use it: :class:`Event`'s fields, values and
    defaults (``name`` is ``$identify``/``$group`` when absent), without the cost of a
    pydantic model per record."""

    event_id: str
    account_id: str
    user_id: str | None
    type: str
    name: str
    timestamp: datetime
    properties: dict[str, Any]
    traits: dict[str, Any]

    @classmethod
    def of(cls, ev: Event) -> ValidEvent:
        return cls(ev.event_id, ev.account_id, ev.user_id, ev.type, ev.name or f"${ev.type}", ev.timestamp, ev.properties, ev.traits)


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """The envelope as msgspec decodes it; what msgspec cannot check, :func:`_fast_event` does."""

    event_id: str
    account_id: str
    timestamp: str
    user_id: str | None = None
    type: Literal[EVENT_TYPES] = "track"  # type: ignore[valid-type]
    name: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}


_WIRE = msgspec.json.Decoder(_Wire)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3339 with a zone, the subset that datetime.fromisoformat and pydantic read alike.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")
_NUMBER_BOUND = 10**MAX_NUMBER_DIGITS


def _plain_values(obj: dict[str, Any] | list[Any]) -> bool:
    """Only strings, booleans, nulls, integers of at most MAX_NUMBER_DIGITS digits and
    containers of them (a float, whose digits the decoded value no longer shows, is
    left to the full validation)."""
    for v in obj.values() if isinstance(obj, dict) else obj:
        t = type(v)
        if t is str or t is bool or v is None:
            continue
        if t is int:
            if -_NUMBER_BOUND < v < _NUMBER_BOUND:
                continue
            return False
        if (t is dict or t is list) and _plain_values(v):
            continue
        return False
    return True


def _fast_event(raw: bytes, now: datetime, max_bytes: int, max_future: timedelta) -> ValidEvent | None:
    """The common case in one pass: decode with msgspec and check what :class:`Event` and
    the byte checks would. Returns None (never a Rejection) for anything it is not sure
    of; :func:`validate_event_bytes` then decides and names the reason, so rejection
    reasons and details have one source. Accepts only what that function accepts."""
    if len(raw) > max_bytes or b"\\u0000" in raw or raw.count(b"{") + raw.count(b"[") > MAX_EVENT_DEPTH:  # depth is then within the limit
        return None
    try:
        w = _WIRE.decode(raw)
    except (msgspec.DecodeError, ValueError):  # invalid JSON or UTF-8, a wrong type, NaN, 1e400, an unknown field
        return None
    event_id, account_id, user_id, name = w.event_id, w.account_id, w.user_id, w.name
    if name is None:
        if w.type == "track":
            return None
        name = f"${w.type}"
    if not (
        0 < len(event_id) <= 128 and 0 < len(account_id) <= 128 and 0 < len(name) <= 128 and (user_id is None or 0 < len(user_id) <= 128)
    ):
        return None
    if _CONTROL.search(f"{event_id}{account_id}{user_id or ''}{name}"):  # no id or name holds a control character
        return None
    if not _RFC3339.fullmatch(w.timestamp):
        return None
    try:
        ts = datetime.fromisoformat(w.timestamp)
    except ValueError:
        return None
    if ts > now + max_future or (w.properties and not _plain_values(w.properties)) or (w.traits and not _plain_values(w.traits)):
        return None
    if w.type == "contract":  # rare: the reference path checks the outcome and names the problem
        return None
    if w.type != "track":
        if w.type == "identify" and w.user_id is None:
            return None
        try:
            (UserTraits if w.type == "identify" else AccountTraits).model_validate(w.traits)
        except ValidationError:
            return None
    return ValidEvent(event_id, account_id, user_id, w.type, name, ts, w.properties, w.traits)


def validate_record(key: bytes | None, value: bytes | None, now: datetime, max_bytes: int, max_future: timedelta) -> ValidEvent | Rejection:
    """Validate one ``product.events`` record: the envelope, and the key, which must be
    the event's ``account_id`` (the partitioning contract). Ingest and the rules worker
    both read the topic and must agree on what is valid, so this lives here.

    Same verdicts and reasons as :func:`validate_event_bytes` (the reference, which the
    API uses); most records take :func:`_fast_event`, about ten times cheaper
    (docs/performance.md), and any record it is unsure of takes the reference path."""
    result = _fast_event(value, now, max_bytes, max_future) if value is not None else None
    if result is None:
        reference = validate_event_bytes(value, now, max_bytes, max_future)
        if isinstance(reference, Rejection):
            return reference
        result = ValidEvent.of(reference)
    if key is not None:
        text = key.decode("utf-8", "replace")
        if text != result.account_id:
            return Rejection(
                "key_mismatch",
                f"record key {text!r} differs from account_id {result.account_id!r}; key records by account_id "
                "so each account's events stay in one partition, in order",
            )
    return result


def encode_and_validate(obj: Any, now: datetime, max_bytes: int, max_future: timedelta) -> tuple[Event | Rejection, bytes]:
    """Encode one already-parsed JSON value (HTTP batches) as the record to publish, and
    validate those very bytes, as the worker will."""
    if not isinstance(obj, dict):
        return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}"), b""
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return validate_event_bytes(raw, now, max_bytes, max_future), raw


def validate_event_obj(obj: Any, now: datetime, max_bytes: int, max_future: timedelta) -> Event | Rejection:
    return encode_and_validate(obj, now, max_bytes, max_future)[0]


def _check_time(event: Event, now: datetime, max_future: timedelta) -> Event | Rejection:
    if event.timestamp > now + max_future:
        return Rejection(
            "timestamp_in_future",
            f"timestamp {event.timestamp.isoformat()} is more than {max_future} ahead of the server clock "
            f"({now.isoformat()}); check the sender's clock and time zone",
        )
    return event


def event_json_schema() -> dict[str, Any]:
    schema = Event.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://touchline.dev/schemas/product-event.schema.json"
    schema["$defs"] = schema.get("$defs", {})
    schema["$defs"]["AccountTraits"] = AccountTraits.model_json_schema()
    schema["$defs"]["UserTraits"] = UserTraits.model_json_schema()
    schema["$defs"]["ContractOutcome"] = ContractOutcomeIn.model_json_schema()
    schema["description"] = (
        "One event on topic product.events (key = account_id), UTF-8 JSON, at most 64 KiB. "
        "type=track carries usage (name + properties); identify carries user traits (UserTraits); "
        "group carries account traits (AccountTraits); contract carries a contract outcome in "
        "properties (ContractOutcome)."
    )
    return schema
