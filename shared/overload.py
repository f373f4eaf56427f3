"""Shedding load: when the API is at its limit it answers 503 ``overloaded`` with
Retry-After at once, never a queue that grows until clients time out, never a 500.

Two limits meet a request. :class:`ConcurrencyCap` counts the requests in flight (an
ASGI middleware, outermost, so a request over the cap costs no body read, no thread
and no connection). The connection pool is sized to the cap, so a request that got in
finds a connection; if the pool is exhausted anyway (its short
``TOUCHLINE_DB_POOL_TIMEOUT_SECONDS`` passes), :func:`install_overload_handler` turns
SQLAlchemy's TimeoutError into the same 503.

/healthz and /readyz bypass the cap: a load balancer must see a busy API as alive.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.metrics import HTTP_IN_FLIGHT, HTTP_OVERLOADED

RETRY_AFTER_SECONDS = 1
PROBES = frozenset({"/healthz", "/readyz"})


def is_console(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def console_busy_page(why: str) -> str:
    """What a person in the console's browser gets instead of the JSON: what happened, and
    that a form they sent was not taken (nothing ran), so they send it again."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Busy · Touchline console</title></head><body><main><h1>The console is busy</h1>"
        f"<p>{why} Reload the page in a second; a form you sent was not saved, so send it again.</p></main></body></html>"
    )


def overloaded_body(detail: str) -> dict[str, str]:
    return {"error": "overloaded", "detail": detail}


def _refusal(content_type: bytes, body: bytes) -> tuple[dict[str, object], dict[str, object]]:
    """The two ASGI messages of a 503 with Retry-After."""
    return (
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"cache-control", b"no-store"),
            ],
        },
        {"type": "http.response.body", "body": body},
    )


class ConcurrencyCap:
    """ASGI middleware: at most ``limit`` HTTP requests in flight (from the request
    line to the last byte of the answer); one more is answered 503 ``overloaded`` with
    Retry-After before anything else runs. The count is only touched on the event loop,
    so it needs no lock."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit
        self.in_flight = 0
        body = json.dumps(
            overloaded_body(
                f"the API is serving its limit of {limit} requests at once (TOUCHLINE_API_MAX_CONCURRENT_REQUESTS); "
                f"retry after {RETRY_AFTER_SECONDS} s"
            )
        ).encode()
        self._refusal = _refusal(b"application/json", body)
        # A person in the console's browser gets a page, not JSON: what happened, and that
        # a form they posted was not taken (nothing ran), so they post it again.
        self._console_refusal = _refusal(
            b"text/html; charset=utf-8", console_busy_page(f"Touchline is serving its limit of {limit} requests at once.").encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            HTTP_OVERLOADED.labels("concurrency").inc()
            for message in self._console_refusal if is_console(scope.get("path", "")) else self._refusal:
                await send(message)
            return
        self.in_flight += 1
        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            HTTP_IN_FLIGHT.dec()


def install_overload_handler(app: FastAPI) -> None:
    """The connection pool stayed exhausted for the pool timeout: 503, not 500."""

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, _exc: PoolTimeout) -> Response:
        HTTP_OVERLOADED.labels("pool").inc()
        if is_console(request.url.path):
            return HTMLResponse(
                console_busy_page("Every database connection is busy."),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
            )
        return JSONResponse(
            status_code=503,
            content=overloaded_body(
                "every database connection is busy (TOUCHLINE_DB_POOL_SIZE + TOUCHLINE_DB_MAX_OVERFLOW); "
                f"retry after {RETRY_AFTER_SECONDS} s"
            ),
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
