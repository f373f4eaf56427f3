"""Each email once: two real sender processes against a slow SMTP server with a short
lease; a stale owner fenced off; the lease renewed while its owner works; the reply to
the final dot with its own timeout, and a lost reply recorded as ``uncertain`` (or
resent, when the step accepts at-least-once); a crash after the final dot; one live
sender per id."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from services.outreach.channels import DeliveryError
from services.outreach.channels.smtp import SmtpConfig, SmtpSender
from services.outreach.delivery import repository as repo
from services.outreach.delivery.lease import Lease
from services.outreach.delivery.worker import SenderIdInUse, SenderWorker
from services.outreach.devmail.sink import SinkHandler
from services.outreach.models import Message
from shared.broker import free_port
from shared.db import transaction
from shared.metrics import MESSAGES_DELIVERED, STALE_OUTCOMES
from tests.support.helpers import T0, auth, unreachable_database, wait_for
from tests.support.outreach import messages, queue_messages, send_one

MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>]+>)", re.MULTILINE)


class Peer(SinkHandler):
    """The sink with knobs a real relay has: a slow reply to the final dot (the message
    is already kept), a connection dropped instead of that reply, a refusal after it."""

    def __init__(self):
        super().__init__(None)
        self.delay = 0.0
        self.drop_next = 0
        self.reply: str | None = None
        self.on_data = None

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if self.on_data is not None:
            self.on_data()
        if self.drop_next > 0:
            self.drop_next -= 1
            server.transport.abort()  # kept the message, never says so
            return reply
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.reply or reply

    @property
    def count(self) -> int:
        return len(self.raw)

    def message_ids(self) -> Counter:
        with self._lock:
            return Counter(MESSAGE_ID.search(raw).group(1).decode() for raw in self.raw)


@pytest.fixture
def peer():
    handler = Peer()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture
def on_peer(settings, peer, tmp_path):
    """Settings pointed at the peer; ``host`` names the var dir (the journal's machine)."""

    def make(host: str = "host-a", **update):
        return settings.model_copy(
            update={"smtp_url": f"smtp://127.0.0.1:{peer.port}", "var_dir": tmp_path / host, "outreach_retry_base_seconds": 60, **update}
        )

    return make


def sender_env(settings, sender_id: str, var_dir, port: int, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_DATABASE_URL": settings.database_url,
            "TOUCHLINE_VAR_DIR": str(var_dir),
            "TOUCHLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "TOUCHLINE_TOPIC_PREFIX": settings.topic_prefix,
            "TOUCHLINE_SMTP_URL": f"smtp://127.0.0.1:{port}",
            "TOUCHLINE_SENDER_ID": sender_id,
            **extra,
        }
    )
    return env


def test_two_sender_processes_with_a_slow_server_accept_each_message_id_once(settings, session_factory, peer, tmp_path):
    """The finding: a batch that outlasts the lease was taken over while its owner was
    still sending it. Here every batch takes longer than the lease (10 messages, 0.5 s
    per reply, lease 4 s), the second sender starts mid-batch and, having another var
    dir, cannot see the first one's journal (two hosts): only renewal and fencing stand
    between them and a double send.

    Real time, on purpose: two OS processes cannot share a SimulatedClock, and this is the
    one test of the real heartbeat thread renewing across real slow replies between real
    processes. The same renewal and fencing on the simulated clock, in one process, are
    test_the_lease_is_renewed_while_its_owner_works and
    test_a_stale_owner_sends_nothing_more_and_its_outcomes_are_refused; the lease running
    out while its renewal fails is test_a_lease_whose_renewal_fails_runs_out_at_its_written_time.
    The 0.5 s reply is the server's slowness, not a stand-in for time passing; a renewal is
    due every 1.3 s and the heartbeat checks every 0.7 s, so only a sender stalled for
    about 2.7 s would lose its lease (then "taken over" in the logs fails the test)."""
    ids = queue_messages(session_factory, 30, T0)
    peer.delay = 0.5
    fast = {
        "TOUCHLINE_OUTREACH_LEASE_SECONDS": "4",
        "TOUCHLINE_OUTREACH_SEND_BATCH": "10",
        "TOUCHLINE_OUTREACH_TICK_SECONDS": "0.2",
        "TOUCHLINE_LOG_LEVEL": "INFO",
    }
    cmd = [sys.executable, "-m", "services.wiring.cli", "worker", "outreach-sender"]
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                cmd,
                env=sender_env(settings, "sender-a", tmp_path / "a", peer.port, **fast),
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "a.log", "wb"),
            )
        )
        wait_for(lambda: peer.count >= 1, 60, "the first sender delivering")
        procs.append(
            subprocess.Popen(
                cmd,
                env=sender_env(settings, "sender-b", tmp_path / "b", peer.port, **fast),
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "b.log", "wb"),
            )
        )
        wait_for(lambda: all(m.state == "sent" for m in messages(session_factory)), 240, "every message sent")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    accepted = peer.message_ids()
    assert sum(accepted.values()) == 30, logs[-3000:]
    assert set(accepted) == {f"<{mid}@touchline.example>" for mid in ids}
    assert max(accepted.values()) == 1
    assert all(m.attempts == 1 for m in messages(session_factory))
    assert "taken over" not in logs and "refused" not in logs


