from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class SignalOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    signal_id: str
    rule_id: str
    rule_version: int
    rule_name: str
    account_id: str
    user_id: str | None
    kind: str
    severity: str
    fired_at: datetime
    trigger: str
    event_id: str | None
    evidence: dict[str, Any]


class SignalPage(BaseModel):
    items: list[SignalOut]
    next_cursor: str | None = None
