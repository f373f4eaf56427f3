"""Delivery channels. Each raises :class:`DeliveryError` saying whether a failure is
transient (retry with backoff) or permanent (fail now), and whether the address
bounced (suppress it)."""
from __future__ import annotations


class DeliveryError(Exception):
    def __init__(self, detail: str, *, transient: bool, bounce: bool = False, code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.transient = transient
        self.bounce = bounce
        self.code = code
