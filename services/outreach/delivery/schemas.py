"""Response shapes of the message outbox API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AliasPath, BaseModel, ConfigDict, Field


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    enrollment_id: str | None
    playbook_id: str | None
    step_id: str
    account_id: str
    user_id: str | None
    channel: str
    audience: str
    recipient: str
    template_id: str | None
    resource_id: str | None = Field(None, description="the content library resource a recommend step chose")
    broadcast_id: str | None = Field(None, description="the broadcast that sent it (docs/broadcasts.md)")
    recommendation: dict[str, Any] | None = Field(
        None,
        validation_alias=AliasPath("payload", "recommendation"),
        description="a recommend step's reasons: the resource, its score, the matched tags, the features not used yet, "
        "what else was considered (docs/content.md)",
    )
    subject: str
    state: str
    skip_reason: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    read_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_cursor: str | None = None


class InAppMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    user_id: str | None
    playbook_id: str | None
    subject: str
    html_body: str
    text_body: str
    created_at: datetime
    read_at: datetime | None


class InAppPage(BaseModel):
    items: list[InAppMessageOut]
    next_cursor: str | None = None
    unread: int = Field(description="unread messages on this page")


class Detail(BaseModel):
    detail: Any = None
