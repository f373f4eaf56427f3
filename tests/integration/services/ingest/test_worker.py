"""The ingest worker against the real broker and both databases."""

from __future__ import annotations

import json
import sys
import threading
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text

from services.ingest.events.worker import IngestWorker
from services.ingest.models import Account, AccountEventSeen, RawEvent, UsageDaily, User, UserActivityDaily, UserEventSeen
from services.ingest.service import apply_events
from shared import deadletters
from shared.db import transaction
from shared.events import Event
from shared.faults import CRASH_EXIT_CODE
from shared.kafka.batch_worker import BatchResult, BatchWorker
from shared.models import DeadLetter
from tests.support.helpers import (
    QUICK_SESSION_TIMEOUT,
    T0,
    committed_offsets,
    drain,
    publish,
    read_dlq,
    run_cli,
    track,
    unreachable_database,
    wait_for,
)
from tests.support.rules import ingest


def count(session_factory, model, *where) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def usage(session_factory, account_id: str) -> dict[tuple[date, str], int]:
    with session_factory() as s:
        rows = s.execute(select(UsageDaily.day, UsageDaily.event_name, UsageDaily.count).where(UsageDaily.account_id == account_id))
        return {(d, n): c for d, n, c in rows}


@pytest.fixture
def worker(topics, session_factory, clock):
    w = IngestWorker(topics, session_factory, clock)
    yield w
    w.close()


def test_events_become_accounts_users_rollups_and_last_seen(topics, worker, session_factory, clock):
    day1, day2 = T0 - timedelta(days=2), T0 - timedelta(days=1)
    events = [
        {
            "event_id": "g1",
            "type": "group",
            "account_id": "acme",
            "timestamp": (T0 - timedelta(days=3)).isoformat(),
            "traits": {
                "name": "Acme",
                "plan": "pro",
                "seats": 10,
                "arr": 12000,
                "segment": "smb",
                "lifecycle_stage": "onboarding",
                "renewal_date": "2026-06-01",
                "industry": "retail",
            },
        },
        {
            "event_id": "i1",
            "type": "identify",
            "account_id": "acme",
            "user_id": "ada",
            "timestamp": (T0 - timedelta(days=3)).isoformat(),
            "traits": {"email": "ada@acme.test", "role": "champion", "timezone": "Europe/London"},
        },
        track("acme", "login", day1, "ada", "e1"),
        track("acme", "login", day1 + timedelta(hours=1), "bob", "e2"),
        track("acme", "report_created", day1 + timedelta(hours=2), "ada", "e3"),
        track("acme", "login", day2, "ada", "e4"),
        track("globex", "login", day2, None, "e5"),  # a never-seen account, no user
    ]
    publish(topics, events)
    drain(worker, lambda: count(session_factory, RawEvent) == 7)

    with session_factory() as s:
        acme = s.get(Account, "acme")
        assert (acme.name, acme.plan, acme.seats, acme.arr, acme.segment, acme.lifecycle_stage) == (
            "Acme",
            "pro",
            10,
            12000,
            "smb",
            "onboarding",
        )
        assert acme.renewal_date == date(2026, 6, 1)
        assert acme.traits == {"industry": "retail"}
        assert acme.first_seen_at == day1 and acme.last_seen_at == day2
        assert s.get(Account, "globex").last_seen_at == day2
        ada = s.get(User, ("acme", "ada"))
        assert (ada.email, ada.role, ada.timezone) == ("ada@acme.test", "champion", "Europe/London")
        assert s.get(User, ("acme", "bob")).first_seen_at == day1 + timedelta(hours=1)
        seen = s.get(AccountEventSeen, ("acme", "login"))
        assert (seen.first_seen_at, seen.last_seen_at) == (day1, day2)
        assert s.get(UserEventSeen, ("acme", "ada", "report_created")).last_seen_at == day1 + timedelta(hours=2)
    assert usage(session_factory, "acme") == {
        (day1.date(), "login"): 2,
        (day1.date(), "report_created"): 1,
        (day2.date(), "login"): 1,
    }
    assert count(session_factory, UserActivityDaily, UserActivityDaily.account_id == "acme", UserActivityDaily.day == day1.date()) == 2


def test_day_buckets_are_utc_days_whatever_the_sender_zone(topics, worker, session_factory):
    # 23:30 in New York on March 1st is 04:30 UTC on March 2nd.
    ev = track("acme", "login", T0, "ada", "tz1")
    ev["timestamp"] = "2026-03-01T23:30:00-05:00"
    publish(topics, [ev])
    drain(worker, lambda: count(session_factory, RawEvent) == 1)
    assert usage(session_factory, "acme") == {(date(2026, 3, 2), "login"): 1}


