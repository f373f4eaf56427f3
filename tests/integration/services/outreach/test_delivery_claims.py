"""The sender's claims at the repository, on both databases, without a sender or an SMTP
server: which due rows a claim takes (the oldest due first, at most its limit), and
which rows a claim still holds among those asked for. Fast, so make mutation runs them
before the sender tests (docs/testing.md)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from services.outreach.delivery import repository as repo
from services.outreach.delivery.lease import Lease
from services.outreach.models import Message
from shared.db import transaction
from tests.support.helpers import T0
from tests.support.outreach import messages, queue_messages
from tests.support.plans import plan_of, statements_of


def _claim(session_factory, now, limit: int, token: str) -> list[str]:
    with transaction(session_factory) as s:
        rows = repo.claim_due(s, now=now, limit=limit, owner=token, lease_until=now + timedelta(minutes=5), token=token)
        return [m.id for m in rows]


def test_a_claim_takes_the_oldest_due_first_and_no_more_than_its_limit(session_factory):
    """Due at T0+2m, T0, T0+1m and (not yet) T0+10m, and an in-app row (delivered where
    it is read, never by the sender) due first: claims of two take the two oldest due,
    then the one left due; the one not yet due stays queued. The rows are written newest
    first, so neither insertion order nor id order can pass for the due order."""
    later = queue_messages(session_factory, 1, T0 + timedelta(minutes=10), recipient="later{i}@acme.test")
    third = queue_messages(session_factory, 1, T0 + timedelta(minutes=2), recipient="third{i}@acme.test")
    first = queue_messages(session_factory, 1, T0, recipient="first{i}@acme.test")
    second = queue_messages(session_factory, 1, T0 + timedelta(minutes=1), recipient="second{i}@acme.test")
    inapp = queue_messages(session_factory, 1, T0 - timedelta(minutes=1), channel="inapp", recipient="ada")  # not the sender's
    now = T0 + timedelta(minutes=5)
    assert _claim(session_factory, now, 2, "one") == first + second
    assert _claim(session_factory, now, 2, "two") == third
    assert _claim(session_factory, now, 2, "three") == []
    state = {m.id: (m.state, m.lease_token, m.attempts) for m in messages(session_factory)}
    assert state == {
        first[0]: ("sending", "one", 1),
        second[0]: ("sending", "one", 1),
        third[0]: ("sending", "two", 1),
        later[0]: ("queued", None, 0),
        inapp[0]: ("queued", None, 0),
    }


def test_rows_due_at_the_same_time_are_claimed_in_id_order(session_factory):
    ids = queue_messages(session_factory, 5, T0)
    assert _claim(session_factory, T0, 3, "one") == sorted(ids)[:3]
    assert _claim(session_factory, T0, 3, "two") == sorted(ids)[3:]


def test_a_claim_reads_the_due_queue_in_order_from_its_index(session_factory, engine, db_kind):
    """Migration 0028: the claim's ORDER BY next_attempt_at, id LIMIT n is the index's
    order, so the plan stops at the limit instead of sorting every due message (whole rows,
    bodies included: 67 ms a claim at 5,000 queued on PostgreSQL, growing with the
    backlog). Planted: the index without its id (changed inside a transaction rolled back,
    PostgreSQL only) and the plan sorts."""
    queue_messages(session_factory, 3, T0)
    statements = statements_of(engine, lambda: _claim(session_factory, T0, 2, "one"))
    ((sql, params),) = [(q, p) for q, p in statements if "ORDER BY" in q]

    def plan(without_id: bool) -> str:
        before = ["DROP INDEX ix_messages_state_due", "CREATE INDEX ix_messages_state_due ON messages (state, next_attempt_at)"]
        return plan_of(engine, sql, params, before=before if without_id else ())

    indexed = plan(without_id=False)
    assert "ix_messages_state_due" in indexed and "Sort" not in indexed and "TEMP B-TREE" not in indexed, indexed
    if db_kind == "postgresql":  # transactional DDL: the change is rolled back
        assert "Sort" in plan(without_id=True)


def test_the_claimed_rows_in_hand_are_the_rows_as_written(session_factory):
    """The sender works from the rows claim_due returns, not from a re-read: they must say
    what the claim wrote (sending, its owner, lease and token, one attempt more). One of
    the two is a retry, two attempts made already: in hand as in the row, its third (the
    sender gives up by the count in hand, so a retry must not look like a first try)."""
    fresh, retry = queue_messages(session_factory, 2, T0)
    with transaction(session_factory) as s:
        s.execute(update(Message).where(Message.id == retry).values(attempts=2))
    now, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=6)
    with transaction(session_factory) as s:
        rows = repo.claim_due(s, now=now, limit=2, owner="me", lease_until=until, token="tok")
    in_hand = sorted((m.id, m.state, m.lease_owner, m.lease_until, m.lease_token, m.attempts, m.updated_at) for m in rows)
    stored = sorted(
        (m.id, m.state, m.lease_owner, m.lease_until, m.lease_token, m.attempts, m.updated_at) for m in messages(session_factory)
    )
    assert in_hand == stored
    assert {r[0]: r[1:] for r in in_hand} == {
        fresh: ("sending", "me", until, "tok", 1, now),
        retry: ("sending", "me", until, "tok", 3, now),
    }


def test_held_by_names_only_the_rows_asked_for_that_the_claim_still_holds(session_factory):
    ids = queue_messages(session_factory, 3, T0)
    assert sorted(_claim(session_factory, T0, 3, "mine")) == sorted(ids)
    with transaction(session_factory) as s:
        assert repo.mark_sent(s, [ids[2]], T0, "mine") == 1  # sent: no longer held
        assert [m.id for m in repo.held_by(s, [ids[0]], "mine")] == [ids[0]]  # not ids[1], held but not asked for
        assert sorted(m.id for m in repo.held_by(s, ids, "mine")) == sorted(ids[:2])
        assert repo.held_by(s, ids, "another") == []
        assert repo.held_by(s, [], "mine") == []


SECONDS = 300.0  # the lease _claim writes: five minutes


class _Monotonic:
    """The lease's real-time clock (``time.monotonic``), moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _lease(session_factory, clock) -> tuple[Lease, _Monotonic]:
    real = _Monotonic()
    ids = queue_messages(session_factory, 2, clock.now())
    assert len(_claim(session_factory, clock.now(), 2, "mine")) == 2
    until = clock.now() + timedelta(seconds=SECONDS)
    return Lease(session_factory, clock, token="mine", count=len(ids), until=until, seconds=SECONDS, monotonic=real.monotonic), real


