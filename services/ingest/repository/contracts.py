"""Contract outcomes (renewed, churned, contracted, expanded): stored once per event id,
listed per account (newest effective date first) and over a period for every account
(validation of the health model), and the account's contract state that follows from
them. Writes only flush; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from services.ingest.models import Account, ContractOutcome
from services.ingest.repository.chunks import chunks, in_
from services.ingest.snapshots import ContractOutcomeInfo
from shared.db import insert_new

_outcomes = ContractOutcome.__table__
_COLUMNS = tuple(getattr(ContractOutcome, f) for f in ContractOutcomeInfo.__dataclass_fields__)


def insert_contract_outcomes(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert outcome rows (every column of ``contract_outcomes``); returns the event ids
    that were new (a re-sent one is stored once)."""
    return insert_new(session, _outcomes, rows, ["event_id"]) if rows else set()


def noted_outcomes(session: Session, account_id: str) -> list[ContractOutcome]:
    """The account's outcomes that carry a note (free text: erasure scrubs it), to update."""
    return list(session.scalars(select(ContractOutcome).where(ContractOutcome.account_id == account_id, ContractOutcome.note.is_not(None))))


def contract_outcome(session: Session, event_id: str) -> ContractOutcomeInfo | None:
    row = session.execute(select(*_COLUMNS).where(ContractOutcome.event_id == event_id)).first()
    return ContractOutcomeInfo(**row._asdict()) if row is not None else None


def contract_outcomes(
    session: Session, account_id: str, *, after: tuple[date, str] | None = None, limit: int = 50
) -> list[ContractOutcomeInfo]:
    """One account's contract outcomes, newest effective date first (then event id, so
    the order is total), the page after ``after`` (the last item's date and event id)."""
    q = select(*_COLUMNS).where(ContractOutcome.account_id == account_id)
    if after is not None:
        day, event_id = after
        q = q.where(
            or_(ContractOutcome.effective_date < day, and_(ContractOutcome.effective_date == day, ContractOutcome.event_id < event_id))
        )
    q = q.order_by(ContractOutcome.effective_date.desc(), ContractOutcome.event_id.desc()).limit(limit)
    return [ContractOutcomeInfo(**r._asdict()) for r in session.execute(q)]


def contract_outcomes_between(session: Session, start: date, end: date, accounts: list[str] | None = None) -> list[ContractOutcomeInfo]:
    """Every contract outcome effective from ``start`` to ``end`` (inclusive), of
    ``accounts`` or of all, oldest first."""
    out: list[ContractOutcomeInfo] = []
    for part in chunks(sorted(set(accounts)) if accounts is not None else None):
        q = select(*_COLUMNS).where(
            ContractOutcome.effective_date >= start, ContractOutcome.effective_date <= end, in_(ContractOutcome.account_id, part)
        )
        out.extend(ContractOutcomeInfo(**r._asdict()) for r in session.execute(q))
    return sorted(out, key=lambda o: (o.effective_date, o.occurred_at, o.event_id))


def contract_state_of(kind: str) -> str:
    """The contract state an outcome leaves an account in."""
    return "churned" if kind == "churned" else "active"


def refresh_contract_state(session: Session, account_ids: Iterable[str], today: date) -> None:
    """Set each account's contract state from its latest contract outcome in effect on
    ``today`` (by effective date, then the time it was reported, then event id); one
    dated later takes effect on its date (:func:`accounts_with_outcomes_due`)."""
    ids = sorted(set(account_ids))
    latest: dict[str, tuple[Any, ...] | None] = dict.fromkeys(ids)
    for part in chunks(ids):
        q = select(
            ContractOutcome.account_id,
            ContractOutcome.effective_date,
            ContractOutcome.occurred_at,
            ContractOutcome.event_id,
            ContractOutcome.kind,
        ).where(in_(ContractOutcome.account_id, part), ContractOutcome.effective_date <= today)
        for found in session.execute(q):
            key = tuple(found)
            held = latest[found.account_id]
            if held is None or key[1:4] > held[1:4]:
                latest[found.account_id] = key
    for account_id, row in sorted(latest.items()):
        state, since = (None, None) if row is None else (contract_state_of(row[4]), row[1])
        session.execute(update(Account).where(Account.id == account_id).values(contract_state=state, contract_state_since=since))


def accounts_with_outcomes_due(session: Session, today: date) -> list[str]:
    """Accounts with a contract outcome in effect by ``today`` that their contract state
    does not reflect yet: one that was dated in the future when it arrived."""
    q = (
        select(ContractOutcome.account_id)
        .join(Account, Account.id == ContractOutcome.account_id)
        .where(
            ContractOutcome.effective_date <= today,
            or_(Account.contract_state_since.is_(None), ContractOutcome.effective_date > Account.contract_state_since),
        )
        .distinct()
    )
    return sorted(session.scalars(q))