def test_duplicates_and_replays_change_nothing(topics, worker, session_factory):
    evs = [track("acme", "login", T0 - timedelta(hours=i), "ada", f"dup-{i}") for i in range(5)]
    publish(topics, evs + evs[:2])  # duplicates in the same batch
    drain(worker, lambda: count(session_factory, RawEvent) == 5)
    before = usage(session_factory, "acme")
    publish(topics, evs)  # a full replay later
    drain(worker, lambda: worker.consumer is not None and _committed_total(worker) == 12)
    assert usage(session_factory, "acme") == before
    assert sum(before.values()) == 5
    # Deduplicated, not dead-lettered: a batch whose duplicates failed the insert would be
    # bisected and the copies sent to the DLQ as processing errors, with the counts above intact.
    assert count(session_factory, DeadLetter) == 0


def test_two_payloads_under_one_event_id_keep_the_first_in_a_batch_and_after(session_factory):
    """Issue 25, gap 5. The contract (services/ingest/service.py, apply_events): the first
    occurrence of an event_id wins, inside a batch as across batches. A producer that
    reuses an id for another event loses the later one entirely: its name, user,
    properties and traits are not stored and count nowhere."""
    from tests.support.rules import identify

    first = track("acme", "login", T0 - timedelta(hours=1), "ada", "same-id", plan="pro")
    second = track("acme", "export", T0 - timedelta(hours=2), "bob", "same-id", plan="free")
    who = identify("acme", "ada", T0 - timedelta(hours=3), email="ada@acme.test", name="Ada")
    impostor = {**identify("acme", "ada", T0 - timedelta(hours=3), email="not-ada@evil.test", name="Eve"), "event_id": who["event_id"]}
    with transaction(session_factory) as s:
        summary = apply_events(s, [Event.model_validate_json(json.dumps(e)) for e in [first, who, second, impostor]], T0)
    assert (summary.new, summary.duplicates) == (2, 2)  # the later two count as duplicates, not as new

    def state():
        with session_factory() as s:
            raw = s.get(RawEvent, "same-id")
            stored = (raw.name, raw.user_id, raw.properties)
            users = {u.id: (u.email, u.name) for u in s.scalars(select(User).where(User.account_id == "acme"))}
        return stored, users, usage(session_factory, "acme")

    kept = (("login", "ada", {"plan": "pro"}), {"ada": ("ada@acme.test", "Ada")}, {(T0.date(), "login"): 1})
    assert state() == kept
    assert count(session_factory, RawEvent) == 2
    with transaction(session_factory) as s:
        summary = apply_events(s, [Event.model_validate_json(json.dumps(e)) for e in [second, impostor]], T0 + timedelta(minutes=1))
    assert (summary.new, summary.duplicates) == (0, 2)  # and later batches change nothing
    assert state() == kept


def test_a_batch_stored_while_another_transaction_stores_some_of_its_events_stores_each_once(session_factory, db_kind):
    """A rebalance can leave two workers storing the same records at the same moment. The
    later transaction waits for the earlier one's rows and, once those are committed, stores
    only the events that the earlier one did not: on PostgreSQL its plain insert meets the
    primary key and the batch is stored again with ON CONFLICT DO NOTHING
    (services/ingest/repository/store.py, store_events_pg)."""
    evs = [Event.model_validate_json(json.dumps(track("acme", "login", T0 - timedelta(minutes=i), "ada", f"race-{i}"))) for i in range(9)]
    results: dict[str, object] = {}

    def store_later() -> None:
        try:
            with transaction(session_factory) as s:
                results["later"] = apply_events(s, evs[3:], T0)
        except Exception as exc:  # reported by the assertion below
            results["later"] = exc

    def waiting_on_a_lock() -> bool:
        with session_factory() as s:
            return bool(
                s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
            )

    later = threading.Thread(target=store_later)
    with transaction(session_factory) as s:
        first = apply_events(s, evs[:6], T0)
        later.start()
        if db_kind == "postgresql":  # SQLite's later writer waits for the write lock at BEGIN IMMEDIATE, unseen
            wait_for(waiting_on_a_lock, 30, "the later transaction to wait for the earlier one's rows")
    later.join(60)
    stored = results["later"]
    assert not isinstance(stored, Exception), stored
    assert (first.new, stored.new, stored.duplicates) == (6, 3, 3)  # type: ignore[union-attr]
    assert count(session_factory, RawEvent) == 9
    assert sum(usage(session_factory, "acme").values()) == 9


