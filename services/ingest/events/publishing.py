"""Publishing an event another service observed (a click on a link in a mail, a survey
answer) onto ``product.events``: the same contract, the same validation and the same
topic as a product app's event, keyed by ``account_id``. Ingest then stores it once per
``event_id`` like any other, so it feeds rollups, rules, conversions and health. Nothing
here writes to the database or talks to the broker: the caller sends the record (a click
answers a request and must stay cheap)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.events import Rejection, encode_and_validate
from shared.settings import Settings


class EventRefused(ValueError):
    """The event does not hold to the contract (a bug in the caller, never the reader's)."""


def encode_event(settings: Settings, event: dict[str, Any], *, now: datetime) -> tuple[str, bytes, bytes]:
    """``event`` as the record to put on ``product.events``: (topic, key, value), validated
    as ingest will, for the caller to send (through the outbox, shared/outbox.py, in its
    own transaction, or to the producer). Raises :class:`EventRefused` for an invalid event."""
    result, raw = encode_and_validate(event, now, settings.max_event_bytes, timedelta(seconds=settings.max_future_skew_seconds))
    if isinstance(result, Rejection):
        raise EventRefused(f"{result.reason}: {result.detail}")
    return settings.topic_events, result.account_id.encode(), raw
