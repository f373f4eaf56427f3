"""The ``cs.signals`` contract: what the rules service publishes and outreach consumes.

JSON, UTF-8, key = account_id. ``signal_id`` is deterministic (the same firing always
has the same id), so consumers deduplicate on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SEVERITIES = ("info", "low", "medium", "high", "critical")


class Signal(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "signal_id": "5d0c3f0e-8f0e-5b1e-9a53-1d2f3c4b5a69",
                    "rule_id": "no-login-14d",
                    "rule_version": 3,
                    "rule_name": "No login in 14 days",
                    "account_id": "acme",
                    "user_id": None,
                    "kind": "churn_risk",
                    "severity": "high",
                    "fired_at": "2026-11-23T09:15:00Z",
                    "evidence": {"days_since:login": {"value": 15.2, "op": ">=", "threshold": 14}},
                }
            ]
        },
    )

    signal_id: str = Field(min_length=1, max_length=128)
    rule_id: str = Field(min_length=1, max_length=128)
    rule_version: int = Field(ge=1)
    rule_name: str = ""
    account_id: str = Field(min_length=1, max_length=128)
    user_id: str | None = None
    kind: str = Field(min_length=1, max_length=64, description="churn_risk, expansion, lifecycle or a custom name")
    severity: Literal[SEVERITIES] = "medium"  # type: ignore[valid-type]
    fired_at: datetime
    evidence: dict[str, Any] = Field(default_factory=dict)