def _committed_total(worker) -> int:
    total = 0
    for tp in worker.consumer.assignment():
        total += worker.consumer.committed(tp) or 0
    return total


BAD_RECORDS = {
    "invalid_utf8": (b"acme", b'{"event_id":"x","name":"\xff\xfe"}'),
    "invalid_json": (b"acme", b'{"event_id": "x", '),
    "not_an_object": (b"acme", b'["not", "an", "object"]'),
    "missing_field": (b"acme", json.dumps({"account_id": "acme", "name": "login", "timestamp": T0.isoformat()}).encode()),
    "invalid_field": (b"acme", json.dumps({"event_id": 7, "account_id": "acme", "name": "login", "timestamp": T0.isoformat()}).encode()),
    "timestamp_without_zone": (
        b"acme",
        json.dumps({"event_id": "n", "account_id": "acme", "name": "login", "timestamp": "2026-03-02T10:00:00"}).encode(),
    ),
    "timestamp_in_future": (
        b"acme",
        json.dumps({"event_id": "f", "account_id": "acme", "name": "login", "timestamp": "2031-01-01T00:00:00Z"}).encode(),
    ),
    "oversized": (
        b"acme",
        json.dumps(
            {"event_id": "big", "account_id": "acme", "name": "login", "timestamp": T0.isoformat(), "properties": {"blob": "x" * 70_000}}
        ).encode(),
    ),
    "key_mismatch": (b"other", json.dumps({"event_id": "k", "account_id": "acme", "name": "login", "timestamp": T0.isoformat()}).encode()),
}


def test_every_rejection_reason_has_a_dlq_case():
    from shared.events import REJECTION_REASONS

    # processing_error has its own test below (a record that fails after validation).
    assert set(BAD_RECORDS) | {"processing_error"} == set(REJECTION_REASONS)


def test_every_class_of_bad_input_reaches_the_dlq_and_the_worker_goes_on(topics, worker, session_factory):
    good_before = track("acme", "login", T0 - timedelta(hours=1), "ada", "good-1")
    good_after = track("acme", "login", T0 - timedelta(hours=2), "ada", "good-2")
    publish(topics, [good_before] + list(BAD_RECORDS.values()) + [(b"acme", None), good_after])
    drain(worker, lambda: count(session_factory, RawEvent) == 2)

    dlq = read_dlq(topics, len(BAD_RECORDS) + 1)
    by_reason = {d["reason"]: d for d in dlq if d["original_bytes"]}
    assert set(by_reason) == set(BAD_RECORDS)  # the tombstone is a not_an_object too
    assert sum(1 for d in dlq if d["reason"] == "not_an_object") == 2
    for reason, (key, value) in BAD_RECORDS.items():
        d = by_reason[reason]
        assert d["original_bytes"] == value, reason
        assert d["key"] == key.decode()
        assert d["source"]["topic"] == topics.topic_events and d["source"]["offset"] >= 0
        assert d["detail"], reason
    # After all that garbage the worker still consumes.
    publish(topics, [track("acme", "login", T0, "ada", "good-3")])
    drain(worker, lambda: count(session_factory, RawEvent) == 3)


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _raw(event_id: str, body: str) -> tuple[bytes, bytes]:
    return b"acme", (f'{{"event_id":"{event_id}","account_id":"acme","name":"login","timestamp":"{T0.isoformat()}",' + body + "}").encode()


# Records that used to be accepted (NaN, Infinity, 1e400), to crash validation
# (RecursionError) or to pass validation and fail in the database (processing_error).
UNBOUNDED_RECORDS = {
    "nan": ("invalid_json", _raw("nan", '"properties":{"x":NaN}')),
    "infinity": ("invalid_json", _raw("inf", '"properties":{"x":-Infinity}')),
    "overflowing float": ("invalid_json", _raw("big-float", '"properties":{"x":1e400}')),
    "1000 deep": ("invalid_field", _raw("deep", '"properties":' + _nested(1000))),
    "5000 digits": ("invalid_field", _raw("digits", '"properties":{"x":' + "9" * 5000 + "}")),
    "huge seats": (
        "invalid_field",
        (
            b"acme",
            json.dumps(
                {"event_id": "seats", "type": "group", "account_id": "acme", "timestamp": T0.isoformat(), "traits": {"seats": 10**30}}
            ).encode(),
        ),
    ),
}


