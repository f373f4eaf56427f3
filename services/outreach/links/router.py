"""``GET /r/{token}``: the tracked-link redirect (service.py says what it records and
where it leads). Public, outside ``/v1``: the sealed token is the credential. A plain
``def`` (the producer may block briefly) with no database session at all."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from services.ingest import interface as ingest
from services.outreach.links.service import PUBLISHING, follow, log
from shared.api import context_of
from shared.metrics import LINK_CLICKS

router = APIRouter(tags=["public"])

_HEADERS = {
    "Cache-Control": "no-store",
    # The target must not learn the token from the Referer (it could replay the click).
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


@router.get(
    "/r/{token}",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "to where the link leads; a forged or damaged link to the product's public page"}},
    summary="A tracked link in a customer message: records a link_clicked event, then redirects",
)
def follow_link(token: str, request: Request) -> RedirectResponse:
    ctx = context_of(request)

    def publish(event: dict[str, Any]) -> None:
        ingest.publish_event(ctx.producer, ctx.settings, event, now=ctx.clock.now(), on_error=_lost)

    followed = follow(ctx.settings, token, now=ctx.clock.now(), publish=publish)
    LINK_CLICKS.labels(followed.outcome).inc()
    return RedirectResponse(followed.location, status_code=302, headers=_HEADERS)


def _lost(exc: BaseException) -> None:
    PUBLISHING.trip()
    LINK_CLICKS.labels("unpublished").inc()
    log.warning("a link click was not delivered to the broker (%s: %s)", type(exc).__name__, exc)
