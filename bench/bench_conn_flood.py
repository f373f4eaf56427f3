"""Connection-flood check (docs/performance.md, "API under load"): the API's
connection limit against idle connections (opened, nothing sent), as a hostile review
found them: at TOUCHLINE_API_MAX_CONNECTIONS each new connection closes the one longest
waiting for a request head (services/wiring/server.py), so /healthz must still answer
200, and the cost per flood connection must not grow with the limit.

    .venv/bin/python -m bench.bench_conn_flood
    BENCH_LIMITS=100,1000,4000 BENCH_FLOOD=5000 .venv/bin/python -m bench.bench_conn_flood

For each limit: a real uvicorn (tests/support/server.py, on SQLite in a temporary
directory) in a thread of this process; the limit + 10 idle connections, then /healthz;
then BENCH_FLOOD more idle connections, one at a time (the client closing its oldest past
limit + 500, so its own file descriptors stay bounded), then /healthz again. The CPU is
this process's (client and server share it), per flood connection, with the load average.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path

import httpx

from services.wiring.app import create_app
from shared.settings import Settings
from tests.support.server import serving


async def _flood(base: str, limit: int, flood: int) -> None:
    port = int(base.rsplit(":", 1)[1])
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limit + 10)]
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        first = (await client.get("/healthz")).status_code
    cpu = time.process_time()
    for _ in range(flood):
        conns.append(await asyncio.open_connection("127.0.0.1", port))
        if len(conns) > limit + 500:
            conns.pop(0)[1].close()
    cpu = time.process_time() - cpu
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        after = (await client.get("/healthz")).status_code
    for _, writer in conns:
        writer.close()
    load = os.getloadavg()
    print(
        f"limit {limit}: /healthz with {limit + 10} idle open: {first}; after {flood} more: {after}; "
        f"{cpu / flood * 1e6:.0f} us CPU per flood connection (client + server); load {load[0]:.2f}"
    )


def main() -> None:
    logging.getLogger("touchline.api").setLevel(logging.ERROR)  # one warning per eviction otherwise
    limits = [int(n) for n in os.environ.get("BENCH_LIMITS", "100,1000").split(",")]
    flood = int(os.environ.get("BENCH_FLOOD", "5000"))
    for limit in limits:
        with tempfile.TemporaryDirectory() as var:
            settings = Settings(env="test", var_dir=Path(var), api_header_timeout_seconds=30, api_max_connections=limit)
            with serving(create_app(settings), settings) as base:
                asyncio.run(_flood(base, limit, flood))


if __name__ == "__main__":
    main()
