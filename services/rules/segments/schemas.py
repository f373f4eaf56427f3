"""Pydantic shapes of the segments API. Segment bodies are validated by the rule
language's parser (not by these models), so every problem comes back with a JSON pointer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SEGMENT_EXAMPLE = {
    "id": "fintech-smb",
    "name": "Fintech SMB",
    "description": "Small fintech customers past onboarding.",
    "audience": {"segment": ["smb"], "lifecycle_stage": ["active", "at_risk"]},
    "condition": {"all": [{"field": "account.traits.industry", "op": "==", "value": "fintech"}]},
}
SEGMENT_BODY = {"requestBody": {"content": {"application/json": {"example": SEGMENT_EXAMPLE}}}}


class SegmentOut(BaseModel):
    id: str
    name: str
    current_version: int
    size: int = Field(description="its members now")
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    deleted_at: datetime | None = None
    changed: bool | None = Field(None, description="on PUT: whether the definition differed (a new version)")
    definition: dict[str, Any] = Field(description="the current version's definition, in canonical form")


class SegmentPage(BaseModel):
    items: list[SegmentOut]
    next_cursor: str | None = None


class SegmentVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    segment_id: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    created_by: str


class SegmentVersionPage(BaseModel):
    items: list[SegmentVersionOut]
    next_cursor: str | None = None


class SegmentValidateOut(BaseModel):
    valid: bool = True
    segment: dict[str, Any] = Field(description="the segment in canonical form (what would be stored)")


class SegmentPreviewOut(BaseModel):
    size: int = Field(description="how many accounts the definition would hold now (the tick's own matching over every account)")
    segment: dict[str, Any] = Field(description="the segment in canonical form (what would be stored)")


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    entered_at: datetime
    version: int = Field(description="the segment's version when the account entered")


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None = None


class SizeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    day: date
    size: int
    measured_at: datetime


class SizesOut(BaseModel):
    segment_id: str
    start: date
    end: date
    items: list[SizeOut] = Field(description="one per UTC day the tick measured, oldest first")
