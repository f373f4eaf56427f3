"""The API's HTTP server: uvicorn with limits, so a slow or greedy client cannot hold
what everyone else needs.

uvicorn bounds the idle time between requests on a connection (``timeout_keep_alive``)
but not the time a client takes to send a request's head, nor the number of open
connections; its own ``limit_concurrency`` counts open connections too and answers a
plain-text 503 to every request past it, /healthz included. So:

- :class:`GuardedH11Protocol` closes a connection whose request head (request line and
  headers) has not fully arrived ``TOUCHLINE_API_HEADER_TIMEOUT_SECONDS`` after it
  opened or after its first byte (on a kept-alive connection), with a 408; and past
  ``TOUCHLINE_API_MAX_CONNECTIONS`` open connections it answers a new one 503
  ``overloaded`` and closes it, before the process runs out of file descriptors.
- The request body has a deadline of its own (``TOUCHLINE_API_BODY_TIMEOUT_SECONDS``,
  shared.limits.RequestLimits); requests in flight are capped by
  shared.overload.ConcurrencyCap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.metrics import HTTP_OVERLOADED
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
    connections. Subclassed per server by :func:`protocol_for`, which sets the limits."""

    header_timeout_seconds: float = 10.0
    max_connections: int = 1000
    _too_many: bytes = b""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            HTTP_OVERLOADED.labels("connections").inc()
            log.warning("refused a connection: %d open, the limit is TOUCHLINE_API_MAX_CONNECTIONS", self.max_connections)
            transport.write(self._too_many)
            transport.close()
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:  # still waiting for a complete request head
            self._arm_head_deadline()
        else:
            self._disarm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

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