def test_unbounded_values_are_dead_lettered_with_their_reason_not_as_processing_errors(topics, worker, session_factory):
    publish(topics, [value for _reason, value in UNBOUNDED_RECORDS.values()] + [track("acme", "login", T0, "ada", "after")])
    drain(worker, lambda: count(session_factory, RawEvent) == 1)
    dlq = {d["original_bytes"]: d for d in read_dlq(topics, len(UNBOUNDED_RECORDS))}
    for case, (reason, (_key, value)) in UNBOUNDED_RECORDS.items():
        assert dlq[value]["reason"] == reason, (case, dlq[value]["detail"])
    assert "NaN" in dlq[UNBOUNDED_RECORDS["nan"][1][1]]["detail"]
    assert "limit is 16" in dlq[UNBOUNDED_RECORDS["1000 deep"][1][1]]["detail"]


def test_a_record_larger_than_the_dlq_producer_sends_is_dead_lettered_and_its_partition_goes_on(topics, worker, session_factory):
    """A 1.5 MB record (the broker holds it; our producer sends at most its
    max_request_size, 1 MiB) is dead-lettered like any oversized record: the DLQ topic
    gets its first bytes and a ``touchline.dlq.truncated`` header, ``dead_letters`` every
    byte, and the event behind it is stored. (Review: its DLQ publish failed on every
    retry, so ingest of its partition stopped for good.)"""
    from shared.kafka.clients import make_producer

    big = b"x" * 1_500_000
    producer = make_producer(topics, max_request_size=4 * 1024 * 1024)
    producer.send(topics.topic_events, key=b"acme", value=big)
    producer.flush()
    producer.close()
    publish(topics, [track("acme", "login", T0, "ada", "after-big")])
    drain(worker, lambda: count(session_factory, RawEvent) == 1)
    [d] = read_dlq(topics, 1)
    assert d["reason"] == "oversized" and d["key"] == "acme" and d["source"]["topic"] == topics.topic_events
    assert "value 1500000 bytes" in d["truncated"]
    assert 1_000_000 < len(d["original_bytes"]) <= worker.producer.config["max_request_size"] and big.startswith(d["original_bytes"])
    with session_factory() as s:
        assert s.scalar(select(DeadLetter.value)) == big


class _PoisonWorker(BatchWorker):
    """A worker whose processing (not validation) fails on one record, as a bug or a
    database constraint would: the loop must isolate it and go on."""

    name = "poison"

    def topics(self):
        return [self.settings.topic_events]

    def handle_batch(self, session, records):
        for r in records:
            if b"poison" in r.value:
                raise RuntimeError("cannot process this one")
            session.add(
                RawEvent(
                    event_id=json.loads(r.value)["event_id"],
                    account_id="a",
                    type="track",
                    name="n",
                    timestamp=T0,
                    properties={},
                    received_at=T0,
                )
            )
        return BatchResult()


def test_a_record_that_fails_processing_is_isolated_to_the_dlq(topics, session_factory, clock):
    w = _PoisonWorker(topics, session_factory, clock)
    try:
        publish(
            topics,
            [{"event_id": f"p{i}", "account_id": "a"} for i in range(6)]
            + [{"event_id": "poison", "account_id": "a"}]
            + [{"event_id": f"q{i}", "account_id": "a"} for i in range(6)],
        )
        drain(w, lambda: count(session_factory, RawEvent) == 12)
    finally:
        w.close()
    dlq = read_dlq(topics, 1)
    assert [d["reason"] for d in dlq] == ["processing_error"]
    assert b"poison" in dlq[0]["original_bytes"]
    assert dlq[0]["detail"] == "RuntimeError: cannot process this one"  # the exception type, then its message


def test_crash_after_db_commit_before_offset_commit_changes_nothing_on_redelivery(topics, session_factory, clock):
    evs = [track("acme", "login", T0 - timedelta(minutes=i), f"u{i % 3}", f"c{i}") for i in range(20)]
    publish(topics, evs)
    # A real worker process dies hard right after its DB commit, before committing offsets.
    proc = run_cli(topics, "worker", "ingest", timeout=60, TOUCHLINE_FAULT="ingest.before_offset_commit", **QUICK_SESSION_TIMEOUT)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert count(session_factory, RawEvent) == 20  # the effects are committed...
    after_crash = usage(session_factory, "acme")

    # ...and the offsets are not: the broker holds no commit for the group, and a new
    # worker in the same group consumes the whole batch again.
    w = IngestWorker(topics, session_factory, clock)
    assert committed_offsets(topics, w.group_id, topics.topic_events) == {}
    try:
        redelivered = drain(w, lambda: _committed_total(w) == 20)
    finally:
        w.close()
    assert redelivered == 20
    assert usage(session_factory, "acme") == after_crash
    assert sum(after_crash.values()) == 20


