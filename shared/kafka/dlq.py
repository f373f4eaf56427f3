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
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "original_bytes": value,
        "original_text": text,
        "dlq_offset": record.offset,
    }