def test_a_lease_renews_a_third_of_its_length_after_the_last_renewal_in_real_time(session_factory, clock):
    """The heartbeat's rule: renew once a third of the lease has passed on the process's
    own monotonic clock since the last renewal (so a sender whose wall clock jumps still
    renews), not before, and not again until another third has passed."""
    lease, real = _lease(session_factory, clock)
    real.now += SECONDS / 3 - 0.001
    assert lease.held() and lease.renewals == 0
    real.now += 0.001
    assert lease.held() and (lease.renewals, lease.until) == (1, clock.now() + timedelta(seconds=SECONDS))
    assert lease.held() and lease.renewals == 1  # just renewed: not due again
    real.now += SECONDS / 3 - 0.001
    assert lease.held() and lease.renewals == 1
    real.now += 0.001
    assert lease.held() and lease.renewals == 2


def test_a_lease_renews_when_half_of_it_is_left_on_the_clock(session_factory, clock):
    """The other rule: renew once the clock (simulated here) reaches half the lease before
    it runs out, not a millisecond earlier; a renewal moves the lease to a full length
    from then, and the next is due at half of that."""
    lease, _real = _lease(session_factory, clock)
    half = lease.until - timedelta(seconds=SECONDS / 2)
    clock.set(half - timedelta(milliseconds=1))
    assert lease.held() and lease.renewals == 0
    clock.set(half)
    assert lease.held() and (lease.renewals, lease.until) == (1, half + timedelta(seconds=SECONDS))
    assert lease.held() and lease.renewals == 1  # just renewed: not due again
    clock.set(lease.until - timedelta(seconds=SECONDS / 2, milliseconds=1))
    assert lease.held() and lease.renewals == 1
    clock.advance(timedelta(milliseconds=1))
    assert lease.held() and lease.renewals == 2
