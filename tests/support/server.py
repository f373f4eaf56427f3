"""A real uvicorn server on 127.0.0.1 for tests that need what the ASGI transport hides:
the event loop, the thread pool and the connection pool of a serving process, shared by
many clients at once, and the server's own limits (services/wiring/server.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from services.wiring.server import make_server
from shared.broker import free_port
from shared.settings import Settings


@contextmanager
def serving(app: FastAPI, settings: Settings) -> Iterator[str]:
    """Serve ``app`` as `touchline api` does (the limits in ``settings``) on a free port,
    in a thread of its own (its own event loop); yields the base URL and stops the
    server, bounded, on the way out."""
    port = free_port()
    server = make_server(app, settings, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
