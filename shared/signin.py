"""Sign-in throttling and its trace: every key presented to the API (a bearer key) or to
the console's sign-in form passes here.

Counting. Failures are counted per client address and key prefix (the ``tl_<prefix>_``
part, which names one key; anything not shaped like a key counts under ``-``). After
``TOUCHLINE_SIGNIN_FAILURES_BEFORE_DELAY`` failures the next try waits 1 s, then 2, 4 …
(at most a minute); after ``TOUCHLINE_SIGNIN_FAILURES_BEFORE_REFUSAL`` that address is
refused for that key for ``TOUCHLINE_SIGNIN_THROTTLE_WINDOW_SECONDS``. A count is
forgotten a window after its last failure. Why not per address alone: guessing a key
means guessing its secret under its prefix, and that is what this slows; a client that
invents a new prefix per try guesses nothing (keys are 256-bit random) and costs one
indexed lookup, which the API's concurrency cap bounds (shared/overload.py). Counting per
address alone would let one misconfigured client, or one attacker behind a shared NAT or
proxy, lock every key out of that address: a product app and a stale key on one host.

Slowed without sleeping: a try inside its wait is refused at once with 429 and
``Retry-After`` (seconds), before any database work, so an attacker costs neither a
connection nor a thread and no request sleeps in the event loop. A right key from
another address, or another key from the same address, is never affected; the right key
from the throttled address waits like the wrong ones (else a right answer would show
through the refusals and guessing would not be slowed).

Per process, in memory, bounded: at most ``TOUCHLINE_SIGNIN_THROTTLE_MAX_TRACKED`` counts
(least recently failed dropped first). N API processes allow N times the tries; an
attacker who rotates through more addresses than that bound can make it forget. Behind
a reverse proxy the client address is the proxy's unless uvicorn is told to trust its
``X-Forwarded-For`` (``FORWARDED_ALLOW_IPS``). Time is the app's clock, so tests use
the simulated one.

Trace. Each failure is logged (address, key prefix, reason, count; never the key or any
part of its secret) and counted in ``touchline_signins_total{channel, outcome}`` with
each success and each refusal. Console sign-ins are logged and audited by the console;
a bearer key authenticates every API request, so API successes are counted and logged at
DEBUG only.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from fastapi import Request

from shared.errors import TooManyRequests
from shared.metrics import SIGNINS
from shared.settings import Settings

log = logging.getLogger("touchline.signin")

MAX_DELAY_SECONDS = 60.0
_PREFIX = re.compile(r"^tl_([A-Za-z0-9]{1,16})_")


class _Signed(Protocol):
    @property
    def key_id(self) -> int: ...


T = TypeVar("T", bound=_Signed)


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class SignInThrottle:
    def __init__(self, *, failures_before_delay: int, failures_before_refusal: int, window_seconds: float, max_tracked: int):
        self.delay_after = failures_before_delay
        self.refuse_after = failures_before_refusal
        self.window = window_seconds
        self.max_tracked = max_tracked
        self._counts: OrderedDict[tuple[str, str], _Count] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInThrottle:
        return cls(
            failures_before_delay=settings.signin_failures_before_delay,
            failures_before_refusal=settings.signin_failures_before_refusal,
            window_seconds=settings.signin_throttle_window_seconds,
            max_tracked=settings.signin_throttle_max_tracked,
        )

    def wait(self, address: str, prefix: str, now: datetime) -> int:
        """Whole seconds before ``address`` may try a key with ``prefix`` again (0: now)."""
        t = now.timestamp()
        with self._lock:
            c = self._counts.get((address, prefix))
            blocked = c.blocked_until if c else 0.0
        return math.ceil(blocked - t) if blocked > t else 0

    def failed(self, address: str, prefix: str, now: datetime) -> int:
        """Count a failure; the failures so far from this address for this key prefix."""
        t = now.timestamp()
        with self._lock:
            c = self._counts.pop((address, prefix), None)
            if c is None or t - c.last > self.window:  # a refusal ends a window after the last failure too
                c = _Count()
            c.failures += 1
            c.last = t
            if c.failures >= self.refuse_after:
                c.blocked_until = t + self.window
            elif c.failures > self.delay_after:
                c.blocked_until = t + min(2.0 ** (c.failures - self.delay_after - 1), MAX_DELAY_SECONDS, self.window)
            self._counts[(address, prefix)] = c  # most recently failed last
            while len(self._counts) > self.max_tracked:
                self._counts.popitem(last=False)
            return c.failures

    def __len__(self) -> int:
        return len(self._counts)


def key_prefix(presented: str) -> str:
    """The part of a presented key that may be logged: its prefix, if it is shaped like
    one (never anything after it); ``-`` otherwise."""
    m = _PREFIX.match(presented)
    return m.group(1) if m else "-"


def check(throttle: SignInThrottle, channel: str, address: str, presented: str, now: datetime) -> None:
    """Raise 429 (with Retry-After) if this address must wait before trying this key."""
    wait = throttle.wait(address, key_prefix(presented), now)
    if wait:
        SIGNINS.labels(channel, "throttled").inc()
        raise TooManySignIns(wait)


def failed(throttle: SignInThrottle, channel: str, address: str, presented: str, reason: str, now: datetime) -> None:
    prefix = key_prefix(presented)
    failures = throttle.failed(address, prefix, now)
    SIGNINS.labels(channel, "failure").inc()
    log.warning("sign-in failed: channel=%s address=%s key_prefix=%s reason=%s failures=%d", channel, address, prefix, reason, failures)


def succeeded(channel: str, address: str, presented: str, key_id: int, *, quiet: bool = False) -> None:
    SIGNINS.labels(channel, "success").inc()
    log.log(
        logging.DEBUG if quiet else logging.INFO,
        "sign-in: channel=%s address=%s key_prefix=%s key_id=%d",
        channel,
        address,
        key_prefix(presented),
        key_id,
    )


def guarded(
    throttle: SignInThrottle, channel: str, address: str, presented: str, now: datetime, verify: Callable[[], T | None]
) -> T | None:
    """``verify()`` under the throttle: refused (429) while this address waits, its
    failure counted and logged, its success counted. The API's bearer check uses this."""
    check(throttle, channel, address, presented, now)
    result = verify()
    if result is None:
        failed(throttle, channel, address, presented, "unknown, wrong or revoked key", now)
    else:
        succeeded(channel, address, presented, result.key_id, quiet=True)
    return result


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def guard_api(request: Request, presented: str, verify: Callable[[], T | None]) -> T | None:
    """:func:`guarded` for a bearer key on an API request (the app's throttle and clock)."""
    ctx = request.app.state.ctx  # shared.api.context_of, which imports this module
    return guarded(ctx.signin_throttle, "api", client_address(request), presented, ctx.clock.now(), verify)


class TooManySignIns(TooManyRequests):
    code = "too_many_sign_ins"

    def __init__(self, retry_after: int):
        super().__init__(
            f"too many failed sign-ins from your address; try again in {retry_after} s "
            "(each failure is logged; other keys, and this key from other addresses, are not affected)"
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
