"""``GET /v1/dev/mail``: what the embedded SMTP sink has received (development only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from services.outreach.devmail.sink import read_mailbox
from shared.api import SettingsDep
from shared.auth import Principal, require
from shared.errors import AUTH_ERRORS, NotFound, responses
from shared.settings import Settings

router = APIRouter(tags=["development"])


@router.get(
    "/v1/dev/mail",
    response_model=None,
    responses={**AUTH_ERRORS, **responses(NotFound)},
    summary="Messages kept by the embedded mail sink, newest first (only when TOUCHLINE_SMTP_URL is empty)",
)
def list_dev_mail(
    to: str | None = Query(None, description="only messages whose To contains this"),
    limit: int = Query(50, ge=1, le=1000),
    settings: Settings = SettingsDep,
    _p: Principal = require("ops"),
) -> dict[str, Any]:
    if not settings.embedded_mail_sink:
        raise NotFound("the embedded mail sink is off: TOUCHLINE_SMTP_URL points at a real relay")
    items = read_mailbox(settings.mail_dir, limit, to)
    return {"items": items, "count": len(items)}
