"""The web console under ``/console``: server-rendered pages over the same services and
repositories as the API. :func:`mount` wires it into the one FastAPI app: its pages,
its static files, its security headers and HTML error pages for console paths."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console.views import (
    accounts,
    auth,
    broadcasts,
    deadletters,
    engagements,
    health,
    keys,
    library,
    lists,
    measured,
    overview,
    playbook_edit,
    playbooks,
    roster,
    rules,
    search,
    segments,
    templates,
)
from services.console.web import HERE, SECURITY_HEADERS, ConsoleForbidden, SignInRequired, error_page
from shared.errors import TouchlineError

PREFIX = "/console"
ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def build_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for module in (
        auth,
        overview,
        accounts,
        search,
        health,
        rules,
        segments,
        playbook_edit,
        playbooks,
        templates,
        library,
        broadcasts,
        measured,
        engagements,
        roster,
        deadletters,
        keys,
        lists,
    ):
        router.include_router(module.router)
    return router


def _is_console(request: Request) -> bool:
    return request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/")


def _api_handler(app: FastAPI, exc_type: type[Exception], default: ExceptionHandler | None = None) -> ExceptionHandler:
    """The handler the API installed for ``exc_type``: console paths get pages, the rest keep it."""
    handler = app.exception_handlers.get(exc_type, default)
    if handler is None:
        raise RuntimeError(f"mount the console after the API's handler for {exc_type.__name__} is installed")
    return handler


async def _answer(handler: ExceptionHandler, request: Request, exc: Exception) -> Response:
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response


class ConsoleHeaders:
    """ASGI middleware: the console's security headers on every console response (a
    header the view set itself wins; static files keep their own caching). Pure ASGI,
    not ``@app.middleware("http")``, which would wrap every request of the API, console
    or not, in a task group and a memory stream on the event loop."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS.items():
                    if not (k == "Cache-Control" and static):
                        headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    app.include_router(build_router())
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"), name="console-static")

    app.add_middleware(ConsoleHeaders)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/sign-in?{urlencode({'next': target})}", status_code=303)

    @app.exception_handler(ConsoleForbidden)
    async def _forbidden(request: Request, exc: ConsoleForbidden) -> HTMLResponse:
        return error_page(request, 403, "Not allowed", exc.message)

    json_domain_error = _api_handler(app, TouchlineError)
    json_validation_error = _api_handler(app, RequestValidationError)
    json_http_error = _api_handler(app, StarletteHTTPException, http_exception_handler)

    @app.exception_handler(TouchlineError)
    async def _domain_error(request: Request, exc: TouchlineError) -> Response:
        if _is_console(request):
            titles = {404: "Not found", 403: "Not allowed", 409: "Conflict", 422: "Not valid"}
            return error_page(request, exc.status_code, titles.get(exc.status_code, "Error"), exc.detail)
        return await _answer(json_domain_error, request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        if _is_console(request):
            detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
            return error_page(request, 422, "Not valid", detail)
        return await _answer(json_validation_error, request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_console(request) and exc.status_code in (404, 405):
            return error_page(
                request,
                exc.status_code,
                "Not found" if exc.status_code == 404 else "Not allowed",
                "There is no such page in the console." if exc.status_code == 404 else "Wrong method.",
            )
        return await _answer(json_http_error, request, exc)  # the API's {error, detail} shape

    @app.get(PREFIX, include_in_schema=False)
    def _console_root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)
