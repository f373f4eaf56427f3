"""The API's HTTP server: uvicorn with limits, so a slow or greedy client cannot hold
what everyone else needs.

uvicorn bounds the idle time between requests on a connection (``timeout_keep_alive``)
but not the time a client takes to send a request's head, nor the number of open
connections; its own ``limit_concurrency`` counts open connections too and answers a
plain-text 503 to every request past it, /healthz included. So:

- :class:`GuardedH11Protocol` closes a connection whose request head (request line and
  headers) has not fully arrived ``TOUCHLINE_API_HEADER_TIMEOUT_SECONDS`` after it
  opened or after its first byte (on a kept-alive connection), with a 408.
- Past ``TOUCHLINE_API_MAX_CONNECTIONS`` open connections, before the process runs out
  of file descriptors, it makes room as nginx does when it runs out of connections: it
  closes the connection that has waited longest for a request head (kept alive between
  requests: just closed, as the keep-alive timeout would; nothing or part of a head
  sent: the 408), so a flood of idle connections cannot keep the probes and real
  clients out (a liveness probe refused three times restarts the process and drops
  every request in flight). Only when every open connection is mid-request is the new
  one answered 503 ``overloaded`` and closed. The connections waiting for a head are
  kept in an ordered dict shared by the server's protocols (as uvicorn shares its
  ``connections`` set), so each connection event costs O(1), however many are open.
- The request body has a deadline of its own (``TOUCHLINE_API_BODY_TIMEOUT_SECONDS``,
  shared.limits.RequestLimits); requests in flight are capped by
  shared.overload.ConcurrencyCap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.metrics import HTTP_CONNECTIONS_EVICTED, HTTP_OVERLOADED
from shared.overload import RETRY_AFTER_SECONDS, overloaded_body
from shared.settings import Settings

log = logging.getLogger("touchline.api")


def _raw_response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}", "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_HEADER_TIMEOUT = _raw_response(
    "408 Request Timeout",
    json.dumps(
        {
            "error": "request_timeout",
            "detail": "the request line and headers did not arrive in time (TOUCHLINE_API_HEADER_TIMEOUT_SECONDS)",
        }
    ).encode(),
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request head and a cap on open
    connections. Subclassed per server by :func:`protocol_for`, which sets the limits and
    gives the server its own ``_waiting_for_head``."""

    header_timeout_seconds: float = 10.0
    max_connections: int = 1000
    _too_many: bytes = b""
    # The server's connections waiting for a request head, longest-waiting first: h11's
    # their_state IDLE and no response in flight (opened and nothing sent, part of a head
    # sent, or kept alive between requests). An OrderedDict, not a dict: taking the
    # oldest of a dict whose front keeps being deleted scans the deleted slots (O(n) per
    # eviction under a flood); OrderedDict.popitem(last=False) is O(1).
    _waiting_for_head: ClassVar[OrderedDict[GuardedH11Protocol, None]] = OrderedDict()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections and not self._make_room():
            HTTP_OVERLOADED.labels("connections").inc()
            log.warning("refused a connection: %d open, each mid-request; the limit is TOUCHLINE_API_MAX_CONNECTIONS", self.max_connections)
            transport.write(self._too_many)
            transport.close()
            return
        self._arm_head_deadline()
        self._note_waiting()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.transport.is_closing():
            if self.conn.their_state is h11.IDLE:  # still waiting for a complete request head
                self._arm_head_deadline()
            else:
                self._disarm_head_deadline()
        self._note_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._note_waiting()  # kept alive: waiting for the next head from now (pipelined: already in)

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting_for_head.pop(self, None)
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _note_waiting(self) -> None:
        """Join the waiting connections (at the end, if not already there), or leave them."""
        waiting = (
            self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()
        )
        if waiting:
            self._waiting_for_head.setdefault(self, None)
        else:
            self._waiting_for_head.pop(self, None)

    def _make_room(self) -> bool:
        """Close the connection longest waiting for a request head; False if none is."""
        while self._waiting_for_head:
            oldest, _ = self._waiting_for_head.popitem(last=False)
            if oldest.transport.is_closing():  # already on its way out (its connection_lost is pending)
                continue
            if oldest.cycle is not None and not oldest.conn.trailing_data[0]:
                # Kept alive between requests, nothing of the next one sent: close it as the
                # keep-alive timeout would (h11 lets us close an idle connection; an unasked
                # 408 could be read as the answer to the client's next request).
                HTTP_CONNECTIONS_EVICTED.labels("keep_alive").inc()
                oldest.timeout_keep_alive_handler()
            else:
                HTTP_CONNECTIONS_EVICTED.labels("head").inc()
                oldest._close_waiting_for_head()
            log.warning(
                "closed the connection longest waiting for a request head to make room: %d open, the limit is "
                "TOUCHLINE_API_MAX_CONNECTIONS",
                self.max_connections,
            )
            return True
        return False

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout_seconds, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if getattr(self, "_head_deadline", None) is not None:
            self._head_deadline.cancel()  # type: ignore[union-attr]
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._close_waiting_for_head()

    def _close_waiting_for_head(self) -> None:
        # Nothing of a request has been handed to the app: answer and close.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_HEADER_TIMEOUT)
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    too_many = _raw_response(
        "503 Service Unavailable",
        json.dumps(
            overloaded_body(
                f"the API has its limit of {settings.api_max_connections} connections open (TOUCHLINE_API_MAX_CONNECTIONS); "
                f"retry after {RETRY_AFTER_SECONDS} s"
            )
        ).encode(),
        f"retry-after: {RETRY_AFTER_SECONDS}",
    )
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout_seconds": settings.api_header_timeout_seconds,
            "max_connections": settings.api_max_connections,
            "_too_many": too_many,
            "_waiting_for_head": OrderedDict(),
        },
    )


def raise_file_limit(settings: Settings) -> None:
    """Each open connection is a file descriptor: lift the soft limit to the hard one,
    and say so if even that leaves too little room for TOUCHLINE_API_MAX_CONNECTIONS
    (the API would meet "Too many open files" before its own limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = settings.api_max_connections + 256  # the database pool, the broker, logs, files
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "the file-descriptor limit (%d) is below TOUCHLINE_API_MAX_CONNECTIONS + 256 (%d): raise it (ulimit -n) "
            "or lower TOUCHLINE_API_MAX_CONNECTIONS",
            soft,
            want,
        )


def make_server(app: FastAPI, settings: Settings, host: str, port: int, **config: Any) -> uvicorn.Server:
    """The uvicorn server for ``app`` with the limits in ``settings``."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=protocol_for(settings),
            timeout_keep_alive=settings.api_keep_alive_seconds,
            backlog=settings.api_backlog,
            log_config=None,
            access_log=False,
            **config,
        )
    )
