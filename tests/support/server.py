"""A real uvicorn server on 127.0.0.1 for tests that need what the ASGI transport hides:
the event loop, the thread pool and the connection pool of a serving process, shared by
many clients at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from shared.broker import free_port


@contextmanager
def serving(app: FastAPI, **config) -> Iterator[str]:
    """Serve ``app`` on a free port in a thread of its own (its own event loop); yields
    the base URL and stops the server, bounded, on the way out."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, **config))
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
