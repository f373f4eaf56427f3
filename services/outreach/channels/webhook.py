"""Webhooks over httpx: generic JSON or Slack-compatible, signed, with timeouts.

Signature header (Stripe-style, so receivers can reject replays):
``X-Touchline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``.
2xx is delivered; 408, 425, 429, 5xx, timeouts and connection errors are transient;
any other status is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx

from services.outreach.channels import DeliveryError
from shared.settings import Settings

SIGNATURE_HEADER = "X-Touchline-Signature"
TRANSIENT_STATUS = {408, 425, 429}


def webhook_secret(settings: Settings) -> bytes:
    if settings.webhook_secret:
        return settings.webhook_secret.encode()
    return hmac.new(settings.secret.encode(), b"touchline/webhook/v1", hashlib.sha256).digest()


def sign(secret: bytes, body: bytes, at: datetime) -> str:
    ts = str(int(at.timestamp()))
    mac = hmac.new(secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(secret: bytes, body: bytes, header: str) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if "t" not in fields or "v1" not in fields:
        return False
    mac = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, fields["v1"])


def body_for(payload: dict[str, Any], fmt: str, text: str) -> dict[str, Any]:
    if fmt == "slack":
        return {"text": text or payload.get("summary", "")}
    return payload


class WebhookSender:
    def __init__(self, settings: Settings, client: httpx.Client | None = None):
        self.secret = webhook_secret(settings)
        self.client = client or httpx.Client(timeout=httpx.Timeout(settings.webhook_timeout_seconds), follow_redirects=False)

    def send(self, *, url: str, body: dict[str, Any], key: str, at: datetime) -> None:
        raw = json.dumps(body, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, raw, at),
            "Idempotency-Key": key,
            "User-Agent": "Touchline-Webhook/1",
        }
        try:
            response = self.client.post(url, content=raw, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"webhook timed out: {type(exc).__name__}", transient=True) from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook failed: {type(exc).__name__}: {exc}", transient=True) from None
        if 200 <= response.status_code < 300:
            return
        transient = response.status_code >= 500 or response.status_code in TRANSIENT_STATUS
        raise DeliveryError(
            f"webhook answered {response.status_code}: {response.text[:200]}", transient=transient, code=response.status_code
        )

    def close(self) -> None:
        self.client.close()
