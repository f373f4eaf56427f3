"""A broadcast's definition, its API shapes, its preview and its report."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.outreach.playbooks.steps.definitions import SendStep
from shared.errors import Unprocessable, pointer_errors
from shared.limits import UtcDatetime

STATUSES = ("scheduled", "sending", "sent", "cancelled")
CODE = "broadcast_invalid"


class BroadcastIn(BaseModel):
    """What CS Ops say: which template, to which segment's contacts, when, with what holdout."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="what CS Ops see, e.g. 'Webinar: reporting 101 (March)'")
    template: str = Field(min_length=1, max_length=128, description="a customer template's id")
    segment_id: str = Field(min_length=1, max_length=64, description="the named segment whose members receive it (docs/segments.md)")
    channel: Literal["email", "inapp"] = "email"
    to: list[str] = Field(
        default_factory=lambda: ["all_users"],
        min_length=1,
        max_length=10,
        description="which contacts of each member account, as a send step's recipients: roles (champion, admin, power_user, "
        "buyer, member), all_users (the default) or active_users:<N>d",
    )
    send_at: UtcDatetime | None = Field(None, description="when to send (RFC 3339 with a zone); absent: now")
    holdout_percent: float = Field(0, ge=0, le=100, description="share of the member accounts that receive nothing (measured)")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("a broadcast needs a name")
        return name.strip()

    @field_validator("to")
    @classmethod
    def _to(cls, to: list[str]) -> list[str]:
        if "owner" in to:
            raise ValueError("a broadcast goes to the customer's contacts; the account owner is an internal address")
        return SendStep._recipients(to)  # active_users' window is bounded there (MAX_ACTIVE_DAYS), for playbooks too


def parse_broadcast(obj: Any) -> BroadcastIn:
    """Validate a broadcast definition; a 422 ``broadcast_invalid`` with a pointer per problem."""
    if not isinstance(obj, dict):
        raise Unprocessable([{"pointer": "", "message": "a broadcast is an object"}], code=CODE)
    try:
        return BroadcastIn.model_validate(obj)
    except ValidationError as exc:
        raise Unprocessable(pointer_errors(exc), code=CODE) from None


class Progress(BaseModel):
    accounts_done: int = Field(description="member accounts sent so far (held out ones included)")
    chunks_done: int
    cursor: str | None = Field(None, description="the last account sent: the next chunk starts after it")


class BroadcastOut(BaseModel):
    id: str
    name: str
    template: str
    segment_id: str
    channel: str
    to: list[str]
    holdout_percent: float
    send_at: datetime
    status: str = Field(description="scheduled, sending, sent or cancelled")
    progress: Progress
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancelled_at: datetime | None
    cancelled_by: str | None


class BroadcastPage(BaseModel):
    items: list[BroadcastOut]
    next_cursor: str | None = None


class Group(BaseModel):
    accounts: int
    messages: int


class Preview(BaseModel):
    """What a broadcast would do if it were sent now to the segment's members now: the
    same decisions as the send (holdout, contact gate, template), nothing stored."""

    segment_id: str
    at: datetime = Field(description="the time the gate was asked for (send_at, or now if it is past)")
    accounts: int = Field(description="member accounts of the segment now")
    contacts: int = Field(description="their contacts the broadcast's 'to' picks (one message each)")
    held_out: Group = Field(description="accounts in the holdout and the messages they would not receive")
    would_send: int = Field(description="messages that would be queued (or, in-app, delivered)")
    deferred: int = Field(description="of those, emails deferred to the end of the contact's quiet hours")
    skipped: dict[str, int] = Field(description="messages the contact gate (or the template) would skip, by reason")


class Report(BaseModel):
    """What a broadcast did: every figure is the count of its message list
    (GET /v1/messages?broadcast_id=...&state=...&skip_reason=...)."""

    broadcast_id: str
    status: str
    targeted: Group = Field(description="accounts reached and messages written (every state)")
    held_out: Group = Field(description="held-out accounts and their messages (state skipped, reason held_out)")
    queued: int = Field(description="messages waiting for the sender (deferred past quiet hours included)")
    sending: int = Field(description="messages a sender has claimed and is sending now")
    sent: int
    failed: int
    uncertain: int
    skipped: dict[str, int] = Field(description="messages skipped, by reason (held_out included)")
    clicked: int = Field(description="distinct contacts who clicked a tracked link of its messages (link_clicked events)")
