"""Bounds on what a caller can make us parse: the request body's total size, how deep
its JSON (or YAML) nests, non-finite numbers, and integers and times the database can store.

The JSON checks work on the raw bytes, before any recursive parser sees them, so a
body nested 100,000 deep is refused in one linear pass instead of raising
RecursionError (a 500) inside ``json.loads`` or pydantic. They are cheap enough for
every Kafka record: a record with fewer brackets than the limit is never scanned.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from array import array
from datetime import UTC, datetime
from itertools import accumulate
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Integer columns are 32-bit signed on PostgreSQL (and SQLite's are 64-bit): every
# integer a caller sends that lands in one is bounded by this, so overflow is a 422.
DB_INT_MAX = 2**31 - 1


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a zone offset, e.g. 2026-03-02T00:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is still year 0 in UTC
        raise ValueError("is outside 0001-01-01 to 9999-12-31 once converted to UTC; send a time in that range") from None


# A time a caller sends (a query parameter or a body field): aware, and converted to UTC
# here, since every column stores UTC (shared/db.py, UTCDateTime) and a time near year 1 or
# 9999 with a zone offset has no UTC value: a 422, never an OverflowError at the query.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]

# A JSON string literal, escapes included (unrolled-loop form: no backtracking).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Opening brackets map to 1, closing to 0xFF (-1 as a signed byte).
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NON_FINITE = re.compile(rb"NaN|Infinity")
_BIG_EXPONENT = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?[eE]\+?[0-9]{3,}")


def nesting_depth_exceeds(raw: bytes, limit: int) -> int | None:
    """The nesting depth of the JSON text ``raw`` if it is deeper than ``limit``
    (objects and arrays count one level each), else None. Malformed JSON is left to
    the parser: this only measures."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return None
    skeleton = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS).translate(_DEPTH_STEP)
    depth = max(accumulate(array("b", skeleton)), default=0)
    return depth if depth > limit else None


def has_non_finite_number(raw: bytes) -> bool:
    """Does ``raw`` hold NaN, Infinity, or a number too large for a double (1e400),
    outside a string? Python's json and pydantic accept them (as nan and inf); JSON
    (RFC 8259) and PostgreSQL's jsonb do not."""
    named = b"NaN" in raw or b"Infinity" in raw
    if not named and not _BIG_EXPONENT.search(raw):
        return False
    bare = _STRING.sub(b"", raw)
    if named and _NON_FINITE.search(bare):
        return True
    return any(math.isinf(float(m.group())) for m in _BIG_EXPONENT.finditer(bare))


def longest_number_digits(raw: bytes, limit: int) -> int | None:
    """The digit count of the longest number in ``raw`` if over ``limit``, else None."""
    run = re.compile(rb"[0-9]{%d,}" % (limit + 1))
    if not run.search(raw):
        return None
    longest = max((len(m.group()) for m in run.finditer(_STRING.sub(b"", raw))), default=0)
    return longest or None


def _error_response(status: int, code: str, detail: str) -> tuple[Message, Message]:
    body = json.dumps({"error": code, "detail": detail}).encode()
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        },
        {"type": "http.response.body", "body": body},
    )


_NUL = _error_response(422, "nul_character", "the request contains a NUL character (\\u0000 or %00), which no field accepts: remove it")


class RequestLimits:
    """ASGI middleware: a request body larger than ``max_bytes`` is a 413 (checked on
    Content-Length first, then while it streams in, so an oversized body is never held
    whole); a body that has not fully arrived ``body_timeout`` seconds after the request
    head is a 408 (a slow client holds its slot among the requests in flight that long
    at most); a JSON body nested deeper than ``max_depth`` is a 422; a NUL character in
    the path, the query or a JSON body is a 422 (PostgreSQL cannot store or even
    compare one: it would be a 500 at the first query). All answer in the API's
    ``{"error", "detail"}`` shape before any route, auth or parser runs."""

    # POST /v1/events rejects a NUL per event, with a reason, and accepts the rest of
    # the batch (docs/events.md): the whole-body NUL check would refuse them all.
    NUL_CHECKED_PER_ITEM = ("/v1/events",)

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int, body_timeout: float):
        self.app, self.max_bytes, self.max_depth, self.body_timeout = app, max_bytes, max_depth, body_timeout
        self._too_slow = _error_response(
            408, "body_timeout", f"the request body did not arrive within {body_timeout:g} s (TOUCHLINE_API_BODY_TIMEOUT_SECONDS)"
        )

    def _too_large(self, size: int | None) -> tuple[Message, Message]:
        got = f"{size} bytes" if size is not None else f"more than {self.max_bytes} bytes"
        return _error_response(
            413, "payload_too_large", f"the request body is {got}; the limit is {self.max_bytes} (TOUCHLINE_MAX_REQUEST_BYTES)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            for message in _NUL:
                await send(message)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            for message in self._too_large(int(declared)):
                await send(message)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        for reply in self._too_large(None):
                            await send(reply)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            for reply in self._too_slow:
                await send(reply)
            return
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").lower()
        if body and (not content_type or b"json" in content_type):
            if b"\\u0000" in body and scope.get("path") not in self.NUL_CHECKED_PER_ITEM:
                for reply in _NUL:
                    await send(reply)
                return
            depth = nesting_depth_exceeds(body, self.max_depth)
            if depth is not None:
                for reply in _error_response(
                    422, "too_deep", f"the JSON body nests {depth} levels deep; the limit is {self.max_depth} (TOUCHLINE_MAX_JSON_DEPTH)"
                ):
                    await send(reply)
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _DepthBoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nodes nested deeper than ``max_depth``. PyYAML's
    composer recurses once per level, whatever the style (``[[[``, ``- - -`` or
    indentation), so 2,000 levels raise RecursionError (a 500) in ``safe_load``; here
    the composer stops at the limit with a YAMLError at the offending line."""

    max_depth = 32

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nests more than {self.max_depth} levels deep (TOUCHLINE_MAX_JSON_DEPTH); flatten it",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _bounded_loader(max_depth: int) -> type[yaml.SafeLoader]:
    return type("DepthBoundedLoader", (_DepthBoundedLoader,), {"max_depth": max_depth})


def yaml_load(text: str, max_depth: int) -> Any:
    """``yaml.safe_load`` that raises a YAMLError (never RecursionError) past ``max_depth``."""
    return yaml.load(text, Loader=_bounded_loader(max_depth))  # noqa: S506  # a SafeLoader subclass


def yaml_compose(text: str, max_depth: int) -> yaml.Node | None:
    """``yaml.compose`` bounded the same way (the node tree, for line numbers)."""
    return yaml.compose(text, Loader=_bounded_loader(max_depth))
