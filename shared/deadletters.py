"""Dead letters kept durably: every record a worker rejects is stored in the database
(``dead_letters``) before it is published to its DLQ topic, so what was rejected
survives a restart of the embedded broker, which keeps topics in memory only.

The row is keyed by a fingerprint of the source topic, partition, offset and bytes: a
batch redelivered after a crash (rejects stored, offsets not yet committed) stores its
rejects once; a different record that reuses an offset after a broker restart is a new
row. ``touchline dlq``, ``GET /v1/dead-letters`` and the console's Dead letters page
all list this table, newest first. Everything here flushes only; the caller commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, func, select
from sqlalchemy.orm import Session, defer

from shared.db import insert_new
from shared.models import DeadLetter

# Rows per INSERT: under the COPY threshold (shared/db.py), so bytes go as parameters.
_CHUNK = 100


@dataclass(frozen=True)
class Rejected:
    """One rejected record, as a worker hands it over."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


def fingerprint(r: Rejected) -> str:
    h = hashlib.sha256(f"{r.source_topic}\x1f{r.source_partition}\x1f{r.source_offset}\x1f".encode())
    h.update(r.value or b"")
    return h.hexdigest()


def store(session: Session, rejected: Iterable[Rejected], *, dlq_topic: str, worker: str, now: datetime) -> int:
    """Store rejects not stored yet; returns how many were new."""
    rows: dict[str, dict[str, Any]] = {}
    for r in rejected:
        fp = fingerprint(r)
        rows[fp] = {
            "fingerprint": fp,
            "dlq_topic": dlq_topic,
            "worker": worker,
            "source_topic": r.source_topic,
            "source_partition": r.source_partition,
            "source_offset": r.source_offset,
            "reason": r.reason[:64],
            "detail": r.detail[:2000],
            "key": r.key,
            "value": r.value,
            "rejected_at": now,
        }
    values, new = list(rows.values()), 0
    for i in range(0, len(values), _CHUNK):
        new += len(insert_new(session, DeadLetter.__table__, values[i : i + _CHUNK], ["fingerprint"]))
    return new


# What a page of dead letters (the API's, the console's) carries of each original: its
# first bytes, cut in SQL. A broker holds records of megabytes; a page of 100 of them was
# a 210 MB answer built in the API's memory (review). `touchline dlq` prints every byte.
HEAD_BYTES = 64 * 1024


def _text(value: bytes | None, cut: bool) -> str | None:
    """``value`` as UTF-8 text, or None when it is not; a cut value may end inside a
    character (up to 3 bytes of it), which is dropped rather than calling it not text."""
    if value is None:
        return None
    for drop in range(4 if cut else 1):
        try:
            return value[: len(value) - drop].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def as_dict(row: DeadLetter, head: tuple[bytes | None, int] | None = None) -> dict[str, Any]:
    """A dead letter as every reader shows it (the same shape ``touchline dlq --json``
    always printed): the original as text when it is UTF-8, else only as bytes; with
    ``head`` (from :func:`newest_heads`) its first bytes and its whole size."""
    value, size = head if head is not None else (row.value, len(row.value or b""))
    cut = len(value or b"") < size
    text = _text(value, cut)
    return {
        "id": row.id,
        "dlq_topic": row.dlq_topic,
        "worker": row.worker,
        "reason": row.reason,
        "detail": row.detail,
        "source": {"topic": row.source_topic, "partition": row.source_partition, "offset": row.source_offset},
        "rejected_at": row.rejected_at.isoformat(),
        "key": row.key.decode("utf-8", "replace") if row.key is not None else None,
        "original_text": text,
        "original_bytes": value or b"",
        "original_size": size,
        "original_truncated": cut,
    }


def newest(session: Session, *, limit: int, before_id: int | None = None, reason: str | None = None) -> list[DeadLetter]:
    """Newest first; ``before_id`` pages on (the id is the list's cursor)."""
    q = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(DeadLetter.id < before_id)
    if reason is not None:
        q = q.where(DeadLetter.reason == reason)
    return list(session.scalars(q))


def newest_heads(
    session: Session, *, limit: int, before_id: int | None = None, reason: str | None = None, head_bytes: int = HEAD_BYTES
) -> list[tuple[DeadLetter, tuple[bytes | None, int]]]:
    """:func:`newest`, each row with the first ``head_bytes`` of its original and its size
    (for :func:`as_dict`), the original itself never loaded: what a page lists."""
    q = (
        select(
            DeadLetter,
            func.substr(DeadLetter.value, 1, head_bytes, type_=LargeBinary),
            func.coalesce(func.length(DeadLetter.value), 0),
        )
        .options(defer(DeadLetter.value, raiseload=True))
        .order_by(DeadLetter.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        q = q.where(DeadLetter.id < before_id)
    if reason is not None:
        q = q.where(DeadLetter.reason == reason)
    return [(row, (bytes(head) if head is not None else None, int(size))) for row, head, size in session.execute(q)]


def count_by_reason(session: Session) -> dict[str, int]:
    """Every dead letter kept, counted by reason (most first)."""
    rows = session.execute(select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason).order_by(func.count().desc()))
    return {reason: int(n) for reason, n in rows}
