"""What every router needs from the running app: settings, the clock, a session per
request (the request owns the transaction) and a Kafka producer, with a queue in front
of it for a route answered on the event loop (:class:`SendQueue`)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
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
from shared.errors import Forbidden
from shared.kafka.clients import make_producer
from shared.settings import Settings
from shared.signin import SignInThrottle

# HTML a browser shows outside the console (the API docs, the unsubscribe pages): never
# inside another site's frame, where a hidden button could be clicked for the visitor.
# (Console pages carry these and more: services/console/web.py, SECURITY_HEADERS.)
NO_FRAMING = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}


OnError = Callable[[BaseException], None]


class SendQueue:
    """Records handed to the Kafka producer by a thread of its own, for a route answered
    on the event loop: there the route must never wait, and the producer can (creating
    it, or its first record to a topic, waits for the broker's metadata up to
    ``max_block_ms``: every request of the process would wait with it). :meth:`put` only
    queues; the thread sends, and a record the producer fails (at once or later) goes to
    the record's ``on_error``. Bounded: with ``limit`` records waiting (the broker or
    the producer is not keeping up), :meth:`put` raises :class:`queue.Full`.
    :meth:`close` sends what is queued, then stops the thread."""

    def __init__(self, producer: Callable[[], KafkaProducer], limit: int):
        self._producer = producer
        self.limit = limit
        self._queue: queue.SimpleQueue[tuple[str, bytes, bytes, OnError] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, topic: str, key: bytes, value: bytes, on_error: OnError) -> None:
        if self._queue.qsize() >= self.limit:
            raise queue.Full(f"{self.limit} records are waiting for the Kafka producer already")
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="send-queue", daemon=True)
                    self._thread.start()
        self._queue.put((topic, key, value, on_error))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            topic, key, value, on_error = item
            try:
                self._producer().send(topic, key=key, value=value).add_errback(on_error)
            except Exception as exc:  # the producer could not be made or refused the record
                on_error(exc)

    def close(self, timeout: float) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)


# Records a SendQueue holds at most: at 500 clicks a second, 20 s of a producer that is stuck.
SEND_QUEUE_LIMIT = 10_000
# How long the API's producer holds a record to batch it with the next. Its records are
# clicks, which nothing waits for, and /v1/events's batches, which it flushes (a flush
# sends at once, whatever the linger). At 500 clicks a second the shared default (5 ms)
# made batches of two or three, each a wake-up and a produce request of the producer's
# sender thread: 0.75-0.83 ms of the API's CPU a click against 0.52-0.68 at 50 ms
# (docs/performance.md, "The redirect on the event loop").
API_PRODUCER_LINGER_MS = 50

# (session, csm_id, account_ids) -> those of account_ids with an engagement of that CSM
# (account_ids None: every account with one).
EngagedBy = Callable[[Session, str, Iterable[str] | None], set[str]]


def _engaged_by_nobody(_session: Session, _csm_id: str, _account_ids: Iterable[str] | None) -> set[str]:
    return set()


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    clock: Clock
    # Which accounts a CSM key may read (health, docs/health.md): outreach's
    # accounts_engaged_by, set by the composition root (services/wiring/app.py), since the
    # services below outreach cannot import it. Unset, a CSM key sees no account.
    engaged_by: EngagedBy = _engaged_by_nobody
    _producer: KafkaProducer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    signin_throttle: SignInThrottle = field(init=False)
    send_queue: SendQueue = field(init=False)

    def __post_init__(self) -> None:
        self.signin_throttle = SignInThrottle.from_settings(self.settings)
        self.send_queue = SendQueue(lambda: self.producer, SEND_QUEUE_LIMIT)

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, linger_ms=API_PRODUCER_LINGER_MS)
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
        self.send_queue.close(timeout=5)  # its records into the producer, which sends them as it closes
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None


def context_of(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def visible_accounts(request: Request, session: Session, role: str, csm_id: str | None, account_ids: Iterable[str]) -> set[str]:
    """Of ``account_ids``, the accounts the caller (a key's ``role`` and ``csm_id``) may
    read: all for ops and admin, for a CSM key those of its own engagements (open or
    closed), as the console decides it (services/console/views/health.py)."""
    ids = set(account_ids)
    if role != "csm":
        return ids
    if not csm_id or not ids:
        return set()
    return context_of(request).engaged_by(session, csm_id, ids)


def visible_account_filter(request: Request, session: Session, role: str, csm_id: str | None) -> set[str] | None:
    """The accounts a list may show the caller: None (all) for ops and admin, for a CSM key
    every account of its own engagements, open or closed (:func:`visible_accounts` for a
    list of all of them), to filter the list's query by rather than its pages."""
    if role != "csm":
        return None
    return context_of(request).engaged_by(session, csm_id, None) if csm_id else set()


def require_visible_account(request: Request, session: Session, role: str, csm_id: str | None, account_id: str) -> None:
    """403 for a CSM key on an account none of its engagements is on (as for another CSM's
    engagement: services/outreach/engagements/service.py, ``visible_to``)."""
    if account_id not in visible_accounts(request, session, role, csm_id, [account_id]):
        raise Forbidden(f"account {account_id!r} has no engagement of yours; a CSM reads only their engagements' accounts")


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
