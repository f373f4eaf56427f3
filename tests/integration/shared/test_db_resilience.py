"""Workers never die of a database error, and no API request can stall them.

- A long read request holds a transaction that takes no write lock (SQLite: BEGIN, not
  BEGIN IMMEDIATE), so a worker writes while it runs.
- The periodic workers (timers, sender) and the consumer workers roll back, back off,
  count and log "database is locked" (SQLite) or a lost connection (PostgreSQL), and
  carry on when the database is back.
- The API answers 503 database_unavailable while the database is unreachable.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from starlette.requests import Request

from services.ingest.events.worker import IngestWorker
from services.ingest.models import Account, RawEvent
from services.outreach.delivery.worker import SenderWorker
from services.outreach.engagements.worker import EngagementWorker
from services.outreach.timers import TimerWorker
from shared.api import get_session
from shared.db import make_engine, make_session_factory
from tests.support.helpers import T0, auth, drain, publish, track, unreachable_database, wait_for


def retries(worker: str) -> float:
    return sum(
        REGISTRY.get_sample_value("touchline_db_retries_total", {"worker": worker, "kind": k}) or 0
        for k in ("locked", "connection", "serialization")
    )


def count(factory, model) -> int:
    with factory() as s:
        return s.scalar(select(func.count()).select_from(model))


def _request(app, method: str) -> Request:
    return Request({"type": "http", "method": method, "path": "/", "headers": [], "query_string": b"", "app": app})


def test_a_long_read_request_does_not_stall_a_writing_worker(topics, api, session_factory, clock):
    """The API's GET transaction stays open (a long read) while the ingest worker writes a
    batch; with a 0.5 s busy timeout the worker would meet "database is locked" if the
    read held the write lock."""
    fast = topics.model_copy(update={"sqlite_busy_timeout_seconds": 0.5})
    engine = make_engine(fast)
    worker = IngestWorker(fast, make_session_factory(engine), clock)
    worker.db_retry_seconds = 0
    unit = get_session(_request(api.app, "GET"))
    try:
        session = next(unit)
        assert session.scalar(select(func.count()).select_from(Account)) == 0  # the read has begun
        publish(topics, [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"r{i}") for i in range(5)])
        before = retries("ingest")
        drain(worker, lambda: count(session_factory, RawEvent) == 5)
        assert retries("ingest") == before  # the worker never waited on the reader
    finally:
        unit.close()
        worker.close()
        engine.dispose()


def _outage(db_kind, settings, tmp_path):
    """Something that makes the database fail for a while: SQLite locked by another
    writer, PostgreSQL unreachable. Returns (factory to use, release)."""
    if db_kind == "sqlite":
        path = settings.sqlalchemy_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(path, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        engine = make_engine(settings.model_copy(update={"sqlite_busy_timeout_seconds": 0.05}))

        released: list[bool] = []

        def release():  # idempotent: the test's finally calls it again
            if not released:
                released.append(True)
                holder.execute("ROLLBACK")
                holder.close()

        return make_session_factory(engine), engine, release
    engine = unreachable_database(settings, db_kind, tmp_path)
    return make_session_factory(engine), engine, lambda: None


@pytest.mark.parametrize("kind", ["timers", "sender", "engagements", "ingest"])
def test_workers_survive_database_outages_and_carry_on(kind, topics, db_kind, session_factory, clock, tmp_path, caplog):
    settings = topics.model_copy(update={"retry_max_seconds": 0.05, "outreach_tick_seconds": 0.01, "outreach_send_poll_seconds": 0.01})
    down, down_engine, release = _outage(db_kind, settings, tmp_path)
    if kind == "timers":
        worker = TimerWorker(settings, down, clock)
    elif kind == "sender":
        worker = SenderWorker(settings, down, clock, worker_id="resilience")
    elif kind == "engagements":
        worker = EngagementWorker(settings, down, clock)
    else:
        worker = IngestWorker(settings, down, clock)
        worker.db_retry_seconds = 0.01
        publish(topics, [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"o{i}") for i in range(5)])
    name = worker.name
    before = retries(name)
    crashed: list[BaseException] = []

    def run():
        try:
            worker.run()
        except BaseException as exc:  # the test fails on it
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        drain_until(lambda: retries(name) >= before + 3 or crashed, "three retries")
        assert not crashed and thread.is_alive()  # it retried; it did not exit
        if kind == "ingest":  # its housekeeping waits a minute of its clock after a failure, not the next poll
            pruning = [r for r in caplog.records if r.getMessage().startswith("ingest: retention pruning failed")]
            assert len(pruning) == 1, len(pruning)
        worker.session_factory = session_factory  # the database is back
        release()
        if kind == "ingest":
            drain_until(lambda: count(session_factory, RawEvent) == 5, "the batch to be applied once")
        else:
            drain_until(lambda: worker.db_backoff.failures == 0, "a successful tick")
        assert not crashed and thread.is_alive()
    finally:
        release()  # never leave the shared SQLite file locked for the tests after a failure
        worker.stop_event.set()
        thread.join(30)
        down_engine.dispose()
    assert not thread.is_alive() and not crashed


def drain_until(predicate, what: str, timeout: float = 120.0) -> None:
    wait_for(predicate, timeout, what, interval=0.02)  # polling a worker thread, not standing in for a clock


async def test_the_api_answers_503_while_the_database_is_unreachable(settings, clock, db_kind, tmp_path):
    import httpx

    from services.wiring.app import create_app

    engine = unreachable_database(settings, db_kind, tmp_path)
    app = create_app(settings, clock, make_session_factory(engine))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://touchline.test") as client:
        r = await client.get("/v1/accounts", headers=auth("tl_abc_def"))
    app.state.ctx.close()
    engine.dispose()
    assert r.status_code == 503, r.text
    assert r.json() == {"error": "database_unavailable", "detail": "the database is unreachable; retry shortly"}
