"""Domain errors carry their HTTP status and a machine-readable code. One handler
turns them into ``{"error": code, "detail": ...}``; routes declare them in OpenAPI."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorBody(BaseModel):
    error: str
    detail: Any = None


class TouchlineError(Exception):
    status_code = 400
    code = "bad_request"
    headers: dict[str, str] | None = None  # sent with the answer (e.g. Retry-After)

    def __init__(self, detail: Any = None, *, code: str | None = None, status_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code


class Unauthorized(TouchlineError):
    status_code = 401
    code = "unauthorized"


class Forbidden(TouchlineError):
    status_code = 403
    code = "forbidden"


class NotFound(TouchlineError):
    status_code = 404
    code = "not_found"


class Conflict(TouchlineError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(TouchlineError):
    status_code = 413
    code = "payload_too_large"


class Unprocessable(TouchlineError):
    status_code = 422
    code = "validation_error"


class TooManyRequests(TouchlineError):
    status_code = 429
    code = "too_many_requests"


class Unavailable(TouchlineError):
    status_code = 503
    code = "unavailable"


def json_pointer(parts: Any) -> str:
    """An RFC 6901 pointer to ``parts`` (keys and indexes; ``""`` is the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def pointer_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as ``{"pointer", "message"}`` (RFC 6901 pointers), the shape of
    every definition's 422 (rules, health models, segments, playbooks, resources). A
    message that starts with a pointer of its own (``/steps/0/goal: ...``, from a
    validator that checks a nested part) gives it as the pointer."""
    out = []
    for e in exc.errors():
        where = json_pointer(e.get("loc", ()))
        message = str(e.get("msg", "")).removeprefix("Value error, ")
        if message.startswith("/") and ": " in message:
            where, message = message.split(": ", 1)
        out.append({"pointer": where, "message": message})
    return out


def responses(*errors: type[TouchlineError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route that can raise these errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        out[err.status_code] = {"model": ErrorBody, "description": err.code}
    return out


AUTH_ERRORS = responses(Unauthorized, Forbidden)

# Errors the framework raises before a route runs (unknown path, wrong method, a body
# that is not JSON), answered in the same shape as ours.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TouchlineError)
    async def _touchline_error(_request: Request, exc: TouchlineError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
        headers.update(exc.headers or {})
        return JSONResponse(status_code=exc.status_code, content={"error": exc.code, "detail": exc.detail}, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "There was an error parsing the body" (e.g. bytes that are not
            # UTF-8): the payload is unusable, which this API answers with 422.
            return JSONResponse(
                status_code=422, content={"error": "invalid_json", "detail": f"the request body is not valid JSON: {exc.detail}"}
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            status_code=exc.status_code, content={"error": code, "detail": exc.detail}, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = request_problems(exc.errors(), exc.body)
        code = "invalid_json" if any(e["type"] == "json_invalid" for e in detail) else "validation_error"
        return JSONResponse(status_code=422, content={"error": code, "detail": detail})


_NO_BODY = object()


def request_problems(errors: Any, body: Any) -> list[dict[str, Any]]:
    """:func:`request_problem` for each error, with the body the errors are about. A field
    typed as a union (``str | SkipJsonSchema[None]``: optional but never null) fails once
    per member, each with the member's tag in its loc (``["body", "name", "str"]`` and
    ``[..., "none"]``); the pointer leaves the tags out, and a member ``none`` that
    failed beside another at the same place or inside it is left out (null is refused
    on purpose)."""
    found = [_problem(e, body) for e in errors]
    problems = [p for p, _tags in found]

    def beside(p: dict[str, Any]) -> bool:  # another member failed at its place or inside it
        return any(q is not p and q["in"] == p["in"] and (q["pointer"] + "/").startswith(p["pointer"] + "/") for q in problems)

    return [p for p, tags in found if not (tags == ["none"] and beside(p))]


def request_problem(error: Any, body: Any = _NO_BODY) -> dict[str, Any]:
    """One problem (see :func:`_problem`); given the body, its pointer leaves union tags out."""
    return _problem(error, body)[0]


def _path_in(body: Any, parts: list[Any], missing: bool) -> tuple[list[Any], list[str]]:
    """The steps of ``parts`` that are a path into ``body`` and the union tags among them:
    a step names a key of the object (or an index of the array) it is taken in, or is
    the key a ``missing`` error names last; anything else is a member's tag."""
    node, path, tags = body, [], []
    for i, p in enumerate(parts):
        if isinstance(node, dict) and isinstance(p, str) and p in node:
            node = node[p]
        elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
            node = node[p]
        elif missing and i == len(parts) - 1:
            pass
        else:
            tags.append(str(p))
            continue
        path.append(p)
    return path, tags


def _problem(error: Any, body: Any) -> tuple[dict[str, Any], list[str]]:
    """One of FastAPI's request validation errors in the shape of every 422's problems:
    ``pointer`` (RFC 6901, into the part of the request named by ``in``: ``body``,
    ``query``, ``path``, ``header`` or ``cookie``) and ``message``; FastAPI's own
    ``loc``, ``msg`` and ``type`` stay beside them for clients that read those."""
    loc = list(error.get("loc", ()))
    where, parts = (str(loc[0]), loc[1:]) if loc and loc[0] in ("body", "query", "path", "header", "cookie") else ("body", loc)
    tags: list[str] = []
    if where == "body" and body is not _NO_BODY and error.get("type") != "json_invalid":
        parts, tags = _path_in(body, parts, error.get("type") == "missing")
    pointer = json_pointer(parts)
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":  # its loc holds a character offset, not a path: the whole body is at fault
        reason = (error.get("ctx") or {}).get("error") or message
        at = f" at character {parts[0]}" if parts else ""
        pointer, message = "", f"the body is not valid JSON: {reason}{at}"
    return {"in": where, "pointer": pointer, "message": message, "loc": loc, "msg": error.get("msg"), "type": error.get("type")}, tags