def test_crash_after_db_commit_before_the_dlq_publish_loses_no_reject(topics, session_factory, clock):
    """The other window: the batch's effects are committed, its rejects not yet on the
    DLQ. The restarted worker gets the batch again and publishes the reject (once)."""
    good = [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"d{i}") for i in range(5)]
    publish(topics, good + [BAD_RECORDS["invalid_json"]])
    proc = run_cli(topics, "worker", "ingest", timeout=60, TOUCHLINE_FAULT="ingest.after_db_commit", **QUICK_SESSION_TIMEOUT)
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert count(session_factory, RawEvent) == 5  # the crash came after the commit, before the DLQ publish
    w = IngestWorker(topics, session_factory, clock)
    assert committed_offsets(topics, w.group_id, topics.topic_events) == {}
    try:
        assert drain(w, lambda: _committed_total(w) == 6) == 6
    finally:
        w.close()
    assert [d["reason"] for d in read_dlq(topics, 2, timeout=3)] == ["invalid_json"]  # once: a second would be there in ms
    assert count(session_factory, RawEvent) == 5
    # Kept in the database too, once, and listed from there by `touchline dlq`: with the
    # topics gone (an embedded broker restarted empty: another prefix) it still shows it.
    assert count(session_factory, DeadLetter) == 1
    with session_factory() as s:
        [row] = s.scalars(select(DeadLetter)).all()
        again = deadletters.Rejected(row.source_topic, row.source_partition, row.source_offset, row.key, row.value, row.reason, row.detail)
        assert deadletters.store(s, [again], dlq_topic=row.dlq_topic, worker="ingest", now=T0) == 0  # a redelivery stores nothing
    elsewhere = topics.model_copy(update={"topic_prefix": "empty-broker."})
    proc = run_cli(elsewhere, "dlq", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    [shown] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert shown["reason"] == "invalid_json" and shown["source"]["topic"] == topics.topic_events and shown["worker"] == "ingest"
    assert bytes.fromhex(shown["original_bytes"]) == BAD_RECORDS["invalid_json"][1]


def test_restarted_worker_resumes_from_committed_offsets(topics, session_factory, clock):
    first = [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"r1-{i}") for i in range(10)]
    publish(topics, first)
    w1 = IngestWorker(topics, session_factory, clock)
    drain(w1, lambda: count(session_factory, RawEvent) == 10)
    w1.close()
    # Remove the rows so a re-read of the first batch would be visible as new rows.
    with session_factory.begin() as s:
        s.execute(RawEvent.__table__.delete())
    second = [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"r2-{i}") for i in range(5)]
    publish(topics, second)
    w2 = IngestWorker(topics, session_factory, clock)
    try:
        drain(w2, lambda: count(session_factory, RawEvent) >= 5)
        drain(w2, lambda: _committed_total(w2) == 15)
    finally:
        w2.close()
    with session_factory() as s:
        ids = set(s.scalars(select(RawEvent.event_id)))
    assert ids == {e["event_id"] for e in second}


def test_two_workers_split_the_partitions_without_double_counting(topics, session_factory, clock):
    w1 = IngestWorker(topics, session_factory, clock)
    w2 = IngestWorker(topics, session_factory, clock)
    stop = threading.Event()
    threads = []

    def loop(w):
        while not stop.is_set():
            w.poll_once(100)

    try:
        for w in (w1, w2):
            w.start()
            t = threading.Thread(target=loop, args=(w,), daemon=True)
            t.start()
            threads.append(t)
        accounts = [f"acct-{i}" for i in range(24)]
        evs = [track(a, "login", T0 - timedelta(minutes=j), "u1", f"{a}-{j}") for a in accounts for j in range(10)]
        # Wait for both members to hold partitions before publishing, so both do work.
        drain([], lambda: bool(w1.consumer.assignment()) and bool(w2.consumer.assignment()), timeout=30)
        publish(topics, evs)
        drain([], lambda: count(session_factory, RawEvent) == 240, timeout=60)
        a1, a2 = set(w1.consumer.assignment()), set(w2.consumer.assignment())
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        w1.close()
        w2.close()
    assert a1 and a2 and not (a1 & a2)
    assert len(a1 | a2) == topics.topic_partitions
    with session_factory() as s:
        total = s.scalar(select(func.sum(UsageDaily.count)))
    assert total == 240


