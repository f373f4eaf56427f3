"""Pydantic shapes of the health API. Model bodies are validated by the rule language's
health parser (services/rules/language/health.py), not by these models, so every problem
comes back with a JSON pointer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MODEL_EXAMPLE = {
    "name": "Account health",
    "labels": {"healthy": 70, "watch": 40},
    "components": [
        {
            "id": "login_recency",
            "name": "Days since anyone logged in",
            "measure": {"metric": "days_since", "event": "login"},
            "weight": 30,
            "bands": [{"below": 3, "points": 100}, {"below": 8, "points": 70}, {"below": 15, "points": 30}, {"points": 0}],
        },
        {
            "id": "seat_use",
            "name": "Active users against seats",
            "measure": {"metric": "seat_utilisation", "window": "28d"},
            "weight": 20,
            "linear": {"from": {"value": 10, "points": 0}, "to": {"value": 80, "points": 100}},
            "missing_points": 50,
        },
    ],
}
MODEL_BODY = {"requestBody": {"content": {"application/json": {"example": MODEL_EXAMPLE}}}}


class HealthModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    definition: dict[str, Any] = Field(description="the model in canonical form")
    created_at: datetime
    created_by: str


class HealthModelSaved(HealthModelOut):
    changed: bool = Field(description="false when the body equals the current version (no new version)")


class HealthModelPage(BaseModel):
    items: list[HealthModelOut]
    next_cursor: str | None = None


class HealthValidateOut(BaseModel):
    valid: bool = True
    model: dict[str, Any] = Field(description="the model in canonical form (what would be stored)")


class HealthAuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    actor: str
    action: str
    version: int | None
    details: dict[str, Any]


class HealthAuditPage(BaseModel):
    items: list[HealthAuditOut]
    next_cursor: str | None = None


class HealthScoreOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    day: date
    score: float | None = Field(description="0 to 100, the weighted mean of the components with points; null if none has")
    label: str | None = Field(description="healthy, watch or at_risk")
    change: dict[str, float | None] = Field(description='{"7d": .., "30d": ..}: points since the score 7 and 30 days before')
    model_version: int
    components: list[dict[str, Any]] = Field(description="each component's measure, value, band, points and weight")
    scored_at: datetime

    @classmethod
    def of(cls, row: Any) -> HealthScoreOut:
        """From a stored row or the dict scoring answers (the change's two columns as one field)."""
        get = row.get if isinstance(row, dict) else (lambda k: getattr(row, k))
        return cls(
            account_id=get("account_id"),
            day=get("day"),
            score=get("score"),
            label=get("label"),
            change={"7d": get("change_7d"), "30d": get("change_30d")},
            model_version=get("model_version"),
            components=get("components"),
            scored_at=get("scored_at"),
        )


class HealthPoint(BaseModel):
    day: date
    score: float | None
    label: str | None


class AccountHealthOut(BaseModel):
    account_id: str
    current: HealthScoreOut | None = Field(description="the latest score (null: never scored)")
    history: list[HealthPoint] = Field(description="one score per day, newest first")


class HealthPage(BaseModel):
    day: date | None = Field(description="the day listed: the latest scored day")
    items: list[HealthScoreOut]
    next_cursor: str | None = None
