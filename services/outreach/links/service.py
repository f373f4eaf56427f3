"""A click on a tracked link: where it leads and the ``link_clicked`` event it records.

The redirect is public and unauthenticated, so a request costs one AES-GCM open and, for a
valid token, one record queued for the Kafka producer; never a database read or write.
The event is encoded and validated by ingest's door (:func:`encode_event`, as a product
app's event is) and goes onto ``product.events``, the path a product app's event takes:
ingest stores it once per ``event_id`` and it feeds the rollups, rules, exit conditions
(conversions) and health like any usage event. When the broker fails a click, clicks are
not published for 30 s (:data:`PUBLISHING`), so readers are never held up by a broker
that is down.

**Re-clicks and replays.** The event id is derived from the token's text and the
``TOUCHLINE_LINK_CLICK_DEDUPE_SECONDS`` window the click falls in: a contact who clicks
again later records another click; the same request replayed within the window (a
double click, a mail scanner's second fetch, a hostile caller looping on one link) is
the same event id, which ingest keeps once. Each process also remembers the ids it
published lately (bounded, :data:`RECENT_CLICKS`), so a replay within the window is not
even published: one valid link costs at most one record per window per process.

**Where it leads.** A valid token: its URL, sealed in it when the message was rendered
(never a URL the request supplies, so the route is no open redirect). An expired token:
the same URL, recording nothing. A forged, altered or unreadable token:
``TOUCHLINE_LINK_FALLBACK_URL`` (default ``product_url``), recording nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from services.outreach.links import tokens
from shared.settings import Settings

log = logging.getLogger("touchline.links")

EVENT_NAME = "link_clicked"


class RecentIds:
    """A bounded, thread-safe set of the ids published lately (least recent dropped first)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> bool:
        """True if ``key`` was not there (and is now)."""
        with self._lock:
            if key in self._ids:
                self._ids.move_to_end(key)
                return False
            self._ids[key] = None
            if len(self._ids) > self.maxsize:
                self._ids.popitem(last=False)
            return True

    def discard(self, key: str) -> None:
        with self._lock:
            self._ids.pop(key, None)


RECENT_CLICKS = RecentIds(50_000)


class Breaker:
    """After the broker failed a click, stop trying for ``pause`` seconds (real time): a
    send to a broker that is down blocks for the producer's ``max_block_ms`` (10 s), and
    the reader would wait that long for every redirect. Clicks meanwhile are lost
    (counted as ``unpublished``); readers are redirected at once."""

    def __init__(self, pause: float):
        self.pause = pause
        self._until = 0.0
        self._lock = threading.Lock()

    def is_open(self) -> bool:
        return time.monotonic() < self._until

    def trip(self) -> None:
        with self._lock:
            self._until = time.monotonic() + self.pause

    def reset(self) -> None:
        with self._lock:
            self._until = 0.0


PUBLISHING = Breaker(30.0)


OUTCOMES = ("recorded", "replayed", "expired", "invalid", "unpublished")


@dataclass(frozen=True)
class Followed:
    location: str
    outcome: str  # one of OUTCOMES


def fallback_url(settings: Settings) -> str:
    return settings.link_fallback_url or settings.product_url


def safe_target(url: Any) -> bool:
    """An absolute http(s) URL with a host and nothing a Location header must not carry."""
    if not isinstance(url, str) or not url or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def click_event_id(token: str, now: datetime, settings: Settings) -> str:
    window = int(now.timestamp()) // settings.link_click_dedupe_seconds
    return "click-" + hashlib.sha256(f"{token}|{window}".encode()).hexdigest()[:40]


def click_event(data: dict[str, Any], *, event_id: str, now: datetime) -> dict[str, Any]:
    properties = {
        "message_id": data.get("m"),
        "url": data["t"],
        "playbook_id": data.get("p"),
        "resource_id": data.get("r"),
        "broadcast_id": data.get("b"),
    }
    event: dict[str, Any] = {
        "event_id": event_id,
        "account_id": data["a"],
        "name": EVENT_NAME,
        "timestamp": now.isoformat(),
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    if data.get("u"):
        event["user_id"] = data["u"]
    return event


def follow(settings: Settings, token: str, *, now: datetime, publish: Callable[[dict[str, Any]], None]) -> Followed:
    """Where ``token`` leads, having recorded its click (``publish``) if it is valid."""
    opened = tokens.open_token(settings.secret, tokens.LINK, token, now=now)
    if opened is None or not safe_target(opened.data.get("t")) or not isinstance(opened.data.get("a"), str):
        return Followed(fallback_url(settings), "invalid")
    url: str = opened.data["t"]
    if opened.expired:
        return Followed(url, "expired")
    event_id = click_event_id(token, now, settings)
    if not RECENT_CLICKS.add(event_id):
        return Followed(url, "replayed")
    if PUBLISHING.is_open():
        RECENT_CLICKS.discard(event_id)
        return Followed(url, "unpublished")
    try:
        publish(click_event(opened.data, event_id=event_id, now=now))
    except Exception as exc:  # the reader still goes where the link leads; the click is lost (logged, counted)
        RECENT_CLICKS.discard(event_id)
        PUBLISHING.trip()
        log.warning(
            "a link click could not be published (%s: %s); the reader was redirected, and clicks are not published for %.0f s",
            type(exc).__name__,
            exc,
            PUBLISHING.pause,
        )
        return Followed(url, "unpublished")
    return Followed(url, "recorded")
