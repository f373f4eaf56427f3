"""Bounded IN lists: a query over many accounts runs one statement per chunk of them
(or one over every account when the caller passes None)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.orm import Session

from shared.db import is_in

CHUNK = 900  # bound IN lists (SQLite's default variable limit is high, PostgreSQL's is 65535)


class AccountRange(list[str]):
    """Account ids that are every account from the first to the last in id order (a step of
    a keyset walk over the accounts, :func:`~services.ingest.repository.accounts.account_ids_after`):
    a statement over them filters by the range (``account_id BETWEEN first AND last``), one
    statement for all of them, instead of IN lists of their ids (whose parameters psycopg
    converts one by one, and which the planner reads id by id). An account stored inside the
    range after the walk read it may be answered too; callers read the accounts they asked for."""


def in_(col: Any, accounts: list[str] | None) -> Any:
    if accounts is None:
        return True
    if isinstance(accounts, AccountRange) and accounts:
        return col.between(accounts[0], accounts[-1])
    return col.in_(accounts)


def ids_in(session: Session, col: Any, accounts: list[str] | None) -> Any:
    """:func:`in_` as one array parameter on PostgreSQL (:func:`shared.db.is_in`)."""
    if isinstance(accounts, AccountRange) and accounts:
        return col.between(accounts[0], accounts[-1])
    return True if accounts is None else is_in(session, col, accounts)


def chunks(items: list[Any] | None) -> Iterator[list[Any] | None]:
    if items is None or isinstance(items, AccountRange):
        yield items  # a range is one statement, however many accounts it holds
        return
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def grouped(session: Session, build: Callable[[list[str] | None], Any], accounts: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in chunks(accounts):
        out.update({a: v for a, v in session.execute(build(part))})
    return out