def test_a_stale_owner_sends_nothing_more_and_its_outcomes_are_refused(on_peer, session_factory, clock, peer):
    ids = queue_messages(session_factory, 2, clock.now())
    a = SenderWorker(on_peer("host-a"), session_factory, clock, worker_id="a")
    b = SenderWorker(on_peer("host-b"), session_factory, clock, worker_id="b")
    try:
        stale_claim = a.claim()[0]  # a claims, then stalls past its lease (it never renewed)
        clock.advance(timedelta(seconds=a.settings.outreach_lease_seconds + 1))
        assert b.recover() == 2  # a's journal is on another host: b takes the rows back ...
        claim = b.claim()[0]  # ... and claims them under a new token
        assert {m.id for m in claim.messages} == set(ids)

        assert a.send(stale_claim) == {}  # a wakes up: its renewal finds the rows gone; it sends nothing
        refused_before = STALE_OUTCOMES._value.get()
        # Had it sent something meanwhile, its outcome could not overwrite the new owner's rows.
        assert a.record(stale_claim, {ids[0]: None, ids[1]: DeliveryError("550 no", transient=False)}) == 2
        assert STALE_OUTCOMES._value.get() - refused_before == 2
        rows = messages(session_factory)
        assert {(m.state, m.lease_owner, m.lease_token) for m in rows} == {("sending", "b", claim.token)}

        assert b.record(claim, b.send(claim)) == 0
    finally:
        a.close()
        b.close()
    assert [(m.state, m.sent_at) for m in messages(session_factory)] == [("sent", clock.now())] * 2  # sent when recorded
    assert sorted(peer.message_ids().values()) == [1, 1]


def test_the_lease_is_renewed_while_its_owner_works(on_peer, session_factory, clock, peer):
    """Each reply takes 0.45 of the lease (on the simulated clock), so the batch outlasts
    its first lease; a rival looking for expired leases during the last message finds none."""
    queue_messages(session_factory, 3, clock.now())
    settings = on_peer()
    lease = timedelta(seconds=settings.outreach_lease_seconds)
    rival_saw: list[int] = []

    def slow_reply():
        clock.advance(lease * 0.45)
        with transaction(session_factory) as s:
            rival_saw.append(len(repo.stale_sending(s, now=clock.now(), owner="rival")))

    peer.on_data = slow_reply
    sender = SenderWorker(settings, session_factory, clock, worker_id="owner")
    try:
        sender.poll_once()
    finally:
        sender.close()
    assert rival_saw == [0, 0, 0]
    assert [m.state for m in messages(session_factory)] == ["sent"] * 3
    assert sorted(peer.message_ids().values()) == [1, 1, 1]


def test_a_lease_whose_renewal_fails_runs_out_at_its_written_time(on_peer, settings, db_kind, session_factory, clock, tmp_path):
    """Issue 25, gap 6: the database goes away while a sender holds a batch. Its renewals
    fail; it may keep starting messages only until the lease it last wrote runs out, which
    is exactly when a rival may take the rows over (never both, never neither)."""
    queue_messages(session_factory, 2, clock.now())
    owner = SenderWorker(on_peer(), session_factory, clock, worker_id="owner")
    try:
        claim = owner.claim()[0]
    finally:
        owner.close()
    seconds = settings.outreach_lease_seconds
    down = sessionmaker(unreachable_database(settings, db_kind, tmp_path))

    def rival_finds() -> int:
        with transaction(session_factory) as s:
            return len(repo.stale_sending(s, now=clock.now(), owner="rival"))

    with Lease(down, clock, token=claim.token, count=2, until=claim.lease_until, seconds=seconds) as lease:
        clock.advance(timedelta(seconds=seconds * 0.75))  # renewal due: it fails
        assert lease.held() and (lease.renewals, lease.until, lease.lost) == (0, claim.lease_until, False)
        clock.set(claim.lease_until - timedelta(milliseconds=1))
        assert lease.held() and rival_finds() == 0
        clock.set(claim.lease_until)
        assert not lease.held() and lease.renewals == 0
        assert rival_finds() == 0  # the rival's test is strict: past, not at, the lease
        clock.advance(timedelta(milliseconds=1))
        assert not lease.held() and rival_finds() == 2