def test_other_traits_are_kept_across_updates(session_factory):
    for i, traits in enumerate([{"name": "Acme", "industry": "retail"}, {"region": "emea"}, {"industry": "fintech"}]):
        ingest(
            session_factory,
            [
                {
                    "event_id": f"g{i}",
                    "type": "group",
                    "account_id": "acme",
                    "timestamp": (T0 - timedelta(days=3 - i)).isoformat(),
                    "traits": traits,
                }
            ],
            T0,
        )
    with session_factory() as s:
        acme = s.get(Account, "acme")
        assert (acme.name, acme.traits) == ("Acme", {"industry": "fintech", "region": "emea"})


def test_late_older_traits_do_not_overwrite_newer_ones(topics, worker, session_factory):
    newer = {
        "event_id": "g-new",
        "type": "group",
        "account_id": "acme",
        "timestamp": (T0 - timedelta(days=1)).isoformat(),
        "traits": {"plan": "pro", "lifecycle_stage": "active"},
    }
    older = {
        "event_id": "g-old",
        "type": "group",
        "account_id": "acme",
        "timestamp": (T0 - timedelta(days=3)).isoformat(),
        "traits": {"plan": "starter", "lifecycle_stage": "onboarding"},
    }
    publish(topics, [newer])
    drain(worker, lambda: count(session_factory, RawEvent) == 1)
    publish(topics, [older])
    drain(worker, lambda: count(session_factory, RawEvent) == 2)
    with session_factory() as s:
        acme = s.get(Account, "acme")
        assert (acme.plan, acme.lifecycle_stage) == ("pro", "active")
        assert acme.lifecycle_stage_changed_at == T0 - timedelta(days=1)


def test_a_database_outage_is_retried_and_nothing_is_lost_or_dead_lettered(topics, session_factory, clock, db_kind, tmp_path):
    """Batches of 3: while the failing batch waits on the database the next one is
    already fetched (ingest overlaps), and it must come again with the failed one, from
    whichever partitions it was fetched."""
    from shared.db import make_session_factory

    down_engine = unreachable_database(topics, db_kind, tmp_path)
    worker = IngestWorker(topics.model_copy(update={"kafka_max_poll_records": 3}), make_session_factory(down_engine), clock)
    worker.db_retry_seconds = 0
    try:
        # Eight accounts: their keys spread the events over the topic's partitions, so the
        # records fetched during a failing batch include other partitions than its own.
        publish(topics, [track(f"acct-{i}", "login", T0 - timedelta(minutes=i), "ada", f"o{i}") for i in range(8)])
        # Join the group first (the deadline only bounds a failing test).
        drain(worker, lambda: worker.consumer is not None and bool(worker.consumer.assignment()))
        for _ in range(3):  # the batch arrives, fails on the database, is rewound, arrives again...
            assert worker.poll_once(500) == 0
        assert _committed_total(worker) == 0
        # The database comes back: the same batch is applied once, nothing went to the DLQ.
        worker.session_factory = session_factory
        drain(worker, lambda: count(session_factory, RawEvent) == 8 and _committed_total(worker) == 8)
        assert read_dlq(topics, 1, timeout=3) == []  # a reject would be there in milliseconds
    finally:
        worker.close()
        down_engine.dispose()


def test_records_fetched_while_a_batch_is_stored_are_stored_too(topics, session_factory, clock):
    """Ingest overlaps: while a batch's transaction runs, the loop fetches the next records
    (shared/kafka/batch_worker.py, ``overlap``). Those become the next batch: none is dropped, and the
    offsets committed are those of stored records only."""
    settings = topics.model_copy(update={"kafka_max_poll_records": 5})  # 40 records: eight batches
    publish(settings, [track("acme", "login", T0 - timedelta(seconds=i), "u1", f"pf-{i}") for i in range(40)])
    w = IngestWorker(settings, session_factory, clock)
    prefetched = []  # after each poll: did it leave fetched records for the next batch?

    def all_committed() -> bool:
        prefetched.append(len(w._prefetched) + (len(w._in_flight[0]) if w._in_flight else 0))  # kept, or started early
        return _committed_total(w) == 40

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # Python's default
    try:
        drain(w, all_committed)
        assert any(prefetched), "no batch was fetched while another was stored: the test missed the overlap"
        assert count(session_factory, RawEvent) == 40 and sum(usage(session_factory, "acme").values()) == 40
        # The helper thread gets the GIL back soon after each answer from the database.
        assert sys.getswitchinterval() <= w.overlap_switch_interval
    finally:
        sys.setswitchinterval(interval)
        w.close()


