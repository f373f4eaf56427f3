"""A team at once (issue 18): many concurrent clients, a share of them hostile, against a
real uvicorn on 127.0.0.1 (the ASGI transport shares the test's event loop and has no
thread pool, so it cannot show a blocked loop or an exhausted pool). Bounded in count
and time; no timing assertions beyond generous deadlines that a stall would blow
through by many times."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import Counter

import httpx
import pytest

from services.wiring.app import create_app
from shared.db import make_engine, make_session_factory
from tests.support.helpers import auth
from tests.support.outreach import simple_playbook
from tests.support.server import serving

HEALTHZ_DEADLINE = 3.0  # seconds; a blocked event loop would hold /healthz for BUSY_TIMEOUT at least
BUSY_TIMEOUT = 8.0


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


async def _watch_healthz(base: str, stop: asyncio.Event) -> list[float]:
    """Poll /healthz until ``stop``; each answer must come within HEALTHZ_DEADLINE."""
    answered: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=HEALTHZ_DEADLINE) as client:
        while not stop.is_set():
            t = asyncio.get_running_loop().time()
            r = await client.get("/healthz")  # a ReadTimeout here fails the test: the loop was blocked
            assert r.status_code == 200
            answered.append(asyncio.get_running_loop().time() - t)
            await asyncio.sleep(0.1)
    return answered


async def test_a_held_sqlite_write_lock_blocks_no_request_and_not_healthz(db_kind, settings, keys):
    """Finding 1: the console's POST views ran the synchronous session inside ``async def``,
    so a sign-in waiting for SQLite's write lock held the event loop and every request
    (health checks included) for the busy timeout, one sign-in after another. Now 50
    requests (wrong-key sign-ins, playbook PUTs, API and console reads) run while another
    connection holds the write lock: /healthz answers throughout, reads answer 200, writes
    end with 503 database_unavailable once the busy timeout passes, and nothing hangs."""
    if db_kind != "sqlite":
        pytest.skip("the write lock held for the whole database is SQLite's")
    app_settings = settings.model_copy(update={"sqlite_busy_timeout_seconds": BUSY_TIMEOUT})
    engine = make_engine(app_settings)
    app = create_app(app_settings, session_factory=make_session_factory(engine))
    holder = sqlite3.connect(app_settings.sqlalchemy_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    try:
        with serving(app) as base:
            async with httpx.AsyncClient(base_url=base, timeout=60) as ops:
                # a signed-in ops console user, before the lock is taken
                page = await ops.get("/console/sign-in")
                r = await ops.post("/console/sign-in", data={"csrf": _csrf(page.text), "api_key": keys["ops"]})
                assert r.status_code == 303
                holder.execute("BEGIN IMMEDIATE")  # the write lock, held from here on

                async def wrong_sign_in() -> int:
                    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
                        page = await c.get("/console/sign-in")
                        r = await c.post("/console/sign-in", data={"csrf": _csrf(page.text), "api_key": "tl_deadbeef_" + "x" * 43})
                        return r.status_code

                async def put_playbook(i: int) -> int:
                    r = await ops.put(f"/v1/playbooks/load-{i}", json=simple_playbook(), headers=auth(keys["ops"]))
                    return r.status_code

                async def get(path: str, key: str | None = None) -> int:
                    return (await ops.get(path, headers=auth(key) if key else {})).status_code

                stop = asyncio.Event()
                watcher = asyncio.create_task(_watch_healthz(base, stop))
                work = (
                    [wrong_sign_in() for _ in range(15)]
                    + [put_playbook(i) for i in range(10)]
                    + [get("/v1/rules", keys["ops"]) for _ in range(10)]
                    + [get("/v1/accounts", keys["csm"]) for _ in range(5)]
                    + [get("/console/rules") for _ in range(5)]
                    + [get("/console/accounts") for _ in range(5)]
                )
                statuses = Counter(await asyncio.wait_for(asyncio.gather(*work), timeout=240))
                stop.set()
                polls = await watcher
    finally:
        holder.close()
        engine.dispose()
    assert sum(statuses.values()) == 50
    # reads never wait for the write lock; writes wait the busy timeout, then 503
    assert statuses[200] >= 25, statuses
    assert set(statuses) <= {200, 401, 503}, statuses
    assert statuses[503] >= 1, statuses  # the lock really was held while they ran
    assert polls, "/healthz was never polled"