def test_a_renewal_moves_the_written_lease_and_a_dead_owner_s_rows_come_back_after_it(on_peer, settings, session_factory, clock):
    """The renewal writes the new lease on the rows (not only in memory): an owner that
    dies after renewing is taken over when the renewed lease runs out, not before and not
    never. Driven by hand on the simulated clock (no heartbeat thread: no ``with``)."""
    queue_messages(session_factory, 2, clock.now())
    owner = SenderWorker(on_peer(), session_factory, clock, worker_id="owner")
    try:
        claim = owner.claim()[0]
    finally:
        owner.close()
    seconds = settings.outreach_lease_seconds
    lease = Lease(session_factory, clock, token=claim.token, count=2, until=claim.lease_until, seconds=seconds)

    def rival_finds() -> int:
        with transaction(session_factory) as s:
            return len(repo.stale_sending(s, now=clock.now(), owner="rival"))

    for n in (1, 2):
        clock.advance(timedelta(seconds=seconds * 0.75))  # past half the lease: due
        assert lease.held()
        renewed = clock.now() + timedelta(seconds=seconds)
        assert (lease.renewals, lease.until, lease.lost) == (n, renewed, False)
    assert lease.held()  # just renewed: not due again, and still held
    clock.set(renewed)  # the owner died after its second renewal
    assert rival_finds() == 0
    clock.advance(timedelta(milliseconds=1))
    assert rival_finds() == 2


def test_a_renewal_that_finds_a_row_taken_over_loses_the_whole_claim(on_peer, settings, session_factory, clock):
    """One of the two claimed rows now carries another sender's token: the renewal finds
    fewer rows than were claimed, so the claim is lost and no further message starts,
    although the lease it last wrote is still running."""
    ids = queue_messages(session_factory, 2, clock.now())
    owner = SenderWorker(on_peer(), session_factory, clock, worker_id="owner")
    try:
        claim = owner.claim()[0]
    finally:
        owner.close()
    with transaction(session_factory) as s:
        assert repo.renew_lease(s, token=claim.token, lease_until=claim.lease_until) == 2
        s.execute(update(Message).where(Message.id == ids[0]).values(lease_token="another-sender"))
    lease = Lease(session_factory, clock, token=claim.token, count=2, until=claim.lease_until, seconds=settings.outreach_lease_seconds)
    lease.renew()
    assert (lease.lost, lease.renewals, lease.until) == (True, 0, claim.lease_until)
    assert not lease.held()


def smtp(port: int, **config) -> SmtpSender:
    return SmtpSender(SmtpConfig(host="127.0.0.1", port=port, **config))


def test_the_final_dot_reply_has_its_own_longer_timeout(peer):
    """Real seconds, on purpose: what is under test is the socket timeout smtplib sets
    for the reply to the final dot (data_timeout) against the one for other commands
    (timeout), and a socket does not read the simulated clock. The margins are wide
    (a 3 s reply against 1.5 s and 30 s; against 1 s) so a loaded machine cannot flip them."""
    peer.delay = 3.0
    send_one(smtp(peer.port, timeout=1.5, data_timeout=30), "slow-ok")  # slower than a command may be: still fine
    with pytest.raises(DeliveryError) as err:
        send_one(smtp(peer.port, timeout=1.5, data_timeout=1.0), "too-slow")
    assert err.value.uncertain and "final dot" in err.value.detail
    assert peer.count == 2  # the server had it all along
    peer.delay, peer.reply = 0.0, "451 4.3.0 try later"
    with pytest.raises(DeliveryError) as err:
        send_one(smtp(peer.port, timeout=5, data_timeout=5), "refused")
    assert err.value.transient and not err.value.uncertain and err.value.code == 451  # a clear answer is not uncertain


