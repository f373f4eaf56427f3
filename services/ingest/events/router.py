"""POST /v1/events: the HTTP door to product.events for apps without a Kafka client; and
GET /v1/dead-letters: what the workers rejected (shared/deadletters.py)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from shared import deadletters
from shared.api import BodyDep, SessionDep, context_of
from shared.auth import Principal, require
from shared.errors import AUTH_ERRORS, PayloadTooLarge, Unavailable, Unprocessable, responses
from shared.events import Event, Rejection, encode_and_validate
from shared.limits import DB_INT_MAX
from shared.metrics import HTTP_EVENTS
from shared.pagination import next_key

router = APIRouter(tags=["events"])


class EventError(BaseModel):
    index: int
    event_id: str | None = None
    reason: str
    detail: str


class IngestResponse(BaseModel):
    accepted: int
    rejected: list[EventError]


_EVENT_SCHEMA_REF = {"$ref": "#/components/schemas/Event"}
_EXAMPLES: list[dict[str, Any]] = cast(dict[str, Any], Event.model_config["json_schema_extra"])["examples"]


@router.post(
    "/v1/events",
    status_code=202,
    response_model=IngestResponse,
    summary="Send one event or a batch of up to 1000",
    description=(
        "Validates each event against the event contract (see docs/events.md) and publishes the valid ones to "
        "`product.events`, keyed by account_id. Answers 202 with the count accepted and, for each rejected "
        "event, its index in the batch, the reason and how to fix it. If no event is valid the answer is 422 "
        "with the same body. Re-sending an event_id is harmless: ingest keeps the first."
    ),
    responses={
        **AUTH_ERRORS,
        **responses(PayloadTooLarge, Unprocessable, Unavailable),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_EVENT_SCHEMA_REF, {"type": "array", "items": _EVENT_SCHEMA_REF, "maxItems": 1000}]},
                    "examples": {
                        "track": {"value": _EXAMPLES[0]},
                        "batch": {"value": _EXAMPLES},
                    },
                }
            },
        }
    },
)
def post_events(request: Request, _principal: Principal = require("ingest"), body: bytes = BodyDep) -> Any:
    """A plain def: validating a batch of 1,000 events and waiting for the broker's
    acknowledgements run in the thread pool, never on the event loop."""
    ctx = context_of(request)
    settings = ctx.settings
    limit = settings.http_batch_limit
    if len(body) > limit * settings.max_event_bytes:
        raise PayloadTooLarge(
            f"request body is {len(body)} bytes; send at most {limit} events of at most {settings.max_event_bytes} bytes each"
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"request body is not JSON: {exc}") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise Unprocessable("empty batch: send one event object or an array of 1 to 1000 events")
    if len(items) > limit:
        raise PayloadTooLarge(f"batch of {len(items)} events; the limit is {limit} per request")

    now = ctx.clock.now()
    max_future = timedelta(seconds=settings.max_future_skew_seconds)
    accepted: list[tuple[Event, bytes]] = []  # published as the sender wrote them
    rejected: list[EventError] = []
    for i, obj in enumerate(items):
        result, raw = encode_and_validate(obj, now, settings.max_event_bytes, max_future)
        if isinstance(result, Rejection):
            event_id = obj.get("event_id") if isinstance(obj, dict) and isinstance(obj.get("event_id"), str) else None
            rejected.append(EventError(index=i, event_id=event_id, reason=result.reason, detail=result.detail))
        else:
            accepted.append((result, raw))
    HTTP_EVENTS.labels("rejected").inc(len(rejected))
    if not accepted:
        raise Unprocessable({"accepted": 0, "rejected": [e.model_dump() for e in rejected]})

    try:
        producer = ctx.producer
        futures = [producer.send(settings.topic_events, key=ev.account_id.encode(), value=raw) for ev, raw in accepted]
        producer.flush(timeout=10)
        for f in futures:
            f.get(timeout=10)
    except (KafkaError, OSError) as exc:
        ctx.reset_producer()
        raise Unavailable(f"could not publish to Kafka ({type(exc).__name__}); retry: re-sent event_ids are deduplicated") from None
    HTTP_EVENTS.labels("accepted").inc(len(accepted))
    return JSONResponse(status_code=202, content=IngestResponse(accepted=len(accepted), rejected=rejected).model_dump())


class DeadLetterOut(BaseModel):
    id: int
    dlq_topic: str
    worker: str
    reason: str
    detail: str
    source: dict[str, Any] = Field(description="topic, partition and offset of the rejected record")
    rejected_at: str
    key: str | None
    original_text: str | None = Field(description="the original bytes as UTF-8 text, or null when they are not")
    original_base64: str = Field(description="the original bytes, base64")
    original_size: int = Field(description="the original's size in bytes")
    original_truncated: bool = Field(
        description="the original is larger than a page carries (its first 64 KiB here); `touchline dlq` prints every byte"
    )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = Field(None, description="pass back as ?cursor= for the next (older) page; null on the last")


@router.get(
    "/v1/dead-letters",
    response_model=DeadLetterPage,
    responses={**AUTH_ERRORS, **responses(Unprocessable)},
    summary="Rejected records, newest first, with their reason and source offset (kept in the database: they survive a broker restart)",
)
def list_dead_letters(
    cursor: int | None = Query(None, ge=1, le=DB_INT_MAX, description="next_cursor from the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    reason: str | None = Query(None, max_length=64, description="only this reason, e.g. invalid_json"),
    session: Session = SessionDep,
    _principal: Principal = require("ops"),
) -> DeadLetterPage:
    heads = deadletters.newest_heads(session, limit=limit, before_id=cursor, reason=reason)
    rows = [row for row, _head in heads]
    items = []
    for row, head in heads:
        d = deadletters.as_dict(row, head)
        raw = d.pop("original_bytes")
        items.append(DeadLetterOut(**d, original_base64=base64.b64encode(raw).decode()))
    return DeadLetterPage(items=items, next_cursor=next_key(rows, limit, lambda r: str(r.id)))
