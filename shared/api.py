"""What every router needs from the running app: settings, the clock, a session per
request (the request owns the transaction) and a Kafka producer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from kafka import KafkaProducer
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.clock import Clock
from shared.db import read_transaction, transaction, transient_db_error
from shared.kafka.clients import make_producer
from shared.settings import Settings
from shared.signin import SignInThrottle

# HTML a browser shows outside the console (the API docs, the unsubscribe pages): never
# inside another site's frame, where a hidden button could be clicked for the visitor.
# (Console pages carry these and more: services/console/web.py, SECURITY_HEADERS.)
NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    clock: Clock
    _producer: KafkaProducer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    signin_throttle: SignInThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.signin_throttle = SignInThrottle.from_settings(self.settings)

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self.settings)
            return self._producer

    def reset_producer(self) -> None:
        """Drop a producer that failed (e.g. fatal after the broker lost its state); the
        next request builds a fresh one."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:  # already broken; we only want it gone
                pass

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def context_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def session_factory_of(request: Request) -> sessionmaker[Session]:
    return context_of(request).session_factory


def get_session(request: Request) -> Iterator[Session]:
    """The request's unit of work. GET and HEAD only read: their transaction takes no
    write lock on SQLite (a long read never stalls the workers) and is READ ONLY on
    PostgreSQL; every other method writes and commits before the response is sent.
    The session is also ``request.state.db_session``: authentication uses it rather
    than a second pooled connection (shared.auth.authorize)."""
    if request.method in ("GET", "HEAD"):
        with read_transaction(session_factory_of(request)) as session:
            request.state.db_session = session
            yield session
        return
    with transaction(session_factory_of(request)) as session:
        request.state.db_session = session
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """For a POST that only reads (validate, dry-run, backtest, preview)."""
    with read_transaction(session_factory_of(request)) as session:
        request.state.db_session = session
        yield session


async def request_body(request: Request) -> bytes:
    """Dependency: the request's body. The one async step of a route that reads its
    body itself: the route stays a plain ``def``, run in the thread pool, so its
    synchronous database calls never block the event loop (docs/operations.md,
    "Under load"). The console's forms have their own (services.console.web.read_form)."""
    return await request.body()


def get_clock(request: Request) -> Clock:
    return context_of(request).clock


def get_settings_dep(request: Request) -> Settings:
    return context_of(request).settings


# scope="function": commit before the response is sent, so a 2xx means the change is durable.
SessionDep = Depends(get_session, scope="function")
ReadSessionDep = Depends(get_read_session, scope="function")
BodyDep = Depends(request_body)
ClockDep = Depends(get_clock)
SettingsDep = Depends(get_settings_dep)
# An account or user id in a URL path, bounded like the event contract's ids
# (shared/events.py, Id) and the columns that store them: longer is a 422, never a
# database error (PostgreSQL refuses a value wider than its column).
# (Annotated, not a default: FastAPI copies it per parameter, so a route may take two.)
PathId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


def install_database_error_handler(app: FastAPI) -> None:
    """A database that is down, locked or refusing a concurrent change answers 503
    with Retry-After (the client can retry); any other database error is a bug (500).
    It lives here, not in shared.errors, because it needs shared.db and the rule
    language imports shared.errors (the language touches no database code)."""

    @app.exception_handler(DBAPIError)
    async def _database_unavailable(_request: Request, exc: DBAPIError) -> JSONResponse:
        kind = transient_db_error(exc)
        if kind is None:
            raise exc  # a bug, not an outage: a 500 with the traceback in the log
        logging.getLogger("touchline.api").error("database %s: %s", kind, exc.orig)
        detail = (
            "the database is busy (locked by a long write); retry shortly"
            if kind == "locked"
            else "the database is unreachable; retry shortly"
            if kind == "connection"
            else "the database refused a concurrent change; retry"
        )
        return JSONResponse(status_code=503, content={"error": "database_unavailable", "detail": detail}, headers={"Retry-After": "5"})
