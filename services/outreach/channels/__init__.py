"""Delivery channels. Each raises :class:`DeliveryError` saying whether a failure is
transient (retry with backoff) or permanent (fail now), and whether the address
bounced (suppress it), and whether the outcome is *uncertain*: the peer may have the
message although it never said so (a timeout or a dropped connection after the final
dot of SMTP DATA)."""

from __future__ import annotations


class DeliveryError(Exception):
    def __init__(self, detail: str, *, transient: bool, bounce: bool = False, code: int | None = None, uncertain: bool = False):
        super().__init__(detail)
        self.uncertain = uncertain
        self.detail = detail
        self.transient = transient
        self.bounce = bounce
        self.code = code