async def test_a_lost_reply_to_the_final_dot_is_uncertain_reported_and_never_resent(on_peer, session_factory, clock, peer, api, keys):
    ids = queue_messages(session_factory, 2, clock.now())
    peer.drop_next = 1  # the first message is kept, then the connection drops instead of the 250
    uncertain_before = MESSAGES_DELIVERED.labels("email", "uncertain")._value.get()
    sender = SenderWorker(on_peer(), session_factory, clock, worker_id="s")
    try:
        sender.poll_once()
        [lost] = messages(session_factory, state="uncertain")  # the first one sent, whichever it was
        assert "final dot" in lost.last_error and lost.next_attempt_at is None and lost.lease_token is None
        assert [m.id for m in messages(session_factory, state="sent")] == [mid for mid in ids if mid != lost.id]
        assert MESSAGES_DELIVERED.labels("email", "uncertain")._value.get() - uncertain_before == 1
        clock.advance(timedelta(days=2))
        sender.poll_once()
        assert peer.count == 2  # never resent on its own

        r = await api.get("/v1/messages", params={"state": "uncertain"}, headers=auth(keys["ops"]))
        assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [lost.id]
        # An operator who checked the relay's log and found it missing sends it again.
        r = await api.post(f"/v1/messages/{lost.id}/retry", headers=auth(keys["ops"]))
        assert r.status_code == 200 and r.json()["state"] == "queued"
        sender.poll_once()
    finally:
        sender.close()
    assert [m.state for m in messages(session_factory)] == ["sent", "sent"]
    assert sorted(peer.message_ids().values()) == [1, 2]


def test_a_step_that_accepts_at_least_once_resends_after_a_lost_reply(on_peer, session_factory, clock, peer):
    [mid] = queue_messages(session_factory, 1, clock.now(), payload={"delivery": "at_least_once"})
    peer.drop_next = 1
    sender = SenderWorker(on_peer(), session_factory, clock, worker_id="s")
    try:
        sender.poll_once()
        [m] = messages(session_factory)
        assert m.state == "queued" and "final dot" in m.last_error and m.next_attempt_at > clock.now()
        clock.advance(timedelta(days=1))
        peer.on_data = lambda: clock.advance(timedelta(seconds=1))  # the reply comes a second after the claim
        sender.poll_once()
    finally:
        sender.close()
    [m] = messages(session_factory)
    assert (m.state, m.attempts) == ("sent", 2)
    # Sent clears what the failure and the claim left on the row: the error, the retry
    # time, the lease (owner, time, token); and it is stamped with the time it was recorded.
    assert (m.last_error, m.next_attempt_at, m.lease_owner, m.lease_until, m.lease_token) == (None,) * 5
    assert m.sent_at == m.updated_at == clock.now()
    assert peer.message_ids() == Counter({f"<{mid}@touchline.example>": 2})  # same Message-ID: the receiver can tell


def test_a_crash_after_the_final_dot_recovers_as_uncertain(on_peer, session_factory, clock, peer):
    settings = on_peer()
    dotted, accepted, untouched = queue_messages(session_factory, 3, clock.now())
    first = SenderWorker(settings, session_factory, clock, worker_id="crashy")
    claim = first.claim()[0]
    first.journal.committing(dotted, claim.token)  # the final dot went out; no reply before the crash
    first.journal.committing(accepted, claim.token)
    first.journal.accepted(accepted, claim.token)
    first.journal.accepted(untouched, "an-older-claim")  # a leftover line from another claim means nothing
    first.close()  # the process dies: the rows stay `sending`

    restarted = SenderWorker(settings, session_factory, clock, worker_id="crashy")
    try:
        assert restarted.recover() == 3
    finally:
        restarted.close()
    rows = {m.id: m for m in messages(session_factory)}
    assert rows[dotted].state == "uncertain"
    assert rows[accepted].state == "sent"
    assert rows[untouched].state == "queued"
    assert peer.count == 0


def test_one_live_sender_per_id(settings, session_factory, clock, monkeypatch):
    monkeypatch.delenv("TOUCHLINE_SENDER_ID", raising=False)
    one = SenderWorker(settings, session_factory, clock, worker_id="same")
    try:
        with pytest.raises(SenderIdInUse):
            SenderWorker(settings, session_factory, clock, worker_id="same")
        a = SenderWorker(settings, session_factory, clock)
        b = SenderWorker(settings, session_factory, clock)  # no id given: the second takes one of its own
        assert a.worker_id != b.worker_id and b.worker_id.endswith(f"-{os.getpid()}")
        a.close()
        b.close()
    finally:
        one.close()
