"""Consumer progress: every :class:`shared.kafka.batch_worker.BatchWorker` writes, per partition it
owns, how far its group has processed (the position after its last committed batch)
and the partition's high-watermark as its own fetches saw it.

Why a table and not the broker. The embedded broker answers ListOffsets(latest)
wrongly (the last batch's base offset + 1), so another process cannot ask it how far
behind a group is. The high-watermark a consumer's fetches carry is right on every
broker, but only the group's own members see it. So each member publishes what it
measured, and whoever needs "has ingest stored everything up to now?" reads the rows
(the rules tick, ``touchline demo``). The same works unchanged on real Kafka.

A row is a heartbeat too: a member rewrites it when its numbers change and at least
every :data:`HEARTBEAT` while it is alive (idle polls included). A row older than the
reader's staleness limit means nobody is consuming that partition, so its lag is
unknown and must be treated as "behind".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.db import Base, UTCDateTime, upsert

HEARTBEAT = timedelta(seconds=10)


class ConsumerProgress(Base):
    __tablename__ = "consumer_progress"

    group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer)  # next offset the group will process
    highwater: Mapped[int] = mapped_column(Integer)  # as the member's last fetch saw it
    lag: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


def report(session: Session, group_id: str, rows: dict[tuple[str, int], tuple[int, int]], now: datetime) -> None:
    """Upsert ``{(topic, partition): (position, highwater)}`` for ``group_id`` (flushes only)."""
    if not rows:
        return
    upsert(
        session,
        ConsumerProgress.__table__,
        [
            {
                "group_id": group_id,
                "topic": topic,
                "partition": p,
                "position": pos,
                "highwater": hw,
                "lag": max(0, hw - pos),
                "updated_at": now,
            }
            for (topic, p), (pos, hw) in sorted(rows.items())
        ],
        ["group_id", "topic", "partition"],
        update=lambda ex: {"position": ex.position, "highwater": ex.highwater, "lag": ex.lag, "updated_at": ex.updated_at},
    )


@dataclass
class Watermark:
    """How far behind a group is on a topic, as its members last reported it."""

    lag: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    silent: list[int] = field(default_factory=list)  # partitions with no recent report

    def caught_up(self, max_lag: int) -> bool:
        return not self.silent and self.lag <= max_lag


def watermark(
    session: Session, group_id: str, topic: str, partitions: set[int] | list[int], now: datetime, stale_after: timedelta
) -> Watermark:
    """The group's lag on ``topic`` over ``partitions``; a partition without a report
    newer than ``stale_after`` is listed as silent (its lag is unknown)."""
    rows = {
        r.partition: r
        for r in session.scalars(select(ConsumerProgress).where(ConsumerProgress.group_id == group_id, ConsumerProgress.topic == topic))
    }
    out = Watermark()
    for p in sorted(partitions):
        row = rows.get(p)
        if row is None or row.updated_at < now - stale_after:
            out.silent.append(p)
            continue
        out.lag += row.lag
        out.positions[p] = row.position
    return out


def positions(session: Session, group_id: str, topic: str) -> dict[int, int]:
    """The group's last reported position per partition (whatever its age)."""
    return {
        r.partition: r.position
        for r in session.scalars(select(ConsumerProgress).where(ConsumerProgress.group_id == group_id, ConsumerProgress.topic == topic))
    }
