"""POST and GET /v1/accounts/{id}/contract-outcomes: CS Ops record a contract outcome
(renewed, churned, contracted, expanded) by hand, as a CRM would send a ``contract``
event, and list an account's (docs/events.md, "contract")."""

from __future__ import annotations

import uuid
from datetime import date

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from services.ingest.repository import accounts as accounts_repo
from services.ingest.repository import contracts as repo
from services.ingest.service import record_contract_outcomes
from services.ingest.snapshots import ContractOutcomeInfo
from shared.api import ClockDep, PathId, SessionDep
from shared.auth import Principal, require
from shared.clock import Clock
from shared.errors import AUTH_ERRORS, NotFound, Unprocessable, responses
from shared.events import ContractOutcomeIn, Id, ValidEvent
from shared.pagination import decode_cursor, next_cursor

router = APIRouter(tags=["accounts"])


class ContractOutcomeRecord(ContractOutcomeIn):
    """A contract outcome to record; ``event_id`` makes a retry safe (the same id is
    stored once), as it does for events."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"kind": "churned", "arr_before": 24000, "effective_date": "2027-03-01", "note": "lost to a competitor"}]
        },
    )

    event_id: Id | None = Field(None, description="optional; one is made up when absent")


class ContractOutcomeOut(BaseModel):
    event_id: str
    account_id: str
    kind: str
    arr_before: float
    arr_after: float
    effective_date: date
    note: str | None
    source: str = Field(description="event (a contract event, over Kafka or POST /v1/events) or api (recorded here)")
    recorded_by: str | None
    occurred_at: str
    received_at: str

    @classmethod
    def of(cls, o: ContractOutcomeInfo) -> ContractOutcomeOut:
        return cls(
            **{f: getattr(o, f) for f in ("event_id", "account_id", "kind", "arr_before", "arr_after", "effective_date", "note", "source")},
            recorded_by=o.recorded_by,
            occurred_at=o.occurred_at.isoformat(),
            received_at=o.received_at.isoformat(),
        )


class ContractOutcomePage(BaseModel):
    items: list[ContractOutcomeOut]
    next_cursor: str | None = Field(None, description="pass back as ?cursor= for the next (older) page; null on the last")


def _account_or_404(session: Session, account_id: str) -> None:
    if accounts_repo.account(session, account_id) is None:
        raise NotFound(f"no account {account_id!r}; accounts are created by their first event or by PUT /v1/accounts/{{id}}")


@router.post(
    "/v1/accounts/{account_id}/contract-outcomes",
    status_code=201,
    response_model=ContractOutcomeOut,
    responses={
        200: {"model": ContractOutcomeOut, "description": "an outcome with this event_id was recorded before: it is answered unchanged"},
        **AUTH_ERRORS,
        **responses(NotFound, Unprocessable),
    },
    summary="Record a contract outcome (renewed, churned, contracted, expanded) of an account",
    description='The account\'s `contract_state` follows from its latest outcome by effective date (docs/events.md, "contract").',
)
def record_contract_outcome(
    body: ContractOutcomeRecord,
    account_id: PathId,
    session: Session = SessionDep,
    clock: Clock = ClockDep,
    principal: Principal = require("ops"),
) -> JSONResponse:
    _account_or_404(session, account_id)
    now = clock.now()
    event_id = body.event_id or f"api-{uuid.uuid4()}"
    existing = repo.contract_outcome(session, event_id)
    if existing is not None and existing.account_id != account_id:
        raise Unprocessable([{"pointer": "/event_id", "message": f"event id {event_id!r} is another account's contract outcome"}])
    properties = body.model_dump(mode="json", exclude={"event_id"}, exclude_none=True)
    event = ValidEvent(event_id, account_id, None, "contract", "$contract", now, properties, {})
    new = record_contract_outcomes(session, [(event, "api", principal.actor)], now)
    session.flush()
    stored = repo.contract_outcome(session, event_id)
    assert stored is not None
    return JSONResponse(status_code=201 if new else 200, content=ContractOutcomeOut.of(stored).model_dump(mode="json"))


@router.get(
    "/v1/accounts/{account_id}/contract-outcomes",
    response_model=ContractOutcomePage,
    responses={**AUTH_ERRORS, **responses(NotFound, Unprocessable)},
    summary="An account's contract outcomes, newest effective date first, in pages",
)
def list_contract_outcomes(
    account_id: PathId,
    cursor: str | None = Query(None, description="next_cursor from the previous page"),
    limit: int = Query(50, ge=1, le=500),
    session: Session = SessionDep,
    _p: Principal = require("ops", "csm"),
) -> ContractOutcomePage:
    _account_or_404(session, account_id)
    after = decode_cursor(cursor, str, str)
    key: tuple[date, str] | None = None
    if after is not None:
        try:
            if not isinstance(after[1], str):
                raise ValueError(after)
            key = (date.fromisoformat(after[0]), after[1])
        except (TypeError, ValueError):
            raise Unprocessable([{"pointer": "/cursor", "message": "not a cursor from this API; pass next_cursor unchanged"}]) from None
    items = repo.contract_outcomes(session, account_id, after=key, limit=limit)
    return ContractOutcomePage(
        items=[ContractOutcomeOut.of(o) for o in items],
        next_cursor=next_cursor(items, limit, lambda o: (o.effective_date.isoformat(), o.event_id)),
    )