def test_records_polled_ahead_are_validated_once_on_the_loop_while_the_batch_before_is_stored(topics, session_factory, clock, monkeypatch):
    """Ingest validates records it polled ahead (and, on PostgreSQL, writes their COPY
    rows) on the loop's thread while the helper thread stores the batch before them
    (BatchWorker.prepare): each record is validated once, the batch's transaction does
    not validate it again, and what is stored is what validating in the batch gives,
    awkward text included."""
    import services.ingest.events.worker as worker_module

    threads: list[str] = []
    real = worker_module.validate_record

    def spy(*args, **kwargs):  # observes only: the real validation runs
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(worker_module, "validate_record", spy)
    settings = topics.model_copy(update={"kafka_max_poll_records": 5})  # 40 records: eight batches
    awkward = 'tab\there \\ back\\slash "quoted" \u00e9\n'
    publish(settings, [track("acme", "login", T0 - timedelta(seconds=i), "u1", f"pa-{i}", note=f"{awkward}{i}") for i in range(40)])
    w = IngestWorker(settings, session_factory, clock)
    try:
        drain(w, lambda: _committed_total(w) == 40)
        assert len(threads) == 40, f"{len(threads)} validations for 40 records: a record polled ahead was validated twice"
        assert any(not t.startswith("ingest-db") for t in threads), "no record was validated ahead: the test missed the overlap"
        with session_factory() as s:
            notes = dict(s.execute(select(RawEvent.event_id, RawEvent.properties["note"].as_string())).all())
        assert notes == {f"pa-{i}": f"{awkward}{i}" for i in range(40)}
    finally:
        w.close()


def test_a_verdict_given_ahead_is_given_again_when_the_clock_has_moved_on(topics, session_factory, clock, monkeypatch):
    """A record polled ahead was judged at that moment; if its batch is stored more than
    PREPARED_FOR later (by the worker's clock), it is judged again then. Here the record
    lies 90 s ahead of the clock with 60 s of allowed skew: too far ahead when polled,
    in bounds once the clock has moved a minute on (while the batch before it is stored),
    so it is stored, not dead-lettered."""
    from services.ingest.events.worker import PREPARED_FOR

    settings = topics.model_copy(update={"kafka_max_poll_records": 1, "max_future_skew_seconds": 60})
    publish(
        settings,
        [track("acme", "login", clock.now(), "u1", "now"), track("acme", "login", clock.now() + timedelta(seconds=90), "u1", "soon")],
    )
    w = IngestWorker(settings, session_factory, clock)
    prepared_ahead = threading.Event()
    real_prepare, real_handle = w.prepare, w.handle_batch

    def prepare(records):
        out = real_prepare(records)
        prepared_ahead.set()
        return out

    def handle_batch(session, records):
        if [json.loads(r.value)["event_id"] for r in records] == ["now"]:
            # "soon" is judged on the loop meanwhile; the minute passes after that verdict.
            assert prepared_ahead.wait(10), "not polled ahead"
            clock.advance(timedelta(seconds=60))
        return real_handle(session, records)

    w.prepare, w.handle_batch = prepare, handle_batch
    assert timedelta(seconds=60) > PREPARED_FOR
    try:
        drain(w, lambda: _committed_total(w) == 2)
        assert count(session_factory, RawEvent, RawEvent.event_id == "soon") == 1
    finally:
        w.close()


def test_large_batches_store_awkward_text_exactly(topics, worker, session_factory):
    """Batches above the COPY threshold take PostgreSQL's COPY path: tabs, newlines,
    backslashes, quotes and non-ASCII must round-trip unchanged (SQLite checks the same)."""
    from shared.db import COPY_THRESHOLD

    awkward = {"text": 'tab\there\nnew line \\ back\\slash "quoted" ünïcødé 👋 \\N', "nested": {"list": [1, 2.5, None, True]}}
    evs = [track("ac\\me", "lo\\gin", T0 - timedelta(seconds=i), "u\\1", f"aw-{i}", **awkward) for i in range(COPY_THRESHOLD + 50)]
    publish(topics, evs)
    drain(worker, lambda: count(session_factory, RawEvent) == len(evs))
    with session_factory() as s:
        row = s.get(RawEvent, "aw-7")
        assert row.properties == awkward and row.account_id == "ac\\me" and row.name == "lo\\gin" and row.user_id == "u\\1"
        assert row.timestamp == T0 - timedelta(seconds=7)
    assert sum(usage(session_factory, "ac\\me").values()) == len(evs)


