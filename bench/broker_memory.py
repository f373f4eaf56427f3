"""How much does the embedded broker's RSS grow per million events? (docs/operations.md)

A fresh embedded broker on a free port, Touchline's topics, and one kafka-python producer
(Touchline's own settings: acks=all) writing EVENTS track events of the public contract
(about 200 bytes of JSON each, keyed by account, as the API publishes them) to
product.events. The broker's RSS is read before, every STEP events, and after; the
growth is printed per million events and per KB of payload. Numbers are printed, never
asserted.

    .venv/bin/python -m bench.broker_memory [events=1000000] [step=200000]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from services.wiring.supervisor import rss_mb
from shared.broker import EmbeddedBroker, free_port
from shared.kafka.clients import ensure_topics, make_producer
from shared.settings import Settings


def main(events: int = 1_000_000, step: int = 200_000) -> None:
    var = Path(tempfile.mkdtemp(prefix="broker-memory-"))
    broker = EmbeddedBroker("127.0.0.1", free_port(), var / "broker.log").start()
    try:
        settings = Settings(env="test", var_dir=var, kafka_bootstrap=broker.bootstrap)
        ensure_topics(settings)
        time.sleep(2)  # let the fresh broker settle before the baseline
        assert broker.proc is not None
        before = rss_mb(broker.proc.pid) or 0.0
        print(f"broker RSS before: {before:.1f} MB ({events:,} events to {settings.topic_events})", flush=True)
        producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024, max_in_flight_requests_per_connection=5)
        now = datetime.now(UTC).isoformat()
        payload = 0
        start = time.monotonic()
        for i in range(events):
            account = f"acct-{i % 2000:05d}"
            event = {
                "event_id": str(uuid.uuid4()),
                "account_id": account,
                "user_id": f"u{i % 7:03d}",
                "name": "report_viewed",
                "timestamp": now,
                "properties": {"report": "weekly"},
            }
            value = json.dumps(event, separators=(",", ":")).encode()
            payload += len(value)
            producer.send(settings.topic_events, key=account.encode(), value=value)
            if (i + 1) % step == 0:
                producer.flush(timeout=120)
                print(
                    f"{i + 1:>9,} events  {payload / 2**20:7.1f} MB of values  broker RSS {rss_mb(broker.proc.pid) or 0:7.1f} MB  "
                    f"{time.monotonic() - start:5.0f} s",
                    flush=True,
                )
        producer.flush(timeout=120)
        producer.close(timeout=10)
        time.sleep(2)
        after = rss_mb(broker.proc.pid) or 0.0
        grown = after - before
        print(
            f"broker RSS after: {after:.1f} MB; grew {grown:.1f} MB for {events:,} events "
            f"({grown / events * 1e6:.0f} MB per million; {grown * 1024 / (payload / 1024):.2f} KB of RSS per KB of value; "
            f"values averaged {payload / events:.0f} bytes)"
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
