"""Bounded IN lists: a query over many accounts runs one statement per chunk of them
(or one over every account when the caller passes None)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.orm import Session

from shared.db import is_in

CHUNK = 900  # bound IN lists (SQLite's default variable limit is high, PostgreSQL's is 65535)


def in_(col: Any, accounts: list[str] | None) -> Any:
    return True if accounts is None else col.in_(accounts)


def ids_in(session: Session, col: Any, accounts: list[str] | None) -> Any:
    """:func:`in_` as one array parameter on PostgreSQL (:func:`shared.db.is_in`)."""
    return True if accounts is None else is_in(session, col, accounts)


def chunks(items: list[Any] | None) -> Iterator[list[Any] | None]:
    if items is None:
        yield None
        return
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def grouped(session: Session, build: Callable[[list[str] | None], Any], accounts: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in chunks(accounts):
        out.update({a: v for a, v in session.execute(build(part))})
    return out
