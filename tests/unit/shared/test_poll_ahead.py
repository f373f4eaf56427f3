"""BatchWorker._poll_ahead, the overlapping loop's polls while a batch's transaction runs
(shared/kafka/batch_worker.py): it stops at a full batch, when the transaction is done,
and, for a transaction that hangs, at half the consumer's max poll interval, so that the
group evicts the worker as it did when the loop only waited (the loop itself runs on the
real broker: tests/integration/shared/test_batch_worker.py)."""

from __future__ import annotations

import time
from concurrent.futures import Future

from shared.kafka.batch_worker import BatchWorker
from shared.settings import Settings


def _worker(**settings) -> tuple[BatchWorker, list[int]]:
    w = BatchWorker(Settings(env="test", **settings), None)  # type: ignore[arg-type]
    polls: list[int] = []
    give_up = time.monotonic() + 5  # fails, rather than hangs, a loop that never stops

    def poll(consumer, timeout_ms, max_records=None):
        assert time.monotonic() < give_up, "still polling after 5 s"
        polls.append(timeout_ms)
        return []

    w._poll = poll  # type: ignore[method-assign]
    return w, polls


def test_a_hung_transaction_stops_the_polls_at_half_the_max_poll_interval():
    w, polls = _worker(kafka_max_poll_interval_ms=200)
    started = time.monotonic()
    assert w._poll_ahead(None, Future()) == []  # the transaction never ends
    assert 0.1 <= time.monotonic() - started < 5  # returned at about 0.1 s, not never
    assert polls[0] == 0 and len(polls) > 1  # it did poll meanwhile


def test_a_finished_transaction_or_a_full_batch_ends_the_polls_at_once():
    w, polls = _worker()
    done: Future = Future()
    done.set_result(None)
    assert w._poll_ahead(None, done) == [] and polls == [0]

    w, polls = _worker(kafka_max_poll_records=3)
    w._poll = lambda consumer, timeout_ms, max_records=None: polls.append(max_records) or ["r"] * (max_records or 2)  # type: ignore[method-assign]
    assert w._poll_ahead(None, Future()) == ["r"] * 3 and polls == [None, 1]  # 2, then the 1 left to fill the batch
