"""No route blocks the event loop: a route or dependency that gets a database session is
a plain ``def`` (FastAPI runs it in the thread pool). An ``async def`` that calls the
synchronous session runs SQLite's ``BEGIN IMMEDIATE`` (which waits up to the busy
timeout for the write lock) on the event loop, and every request stops with it,
/healthz included (issue 18, finding 1)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.wiring.app import create_app
from shared.api import get_read_session, get_session
from shared.settings import Settings

SESSION_DEPENDENCIES = {get_session, get_read_session}


def _is_async(call) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def _tree(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _tree(sub)


def _uses_session(dependant: Dependant) -> bool:
    return any(d.call in SESSION_DEPENDENCIES for d in _tree(dependant))


def _api_routes(app) -> Iterator:
    """Every API route with its dependency tree (``path``, ``methods``, ``dependant``),
    included routers walked too (FastAPI keeps those as one entry in ``app.routes``)."""
    for route in app.routes:
        if hasattr(route, "effective_route_contexts"):  # an included APIRouter
            yield from route.effective_route_contexts()
        elif isinstance(route, APIRoute):
            yield route


def _name(call) -> str:
    return f"{getattr(call, '__module__', '?')}.{getattr(call, '__qualname__', call)}"


def test_no_async_route_or_dependency_gets_a_database_session(tmp_path):
    app = create_app(Settings(env="test", var_dir=tmp_path))
    routes = list(_api_routes(app))
    assert len(routes) > 50  # the API's and the console's routes are all here
    offenders = set()
    for route in routes:
        top = route.dependant
        if _is_async(top.call) and _uses_session(top):
            offenders.add(f"{sorted(route.methods)} {route.path}: {_name(top.call)} is async def and depends on a session")
        for node in list(_tree(top))[1:]:
            # An async dependency may sit above a sync one that holds the session (the
            # console's read_form over optional_viewer); it must never get the session itself.
            if _is_async(node.call) and any(d.call in SESSION_DEPENDENCIES for d in node.dependencies):
                offenders.add(f"{sorted(route.methods)} {route.path}: dependency {_name(node.call)} is async def and gets a session")
    assert not offenders, "make these plain def (read a body in an async dependency such as shared.api.request_body):\n" + "\n".join(
        sorted(offenders)
    )
