"""The one FastAPI app: every service's router, health, readiness, metrics, and the
API's own documentation (Swagger UI and ReDoc, served from the installed
``fastapi-offline`` package's assets: no CDN, so /docs works offline)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import fastapi_offline
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.api import NO_FRAMING, AppContext, install_database_error_handler
from shared.auth import Principal, require
from shared.broker import port_open
from shared.clock import Clock, SystemClock
from shared.db import make_engine, make_probe_engine, make_session_factory
from shared.errors import AUTH_ERRORS, ErrorBody, install_error_handlers
from shared.events import Event
from shared.limits import RequestLimits
from shared.metrics import DEPENDENCY_UP, render_metrics
from shared.overload import ConcurrencyCap, install_overload_handler
from shared.settings import Settings, get_settings

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
# ReDoc's bundle draws its "API docs by Redocly" logo from a CDN: an offline machine (or a
# strict network) shows a console error for it. Served with the logo as an inline SVG.
_REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_INLINE_SVG = b"data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E"


@functools.cache
def _redoc_offline() -> bytes:
    return (DOCS_ASSETS / "redoc.standalone.js").read_bytes().replace(_REDOC_CDN_LOGO, _INLINE_SVG)


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
# /readyz answers within about this long whatever the load: each check has it as a
# deadline, on a connection and threads of its own.
PROBE_SECONDS = 2.0

API_DESCRIPTION = """Touchline turns product usage into customer-success action.

Authenticate every call with `Authorization: Bearer <key>`. Keys have a role
(`ingest`, `ops`, `csm`, `admin`); create one with `touchline keys create`.
Errors answer `{"error": "<code>", "detail": ...}`.
"""


def routers() -> list[APIRouter]:
    """Every API router, as each service publishes them (``routers()`` of its interface)."""
    from services.ingest import interface as ingest
    from services.jobs import load_kinds
    from services.outreach import interface as outreach
    from services.rules import interface as rules
    from shared.jobs.router import router as jobs_router

    load_kinds()  # the jobs API shows each role the kinds it may run
    return [*outreach.first_routers(), *ingest.routers(), *rules.routers(), *outreach.routers(), jobs_router]


def create_app(
    settings: Settings | None = None, clock: Clock | None = None, session_factory: sessionmaker[Session] | None = None
) -> FastAPI:
    from services.outreach import interface as outreach

    settings = settings or get_settings()
    engine = session_factory.kw["bind"] if session_factory is not None else make_engine(settings)
    ctx = AppContext(
        settings=settings,
        engine=engine,
        session_factory=session_factory or make_session_factory(engine),
        clock=clock or SystemClock(),
        engaged_by=outreach.accounts_engaged_by,  # what a CSM key may read of health (shared/api.py)
    )

    # Readiness checks run here, not in the thread pool the routes share, and on a
    # connection of their own: a busy API still answers /readyz.
    probe_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
    probe_engine = make_probe_engine(engine, PROBE_SECONDS)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The threads that run plain-def routes and dependencies (anyio's default limiter).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield
        ctx.close()
        probe_threads.shutdown(wait=False, cancel_futures=True)
        probe_engine.dispose()

    app = FastAPI(title="Touchline", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    install_error_handlers(app)
    install_database_error_handler(app)
    install_overload_handler(app)
    app.add_middleware(
        RequestLimits,
        max_bytes=settings.max_request_bytes,
        max_depth=settings.max_json_depth,
        body_timeout=settings.api_body_timeout_seconds,
    )

    @app.get(f"{DOCS_ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    def redoc_js() -> Response:
        return Response(_redoc_offline(), media_type="text/javascript")

    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="Touchline API",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )
        page.headers.update(NO_FRAMING)
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title="Touchline API",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(NO_FRAMING)
        return page

    for r in routers():
        app.include_router(r)
    from services.console.interface import mount as mount_console

    mount_console(app)
    # Added last, so outermost: a request over the cap costs no body read, thread or connection.
    app.add_middleware(ConcurrencyCap, limit=settings.api_max_concurrent_requests)

    # async on purpose, and nothing in it blocks: it answers on the event loop, so it never
    # waits for a thread-pool slot behind ordinary requests.
    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers", response_model=None)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: the database and the broker are reachable",
        responses={503: {"description": "a dependency is down; the body says which"}},
    )
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}

        def db_ok() -> str:
            try:
                with probe_engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return "ok"
            except Exception as exc:  # report, never raise: this is a probe
                return f"error: {type(exc).__name__}: {exc}"[:300]

        def broker_ok() -> str:
            for server in settings.bootstrap_servers.split(","):
                host, _, port = server.strip().rpartition(":")
                if port_open(host or "127.0.0.1", int(port), timeout=1.0):
                    return "ok"
            return f"error: no bootstrap server reachable at {settings.bootstrap_servers}"

        async def probe(check: Callable[[], str]) -> str:
            try:
                return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(probe_threads, check), PROBE_SECONDS)
            except TimeoutError:
                return f"error: no answer within {PROBE_SECONDS:g} s"

        checks["database"], checks["broker"] = await asyncio.gather(probe(db_ok), probe(broker_ok))
        for name, result in checks.items():
            DEPENDENCY_UP.labels(name).set(1 if result == "ok" else 0)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(status_code=200 if ok else 503, content={"status": "ok" if ok else "unavailable", "checks": checks})

    if not settings.metrics_port:
        # With TOUCHLINE_METRICS_PORT set, `touchline api` serves metrics on that port
        # instead (services/wiring/cli.py) and the API port has no /metrics at all.
        @app.get(
            "/metrics",
            tags=["operations"],
            summary="Prometheus metrics (admin key)",
            response_class=Response,
            responses={
                200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text exposition format"},
                **AUTH_ERRORS,
            },
        )
        def metrics(_p: Principal = require("admin")) -> Response:
            body, content_type = render_metrics()
            return Response(body, media_type=content_type)

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        event_schema = Event.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(event_schema.pop("$defs", {}))
        components["Event"] = event_schema
        components["ErrorBody"] = ErrorBody.model_json_schema()
        _honest_errors(schema)
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "A Touchline API key (tl_...)"}
        }
        schema["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    return app


def _honest_errors(schema: dict[str, Any]) -> None:
    """Every error this API answers, in the document: FastAPI's own 422 schema becomes
    ours; every operation that takes a body lists the 408 (body too slow), 413 (body
    too large) and 422 (not JSON, nested too deep) that the RequestLimits middleware
    can answer; and every operation the 503 of an overloaded API (shared.overload)."""
    components = schema["components"]["schemas"]
    for path, ops in schema["paths"].items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if "422" in responses:
                responses["422"]["content"] = _ERROR
            if path != "/healthz":  # answered on the event loop, never refused
                responses.setdefault(
                    "503", {"description": "overloaded (retry after Retry-After) or database_unavailable", "content": _ERROR}
                )
            if "requestBody" in op:
                responses.setdefault("408", {"description": "body_timeout", "content": _ERROR})
                responses.setdefault("413", {"description": "payload_too_large", "content": _ERROR})
                responses.setdefault("422", {"description": "validation_error", "content": _ERROR})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
