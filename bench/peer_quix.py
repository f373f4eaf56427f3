"""The peer sink for `make bench-ingest`: Quix Streams' own Kafka-to-PostgreSQL sink,
consuming the same topic in the same run, so Touchline's ingest rate has a well-known
stream processor beside it and not only raw consume.

What it does is the plainest useful sink: JSON values into one table, one row per event,
deduplicated on ``event_id`` (its sink's ``ON CONFLICT DO NOTHING`` on a primary key),
with Quix's defaults otherwise (its checkpoint every 5 s flushes the sink and commits the
offsets). Touchline's ingest does more for each event: validation against the contract,
dedupe, accounts, users, last-seen and daily rollups.

It runs in a virtualenv of its own (bench/peer-requirements.txt, made by bench_ingest on
first use): Quix Streams pins pydantic below the version Touchline pins, so the two do
not share one environment. So this file imports nothing of Touchline's. It prints one
line of JSON: records, seconds from the first record to the last flush, CPU seconds.

    var/bench/peer-venv/bin/python bench/peer_quix.py --bootstrap HOST:PORT --topic T --n N --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import json
import time
from urllib.parse import urlparse


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--dsn", required=True, help="postgresql://user@host:port/db (an empty database)")
    p.add_argument("--group", default=f"quix-peer-{int(time.time())}")
    args = p.parse_args()

    from quixstreams import Application
    from quixstreams.sinks.community.postgresql import PostgreSQLSink

    dsn = urlparse(args.dsn)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        auto_create_topics=False,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    sink = PostgreSQLSink(
        host=dsn.hostname or "127.0.0.1",
        port=dsn.port or 5432,
        dbname=dsn.path.lstrip("/"),
        user=dsn.username or "postgres",
        password=dsn.password or "",
        table_name="events",
        primary_key_columns="event_id",
        on_conflict_do_nothing=True,
        include_metadata=False,
    )
    first: list[float] = []

    def started(value: dict) -> None:
        if not first:
            first.append(time.perf_counter())
            first.append(time.process_time())

    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.update(started)
    sdf.sink(sink)
    app.run(count=args.n, timeout=600, collect=False)
    seconds = time.perf_counter() - first[0]
    cpu = time.process_time() - first[1]
    print(json.dumps({"records": args.n, "seconds": seconds, "cpu_seconds": cpu, "db_cpu_seconds": backends_cpu(args.dsn)}))


def backends_cpu(dsn: str) -> float:
    """CPU seconds of the PostgreSQL backends on this database, read while the sink's
    connection is still open (the server is local: /proc has them); the database is new,
    so they are all the sink's."""
    import os

    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        pids = [row[0] for row in cur.fetchall()]
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except OSError:
            pass
    return total


if __name__ == "__main__":
    main()
