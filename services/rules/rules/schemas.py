"""Pydantic shapes of the rules API. Rule bodies are validated by the rule language
parser (not by these models) so every problem comes back with a JSON pointer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RULE_EXAMPLE = {
    "id": "no-login-14d",
    "name": "No login in 14 days",
    "description": "Nobody at the account has logged in for two weeks.",
    "kind": "churn_risk",
    "severity": "high",
    "trigger": {"schedule": {"every": "1h"}},
    "audience": {"lifecycle_stage": ["active"]},
    "condition": {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 14}]},
    "cooldown": "14d",
    "enabled": False,
}
RULE_BODY = {"requestBody": {"content": {"application/json": {"example": RULE_EXAMPLE}}}}


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    severity: str
    trigger_type: str
    trigger_events: list[str]
    enabled: bool
    current_version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    deleted_at: datetime | None = None
    definition: dict[str, Any] = Field(description="the current version's definition, in canonical form")


class RulePage(BaseModel):
    items: list[RuleOut]
    next_cursor: str | None = None


class RuleVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rule_id: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    created_by: str


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str
    version: int | None
    details: dict[str, Any]


class RuleVersionPage(BaseModel):
    items: list[RuleVersionOut]
    next_cursor: str | None = None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None = None


class ValidateOut(BaseModel):
    valid: bool = True
    rule: dict[str, Any] = Field(description="the rule in canonical form (what would be stored)")


class DryRunOut(BaseModel):
    rule_id: str
    version: int | None
    account_id: str
    now: datetime
    would_fire: bool
    summary: str
    reasons: list[str] = Field(default_factory=list, description="why it would not fire, one entry each (empty when it would)")
    audience: dict[str, Any]
    trigger: dict[str, Any]
    condition: dict[str, Any]
    cooldown: dict[str, Any]
    evidence: dict[str, Any] | None = None


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: str | None = Field(None, description="a saved rule (its current version), or give `rule`")
    rule: dict[str, Any] | None = Field(None, description="an unsaved or edited rule definition")
    start: date = Field(description="first UTC day replayed")
    end: date = Field(description="last UTC day replayed (inclusive)")
    compare_with_current: bool = Field(
        False, description="with `rule` for a saved id: also replay the current version and answer the difference"
    )
    samples: int = Field(5, ge=0, le=50)