def test_raw_events_are_pruned_at_the_retention_edge_hourly(topics, worker, session_factory, clock):
    """Raw events live ``raw_event_retention_days`` after they were received (not after
    their event time), pruned by the worker once an hour."""
    retention = timedelta(days=topics.raw_event_retention_days)
    hour = worker.prune_every
    early, late = T0, T0 + 2 * hour  # when each was received
    ingest(session_factory, [track("acme", "login", T0 - timedelta(days=30), "ada", "early")], early)
    ingest(session_factory, [track("acme", "login", T0 - timedelta(days=30), "ada", "late")], late)

    def kept() -> list[str]:
        with session_factory() as s:
            return sorted(s.scalars(select(RawEvent.event_id)))

    clock.set(early + retention)  # exactly at the edge: kept
    worker.poll_once(100)
    assert kept() == ["early", "late"]
    clock.advance(timedelta(seconds=1))  # past the edge, but the next prune is an hour away
    worker.poll_once(100)
    assert kept() == ["early", "late"]
    clock.set(early + retention + hour)  # the hourly prune: the early one goes
    worker.poll_once(100)
    assert kept() == ["late"]
    clock.set(late + retention)  # the next prune lands on the late one's edge: kept
    worker.poll_once(100)
    assert kept() == ["late"]
    clock.set(late + retention + hour)
    worker.poll_once(100)
    assert kept() == []


def test_a_fetch_failing_its_crc_check_is_read_again_by_a_fresh_consumer(topics, session_factory, clock, monkeypatch):
    """A fetched record batch that fails its CRC check (``CorruptRecordError``, seen once
    from the embedded broker under load) left kafka-python spinning for ever on the next
    poll. The worker now starts a fresh consumer, which reads the batch again from the
    committed offsets: every event stored and counted once. The CRC check's verdict is
    the one thing faked: the broker cannot be made to send a corrupt batch."""
    from kafka.record import default_records

    publish(topics, [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"crc-{i}") for i in range(20)])
    check = default_records.DefaultRecordBatch.validate_crc
    failed: list[int] = []

    def once(batch) -> bool:
        if not failed:
            failed.append(batch.base_offset)
            return False
        return check(batch)

    monkeypatch.setattr(default_records.DefaultRecordBatch, "validate_crc", once)
    w = IngestWorker(topics, session_factory, clock)
    try:
        drain(w, lambda: _committed_total(w) == 20)
    finally:
        w.close()
    assert failed == [0]  # the first batch was refused once, then read again
    assert count(session_factory, RawEvent) == 20 and sum(usage(session_factory, "acme").values()) == 20


def test_a_batch_failing_its_crc_check_again_and_again_is_fetched_again_after_growing_waits(
    topics, session_factory, clock, monkeypatch, caplog
):
    """A batch corrupt on the broker fails every time: the worker does not rejoin its
    group in a loop. The first failure is fetched again at once, each next one before any
    record arrives after twice the wait before (a warning each, counting them); once the
    batch reads, everything is stored once."""
    import logging

    from kafka.record import default_records

    publish(topics, [track("acme", "login", T0 - timedelta(minutes=i), "ada", f"crc3-{i}") for i in range(5)])
    check = default_records.DefaultRecordBatch.validate_crc
    failures: list[int] = []

    def three_times(batch) -> bool:
        if len(failures) < 3:
            failures.append(batch.base_offset)
            return False
        return check(batch)

    monkeypatch.setattr(default_records.DefaultRecordBatch, "validate_crc", three_times)
    w = IngestWorker(topics, session_factory, clock)
    w.db_retry_seconds = 0.01  # the waits' base: 0, 0.01 then 0.02 s
    try:
        with caplog.at_level(logging.WARNING, logger="shared.kafka.batch_worker"):
            drain(w, lambda: _committed_total(w) == 5)
    finally:
        w.close()
    warned = [r.getMessage() for r in caplog.records if "fetching it again" in r.getMessage()]
    assert [m.rsplit("(", 1)[1] for m in warned] == [
        "1 in a row); fetching it again with a fresh consumer, from the committed offsets, in 0s",
        "2 in a row); fetching it again with a fresh consumer, from the committed offsets, in 0.01s",
        "3 in a row); fetching it again with a fresh consumer, from the committed offsets, in 0.02s",
    ], warned
    assert count(session_factory, RawEvent) == 5 and sum(usage(session_factory, "acme").values()) == 5
