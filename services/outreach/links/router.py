"""``GET /r/{token}``: the tracked-link redirect (service.py says what it records and
where it leads). Public, outside ``/v1``: the sealed token is the credential. No database
session at all.

**Answered on the event loop, without FastAPI's per-request machinery.** Every click of
every mail comes here, and the API's other routes are plain ``def`` run in the thread
pool. This one is an ``async def`` served by :class:`EventLoopRoute`: it takes the
token from the path and the request, and solves no dependencies (it has none), so it
neither validates parameters nor hops to the thread pool and back (that hop was the
largest part of a redirect's CPU: docs/performance.md, "The redirect on the event
loop"). Nothing in it may block: the token is opened in memory, and the click is handed
to the app's :class:`~shared.api.SendQueue`, whose thread talks to the producer (a
broker that is down never holds the reader; a queue that is full loses the click,
counted as ``unpublished``). The app's middleware still wraps it like any route: over
the concurrency cap it is a 503 ``overloaded`` (shared/overload.py), an error is a 500,
and it is in the OpenAPI document and the route-access walk of the tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from services.ingest import interface as ingest
from services.outreach.links.service import OUTCOMES, PUBLISHING, follow, log
from shared.api import context_of
from shared.metrics import LINK_CLICKS


class EventLoopRoute(APIRoute):
    """An ``async def`` endpoint called as ``endpoint(request, **path_params)`` on the event
    loop: declared and documented like any FastAPI route (its signature, ``responses=``),
    but served without solving dependencies or validating parameters (each path
    parameter arrives as the string the path matched). Only for an endpoint that takes
    nothing but its path and never blocks."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


router = APIRouter(tags=["public"], route_class=EventLoopRoute)

_HEADERS = {
    "Cache-Control": "no-store",
    # The target must not learn the token from the Referer (it could replay the click).
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}
_COUNTED = {outcome: LINK_CLICKS.labels(outcome) for outcome in OUTCOMES}


@router.get(
    "/r/{token}",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "to where the link leads; a forged or damaged link to the product's public page"}},
    summary="A tracked link in a customer message: records a link_clicked event, then redirects",
)
async def follow_link(request: Request, token: str) -> RedirectResponse:
    ctx = context_of(request)
    now = ctx.clock.now()

    def publish(event: dict[str, Any]) -> None:
        topic, key, value = ingest.encode_event(ctx.settings, event, now=now)
        ctx.send_queue.put(topic, key, value, on_error=_lost)

    followed = follow(ctx.settings, token, now=now, publish=publish)
    _COUNTED[followed.outcome].inc()
    return RedirectResponse(followed.location, status_code=302, headers=_HEADERS)


def _lost(exc: BaseException) -> None:
    PUBLISHING.trip()
    _COUNTED["unpublished"].inc()
    log.warning("a link click was not delivered to the broker (%s: %s)", type(exc).__name__, exc)
