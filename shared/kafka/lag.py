"""Consumer lag measured from outside a group (the supervisor's drain, ``make soak``)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition

from shared.settings import Settings


class LagProbe:
    """How far each consumer group is behind, from outside the group: the group's
    committed offsets (OffsetFetch) against each partition's high-watermark. The
    embedded broker answers ListOffsets(latest) wrongly, so the high-watermark is read
    from a fetch at the committed offset, as the workers do (``highwater()``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, client_id="touchline-lag-probe")
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            client_id="touchline-lag-probe",
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=1,
            allow_auto_create_topics=False,
        )

    def high_watermark(self, tp: TopicPartition, from_offset: int, timeout: float = 5.0) -> int | None:
        self.consumer.assign([tp])
        self.consumer.seek(tp, from_offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)
            hw: int | None = self.consumer.highwater(tp)
            if hw is not None:
                return hw
        return None

    def lag(self, group_id: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """Records not yet committed by ``group_id``, per partition of ``topics``."""
        committed = {tp: om.offset for tp, om in (self.admin.list_group_offsets(group_id).get(group_id) or {}).items() if om.offset >= 0}
        out: dict[TopicPartition, int] = {}
        for topic in topics:
            for p in sorted(self.consumer.partitions_for_topic(topic) or []):
                tp = TopicPartition(topic, p)
                position = committed.get(tp, 0)
                hw = self.high_watermark(tp, position)
                if hw is not None:
                    out[tp] = max(0, hw - position)
        return out

    def close(self) -> None:
        for c in (self.consumer, self.admin):
            try:
                c.close()
            except Exception:  # closing a probe whose broker is gone
                pass
