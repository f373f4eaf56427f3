"""Keyset pagination: how each paged list of the API hands out ``next_cursor`` and reads
``?cursor=`` back.

A paged list answers ``{"items": [...], "next_cursor": ...}`` (a list may add a figure of its own,
as the in-app messages' ``unread``), with ``next_cursor`` null on the last page, and takes
``?cursor=`` back. Three kinds of cursor, each made here:

- **a key** (:func:`next_key`): the last item's key, as it is. A list ordered by its primary
  key (accounts, users, rules, templates, playbooks, CSMs, suppressions) resumes after it. A
  list ordered by a time and then the id whose repository looks the last item's row up
  (messages, in-app messages, enrolments) resumes after that row's time and id; a key that
  matches no row there starts from the first page again, it is not refused. Nothing here
  checks such a cursor: the repository compares it as given.
- **a number** (:func:`next_key`, read back by :func:`decode_number_cursor`, or by the query
  parameter's bounds for the dead letters): rule versions and audit entries, engagement
  events, jobs. One outside the column's range is a 422.
- **an encoded sort key** (:func:`next_cursor`, read back by :func:`decode_cursor`): the
  signals and the engagements, ordered by several columns (then the id) with no row lookup.
  It is the last item's sort key as an opaque URL-safe string; it is not signed: it only
  says where to resume, and a forged one shows a caller nothing its key could not list
  anyway. A cursor this module did not make is a 422, never a 500: values are bounded to
  what the database can compare (an integer column's range; a time that has a UTC value;
  null only where the sort column holds NULLs).

A list the reader sorts by a column of their choice (the console's sortable tables) is
ordered by :func:`sorted_after`: that column either way, NULLs last both ways on both
databases, then the id the same way, so the order is total and stable; it resumes after
the previous page's last row (its column value and id, which the repository looks up
from the id the page hands out, as the time-ordered lists above do).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, literal, or_
from sqlalchemy.orm import InstrumentedAttribute

from shared import b64url
from shared.errors import Unprocessable
from shared.limits import DB_INT_MAX

MAX_CURSOR_CHARS = 1000
# A number cursor as a query parameter's pattern: the schema says what it is, and
# decode_number_cursor refuses the ten-digit numbers past the column's range.
NUMBER_CURSOR_PATTERN = r"^[0-9]{1,10}$"
T = TypeVar("T")
Key = str | int | datetime | None


def encode_cursor(*values: Key) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values], separators=(",", ":"))
    return b64url.encode(raw.encode())


def _bad() -> Unprocessable:
    return Unprocessable(
        [{"pointer": "/cursor", "message": "not a cursor from this API; pass next_cursor from the previous page unchanged"}]
    )


def decode_cursor(cursor: str | None, *kinds: type, nullable: Collection[int] = ()) -> tuple[Any, ...] | None:
    """The values ``encode_cursor`` was given, checked against ``kinds`` (str, int or
    datetime), or None for the first page. A value may be None only at a position in
    ``nullable`` (a sort column that holds NULLs, as an engagement's due time): a null
    anywhere else would reach the query as ``< NULL``, which SQLAlchemy refuses (a 500)."""
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR_CHARS:
        raise _bad()
    try:
        values = json.loads(b64url.decode(cursor, strict=True))
    except (binascii.Error, ValueError):
        raise _bad() from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise _bad()
    out: list[Any] = []
    for i, (kind, v) in enumerate(zip(kinds, values, strict=True)):
        if v is None and i in nullable:
            out.append(None)
        elif kind is datetime and isinstance(v, str):
            try:
                at = datetime.fromisoformat(v)
            except ValueError:
                raise _bad() from None
            if at.tzinfo is None:
                raise _bad()
            try:
                out.append(at.astimezone(UTC))
            except OverflowError:  # year 1 or 9999 with an offset: no UTC value to compare
                raise _bad() from None
        elif kind is int and isinstance(v, int) and not isinstance(v, bool) and -DB_INT_MAX - 1 <= v <= DB_INT_MAX:
            out.append(v)
        elif kind is str and isinstance(v, str):
            out.append(v)
        else:
            raise _bad()
    return tuple(out)


def decode_number_cursor(cursor: str | None, maximum: int = DB_INT_MAX) -> int | None:
    """The number a list ordered by an integer key resumes after, or None for the first
    page; one outside 0..``maximum`` (the column's range) is a 422."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > len(str(maximum)) or int(cursor) > maximum:
        raise _bad()
    return int(cursor)


def next_cursor(items: Sequence[T], limit: int, key: Callable[[T], tuple[Key, ...]]) -> str | None:
    """The cursor after a full page's last item; None when the page is not full (the end)."""
    return encode_cursor(*key(items[-1])) if items and len(items) == limit else None


def next_key(items: Sequence[T], limit: int, key: Callable[[T], str]) -> str | None:
    """The cursor of a list that resumes after one key: ``key`` of a full page's last item
    (its id, email hash or number); None when the page is not full (the end)."""
    return key(items[-1]) if items and len(items) == limit else None


def sorted_after(
    q: Select[Any], column: InstrumentedAttribute[Any], key: InstrumentedAttribute[Any], *, descending: bool, anchor: tuple[Any, Any] | None
) -> Select[Any]:
    """``q`` ordered by ``column`` (ascending or descending; NULLs last either way) then
    by ``key`` (the primary key, the same way), resuming after ``anchor``: the previous
    page's last row's (column value, key), or None for the first page. A column that is
    never NULL gets a plain ORDER BY, so an index on it still serves the order."""
    nullable = bool(getattr(column.property.columns[0], "nullable", True)) if hasattr(column, "property") else True
    first = column.desc() if descending else column.asc()
    q = q.order_by(first.nulls_last() if nullable else first, key.desc() if descending else key.asc())
    if anchor is None:
        return q
    value, last = anchor
    key_beyond = key < last if descending else key > last
    if value is None:  # among the NULLs, which come last
        return q.where(column.is_(None), key_beyond)
    v = literal(value, column.type)  # a bound value, so a boolean column compares too
    beyond = column < v if descending else column > v
    parts = [beyond, and_(column == v, key_beyond)]
    if nullable:
        parts.append(column.is_(None))
    return q.where(or_(*parts))
