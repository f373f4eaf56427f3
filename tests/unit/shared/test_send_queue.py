"""shared.api.SendQueue: records reach the producer from a thread of its own, in order;
what the producer refuses (at once or later) reaches the record's ``on_error``; a
producer that is stuck never holds the caller, who gets queue.Full past the limit; and
close() sends what is queued before it returns."""

from __future__ import annotations

import queue
import threading

import pytest

from shared.api import SendQueue


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[object] = []

    def add_errback(self, fn: object) -> FakeFuture:
        self.errbacks.append(fn)
        return self


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[FakeFuture] = []

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        self.futures.append(FakeFuture())
        return self.futures[-1]


def test_records_reach_the_producer_in_order_and_close_sends_what_is_queued():
    producer = FakeProducer()
    errors: list[BaseException] = []
    q = SendQueue(lambda: producer, limit=100)  # type: ignore[arg-type, return-value]
    for i in range(50):
        q.put("t", b"k%d" % i, b"v%d" % i, errors.append)
    q.close(timeout=10)
    assert producer.sent == [("t", b"k%d" % i, b"v%d" % i) for i in range(50)]
    # A failure the producer reports later (the broker refused the batch) reaches on_error.
    assert all(f.errbacks == [errors.append] for f in producer.futures)
    assert errors == []


def test_a_producer_that_cannot_be_made_or_refuses_a_record_reports_each_record_to_its_on_error():
    def no_producer():
        raise OSError("no broker at 127.0.0.1:1")

    errors: list[BaseException] = []
    q = SendQueue(no_producer, limit=10)  # type: ignore[arg-type]
    q.put("t", b"k", b"v1", errors.append)
    q.put("t", b"k", b"v2", errors.append)
    q.close(timeout=10)
    assert [str(e) for e in errors] == ["no broker at 127.0.0.1:1"] * 2


def test_a_stuck_producer_never_holds_the_caller_who_is_refused_past_the_limit():
    inside, release = threading.Event(), threading.Event()
    producer = FakeProducer()

    def stuck():
        inside.set()
        release.wait()  # the broker's metadata, not coming yet
        return producer

    q = SendQueue(stuck, limit=3)  # type: ignore[arg-type]
    try:
        q.put("t", b"k", b"first", print)
        assert inside.wait(10)  # the thread took the first record and waits for the producer
        for i in range(3):
            q.put("t", b"k", b"waiting-%d" % i, print)
        with pytest.raises(queue.Full):
            q.put("t", b"k", b"one too many", print)
    finally:
        release.set()
        q.close(timeout=10)
    assert [v for _, _, v in producer.sent] == [b"first", b"waiting-0", b"waiting-1", b"waiting-2"]
