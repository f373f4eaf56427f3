"""The outbox and the sender against the real SMTP sink, the real broker and both
databases: exact messages with correct MIME and headers, retries, bounces, a sender
killed between the SMTP exchange and the database record, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from services.outreach.channels import DeliveryError
from services.outreach.channels.smtp import SmtpConfig, SmtpSender
from services.outreach.channels.webhook import verify, webhook_secret
from services.outreach.delivery.service import message_key
from services.outreach.delivery.worker import SenderWorker
from services.outreach.devmail.sink import SinkHandler
from services.outreach.models import Suppression
from services.outreach.policy.tokens import email_hash
from shared.broker import free_port
from shared.faults import CRASH_EXIT_CODE
from tests.support.helpers import auth, drain
from tests.support.outreach import (
    add_account,
    days,
    enrol_in_win_back,
    messages,
    save_playbook,
    save_template,
    send_signals,
    signal,
    simple_playbook,
)


def sent_count(session_factory) -> int:
    return sum(1 for m in messages(session_factory) if m.state == "sent")


async def test_a_signal_sends_exactly_the_playbook_messages_with_correct_mime(topics, session_factory, sink, workers, api, keys):
    add_account(session_factory)
    sig = signal(signal_id="sig-1")
    w = enrol_in_win_back(topics, session_factory, workers, sig, sig)  # the same signal twice: one enrolment, two messages
    drain(w["sender"], lambda: len(sink.messages) >= 2)
    w["signals"].poll_once(300)
    w["sender"].poll_once()

    assert sorted(str(m["To"]) for m in sink.messages) == ["ada@acme.test", "bob@acme.test"]
    rows = {m.recipient: m for m in messages(session_factory)}
    assert all(m.state == "sent" and m.attempts == 1 for m in rows.values())
    ada = next(m for m in sink.messages if str(m["To"]) == "ada@acme.test")
    key = rows["ada@acme.test"].id
    assert ada["Message-ID"] == f"<{key}@touchline.example>"
    assert ada["Subject"] == "Ada, Acme Inc misses you"
    assert ada.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ada.iter_parts()] == ["text/plain", "text/html"]
    assert ada["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = ada["List-Unsubscribe"].strip("<>")
    assert unsub.startswith("http://touchline.test/unsubscribe/")
    assert unsub in ada.get_body(("plain",)).get_content()
    assert "Ada &mdash; Acme Inc" in ada.get_body(("html",)).get_content()
    assert ada["From"] == "The Touchline team <success@touchline.example>"
    # Connection reuse: both messages went over one SMTP session.
    assert w["sender"].smtp.connections_opened == 1

    r = await api.get("/v1/dev/mail", headers=auth(keys["ops"]))
    assert r.status_code == 200 and r.json()["count"] == 2
    assert {i["to"] for i in r.json()["items"]} == {"ada@acme.test", "bob@acme.test"}
    r = await api.get("/v1/messages", params={"state": "sent", "playbook_id": "win-back"}, headers=auth(keys["ops"]))
    assert len(r.json()["items"]) == 2


def test_smtp_refusing_then_recovering_retries_with_backoff(topics, session_factory, workers, clock):
    from services.outreach.devmail.sink import MailSink

    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)

    w["sender"].poll_once()  # nobody listens: connection refused, a transient failure
    rows = messages(session_factory)
    assert all(m.state == "queued" and m.attempts == 1 and "cannot connect" in m.last_error for m in rows)
    assert all(m.next_attempt_at > clock.now() for m in rows)
    w["sender"].poll_once()  # not due yet: nothing happens
    assert all(m.attempts == 1 for m in messages(session_factory))

    with MailSink(topics.mail_dir, topics.mail_sink_host, topics.mail_sink_port) as sink:
        sink.handler.fail_next(2)  # the relay is up but answers 451 to both
        clock.advance(days(1))
        w["sender"].poll_once()
        rows = messages(session_factory)
        assert all(m.state == "queued" and m.attempts == 2 and "451" in m.last_error for m in rows)
        clock.advance(days(1))
        w["sender"].poll_once()
        assert [m.state for m in messages(session_factory)] == ["sent", "sent"]
        assert len(sink.messages) == 2


def test_transient_failures_give_up_visibly_after_the_limit(topics, session_factory, workers, clock):
    add_account(session_factory, users={"ada": {"email": "ada@acme.test", "name": "Ada", "role": "champion"}})
    save_template(session_factory, topics)
    save_playbook(session_factory, "win-back", simple_playbook())
    w = workers()
    send_signals(topics, [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 1)
    for _ in range(topics.outreach_max_attempts):
        w["sender"].poll_once()
        clock.advance(days(1))
    [m] = messages(session_factory)
    assert m.state == "failed" and m.attempts == topics.outreach_max_attempts
    assert m.last_error.startswith(f"gave up after {topics.outreach_max_attempts} attempts")


def test_permanent_rejection_fails_at_once_and_suppresses_the_address(topics, session_factory, sink, workers, clock):
    add_account(
        session_factory,
        users={
            "ada": {"email": "ada@acme.test", "name": "Ada", "role": "champion"},
            "bo": {"email": "bounce-bo@acme.test", "name": "Bo", "role": "admin"},
        },
    )
    w = enrol_in_win_back(topics, session_factory, workers)
    w["sender"].poll_once()
    rows = {m.recipient: m for m in messages(session_factory)}
    assert rows["ada@acme.test"].state == "sent"
    bounced = rows["bounce-bo@acme.test"]
    assert bounced.state == "failed" and bounced.attempts == 1 and "550" in bounced.last_error
    with session_factory() as s:
        assert s.get(Suppression, email_hash("bounce-bo@acme.test")).reason == "hard_bounce"
    # The SMTP session survived the refusal (RSET) and the good message went through it.
    assert w["sender"].smtp.connections_opened == 1 and [str(m["To"]) for m in sink.messages] == ["ada@acme.test"]


def test_sender_killed_between_smtp_and_the_record_never_sends_twice(topics, session_factory, sink, workers, broker):
    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_DATABASE_URL": topics.database_url,
            "TOUCHLINE_VAR_DIR": str(topics.var_dir),
            "TOUCHLINE_KAFKA_BOOTSTRAP": topics.kafka_bootstrap,
            "TOUCHLINE_TOPIC_PREFIX": topics.topic_prefix,
            "TOUCHLINE_MAIL_SINK_PORT": str(topics.mail_sink_port),
            "TOUCHLINE_SENDER_ID": "crashy",
            "TOUCHLINE_FAULT": "outreach-sender.before_record",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "services.wiring.cli", "worker", "outreach-sender"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert len(sink.messages) == 2  # the peer has both messages ...
    assert {m.state for m in messages(session_factory)} == {"sending"}  # ... the database does not know yet

    restarted = SenderWorker(topics, session_factory, w["sender"].clock, worker_id="crashy")
    try:
        restarted.poll_once()
        restarted.poll_once()
    finally:
        restarted.close()
    assert [m.state for m in messages(session_factory)] == ["sent", "sent"]
    assert len(sink.messages) == 2  # recovered from the journal, not sent again


def test_an_interrupted_claim_without_acceptance_is_sent_once(topics, session_factory, sink, workers, clock):
    """A sender that died after claiming but before the peer accepted anything: the
    messages go back to the queue and are delivered exactly once."""
    from services.outreach.delivery import repository as repo
    from shared.db import transaction

    add_account(session_factory)
    w = enrol_in_win_back(topics, session_factory, workers)
    with transaction(session_factory) as s:
        repo.claim_due(s, now=clock.now(), limit=10, owner="dead-sender", lease_until=clock.now() + days(1 / 288), token="dead-claim")
    w["sender"].poll_once()
    assert len(sink.messages) == 0  # the dead sender's lease still holds
    clock.advance(days(1 / 144))
    w["sender"].poll_once()
    w["sender"].poll_once()
    assert [m.state for m in messages(session_factory)] == ["sent", "sent"] and len(sink.messages) == 2


# ---- webhooks ------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    mode = {"status": 200, "delay": 0.0}

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.mode["delay"])  # a slow receiver, to exercise the client timeout
        self.received.append((dict(self.headers), body))
        self.send_response(self.mode["status"])
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    _Hook.received = []
    _Hook.mode = {"status": 200, "delay": 0.0}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _Hook
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fmt", ["json", "slack"])
def test_webhook_is_signed_and_retried_after_timeouts_and_5xx(topics, session_factory, workers, clock, hook_server, fmt):
    server, hook = hook_server
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    topics = topics.model_copy(update={"webhook_timeout_seconds": 0.3, "webhook_secret": "whsec-independent"})
    add_account(session_factory)
    save_template(session_factory, topics)
    save_playbook(
        session_factory,
        "notify",
        {
            "name": "Notify CS",
            "trigger": {"kinds": ["churn_risk"]},
            "steps": [{"type": "send", "channel": "webhook", "url": url, "format": fmt, "template": "win-back"}],
        },
    )
    from services.outreach.delivery.worker import SenderWorker
    from services.outreach.playbooks.worker import SignalWorker

    consumer = SignalWorker(topics, session_factory, clock)
    sender = SenderWorker(topics, session_factory, clock, worker_id="hooks")
    try:
        send_signals(topics, [signal()])
        drain(consumer, lambda: len(messages(session_factory)) == 1)
        hook.mode.update(delay=1.0)
        sender.poll_once()  # times out
        [m] = messages(session_factory)
        assert m.state == "queued" and "timed out" in m.last_error
        hook.mode.update(delay=0.0, status=503)
        clock.advance(days(1))
        sender.poll_once()
        [m] = messages(session_factory)
        assert m.state == "queued" and "503" in m.last_error
        hook.mode.update(status=200)
        clock.advance(days(1))
        signed_at = clock.now()
        sender.poll_once()
        [m] = messages(session_factory)
        assert m.state == "sent" and m.attempts == 3
    finally:
        consumer.close()
        sender.close()
    headers, body = hook.received[-1]
    # Checked the way a receiver would, without our own verify(): HMAC-SHA256 over "<t>.<body>"
    # with the configured secret, and t the (simulated) time of this attempt, not of the first.
    fields = dict(part.split("=", 1) for part in headers["X-Touchline-Signature"].split(","))
    assert set(fields) == {"t", "v1"}
    assert int(fields["t"]) == int(signed_at.timestamp())
    expected = hmac.new(b"whsec-independent", fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert verify(webhook_secret(topics), body, headers["X-Touchline-Signature"])
    assert not verify(webhook_secret(topics), body + b" ", headers["X-Touchline-Signature"])
    assert not verify(b"another-secret", body, headers["X-Touchline-Signature"])
    assert headers["Idempotency-Key"] == m.id
    payload = json.loads(body)
    if fmt == "slack":
        assert set(payload) == {"text"} and "Acme Inc misses you" in payload["text"]
    else:
        assert payload["event"] == "touchline.playbook.step" and payload["account"]["id"] == "acme"
        assert payload["signal"]["rule_id"] == "no-login-14d"


def test_webhook_4xx_is_permanent(topics, session_factory, workers, clock, hook_server):
    server, hook = hook_server
    hook.mode.update(status=410)
    add_account(session_factory)
    save_playbook(
        session_factory,
        "notify",
        {
            "name": "Notify",
            "trigger": {"kinds": ["churn_risk"]},
            "steps": [{"type": "send", "channel": "webhook", "url": f"http://127.0.0.1:{server.server_address[1]}/gone"}],
        },
    )
    w = workers()
    send_signals(topics, [signal()])
    drain(w["signals"], lambda: len(messages(session_factory)) == 1)
    w["sender"].poll_once()
    [m] = messages(session_factory)
    assert m.state == "failed" and m.attempts == 1 and "410" in m.last_error


def test_an_idle_sender_polls_again_after_its_own_short_interval(topics, session_factory, clock):
    """A queued email waits for the sender's next poll, so the sender's idle wait bounds its
    share of event -> email latency (docs/performance.md, "End-to-end latency"): it is
    TOUCHLINE_OUTREACH_SEND_POLL_SECONDS (0.25 s), not the timers' tick (1 s)."""
    sender = SenderWorker(topics, session_factory, clock, worker_id="test-idle-sender")
    waits: list[float | None] = []

    def wait(timeout: float | None = None) -> bool:  # the loop's pause, recorded; then stop
        waits.append(timeout)
        sender.stop_event.set()
        return True

    sender.stop_event.wait = wait  # type: ignore[method-assign]
    sender.run()  # one idle poll (nothing queued), then the pause; run() closes the sender
    assert waits == [0.25] and topics.outreach_send_poll_seconds == 0.25 < topics.outreach_tick_seconds


