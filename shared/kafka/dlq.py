"""The dead-letter record format: the headers :class:`shared.kafka.batch_worker.BatchWorker`
puts on a rejected record it publishes to a DLQ topic, and the reading of them back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord


def dlq_headers(record: ConsumerRecord, reason: str, detail: str, now: datetime) -> list[tuple[str, bytes]]:
    return [
        ("touchline.dlq.reason", reason.encode()),
        ("touchline.dlq.detail", detail[:2000].encode("utf-8", "replace")),
        ("touchline.dlq.topic", record.topic.encode()),
        ("touchline.dlq.partition", str(record.partition).encode()),
        ("touchline.dlq.offset", str(record.offset).encode()),
        ("touchline.dlq.rejected_at", now.isoformat().encode()),
    ]


# Bytes a record needs beyond its key, value and headers when kafka-python sizes it
# against max_request_size (the batch header and the record's varints: under 100).
_RECORD_OVERHEAD = 512
TRUNCATED_HEADER = "touchline.dlq.truncated"


def fit_dlq_record(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], max_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The key, value and headers the DLQ topic gets for a rejected record: as it
    arrived, or, when the producer could not send one that large (its
    ``max_request_size``; a broker may hold larger records than our producer sends),
    the start of its value (and of its key, if that alone is too large) with a
    ``touchline.dlq.truncated`` header giving the original sizes. Without this the
    publish failed on every retry and the record blocked its partition for good. The
    ``dead_letters`` row keeps every byte either way."""
    note = f"value {len(value or b'')} bytes, key {len(key or b'')} bytes; every byte is in dead_letters (touchline dlq)"
    room = max_bytes - _RECORD_OVERHEAD - sum(len(k.encode()) + len(v) for k, v in headers) - len(TRUNCATED_HEADER) - len(note)
    if len(key or b"") + len(value or b"") <= room:
        return key, value, headers
    room = max(room, 0)
    if key is not None and len(key) > room // 2:
        key = key[: room // 2]
    if value is not None:
        value = value[: room - len(key or b"")]
    return key, value, [*headers, (TRUNCATED_HEADER, note.encode())]


def parse_dlq_record(record: ConsumerRecord) -> dict[str, Any]:
    """A DLQ record as a readable dict (for ``touchline dlq`` and the tests)."""
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
    value = record.value or b""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "reason": headers.get("touchline.dlq.reason"),
        "detail": headers.get("touchline.dlq.detail"),
        "source": {
            "topic": headers.get("touchline.dlq.topic"),
            "partition": int(headers.get("touchline.dlq.partition", -1)),
            "offset": int(headers.get("touchline.dlq.offset", -1)),
        },
        "rejected_at": headers.get("touchline.dlq.rejected_at"),
        "truncated": headers.get(TRUNCATED_HEADER),
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "original_bytes": value,
        "original_text": text,
        "dlq_offset": record.offset,
    }
