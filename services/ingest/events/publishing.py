"""Publishing an event another service observed (a click on a link in a mail, a survey
answer) onto ``product.events``: the same contract, the same validation and the same
topic as a product app's event, keyed by ``account_id``. Ingest then stores it once per
``event_id`` like any other, so it feeds rollups, rules, conversions and health. Nothing
here writes to the database: the caller answers a request and must stay cheap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from kafka import KafkaProducer

from shared.events import Rejection, encode_and_validate
from shared.settings import Settings


class EventRefused(ValueError):
    """The event does not hold to the contract (a bug in the caller, never the reader's)."""


def encode_event(settings: Settings, event: dict[str, Any], *, now: datetime) -> tuple[str, bytes, bytes]:
    """``event`` as the record to put on ``product.events``: (topic, key, value), validated
    as ingest will. For a caller that writes it through the outbox (shared/outbox.py) in
    its own transaction. Raises :class:`EventRefused` for an invalid event."""
    result, raw = encode_and_validate(event, now, settings.max_event_bytes, timedelta(seconds=settings.max_future_skew_seconds))
    if isinstance(result, Rejection):
        raise EventRefused(f"{result.reason}: {result.detail}")
    return settings.topic_events, result.account_id.encode(), raw


def publish_event(
    producer: KafkaProducer,
    settings: Settings,
    event: dict[str, Any],
    *,
    now: datetime,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Validate ``event`` as ingest will, then hand it to the producer without waiting for
    the broker's acknowledgement (the producer sends within ``linger_ms``); a failure to
    deliver is reported to ``on_error``. Raises :class:`EventRefused` for an invalid event."""
    topic, key, value = encode_event(settings, event, now=now)
    future = producer.send(topic, key=key, value=value)
    if on_error is not None:
        future.add_errback(on_error)