def test_message_keys_are_deterministic():
    assert message_key("e", "s", "Ada@x.test") == message_key("e", "s", "ada@x.test")
    assert message_key("e", "s", "a@x.test") != message_key("e", "s2", "a@x.test")


class _NoPipeliningSink(SinkHandler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return responses


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_the_envelope_is_judged_reply_by_reply_pipelined_or_not(tmp_path, pipelining):
    """MAIL, RCPT and DATA go in one write where the server offers PIPELINING (RFC 2920),
    one at a time where it does not; either way each reply is judged in order, and the
    connection carries on after a refusal: a refused recipient is a bounce, a 451 a
    transient failure, and the next message goes through on the same connection."""
    handler = (SinkHandler if pipelining else _NoPipeliningSink)(tmp_path / "mail")
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    sender = SmtpSender(SmtpConfig.from_url(f"smtp://127.0.0.1:{controller.port}"))
    try:
        sender.send(b"Subject: one\r\n\r\n.a dot-stuffed line\r\n", "cs@touchline.test", "ada@acme.test")
        assert sender._connection().has_extn("pipelining") is pipelining
        with pytest.raises(DeliveryError) as bounced:
            sender.send(b"Subject: two\r\n\r\nhi\r\n", "cs@touchline.test", "bounce-me@acme.test")
        assert (bounced.value.bounce, bounced.value.code) == (True, 550)
        handler.fail_next(1)
        with pytest.raises(DeliveryError) as busy:
            sender.send(b"Subject: three\r\n\r\nhi\r\n", "cs@touchline.test", "bob@acme.test")
        assert (busy.value.transient, busy.value.bounce, busy.value.code) == (True, False, 451)
        sender.send(b"Subject: four\r\n\r\nhi\r\n", "cs@touchline.test", "cy@acme.test")
    finally:
        sender.close()
        controller.stop()
    assert handler.envelopes == [("cs@touchline.test", ["ada@acme.test"]), ("cs@touchline.test", ["cy@acme.test"])]
    assert [raw.split(b"\r\n", 1)[0] for raw in handler.raw] == [b"Subject: one", b"Subject: four"]
    assert b"\r\n.a dot-stuffed line\r\n" in handler.raw[0]
    assert sender.connections_opened == 1
