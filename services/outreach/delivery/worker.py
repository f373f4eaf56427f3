"""The sender: delivers queued email and webhook messages from the outbox.

One tick:
1. recover messages a dead sender left ``sending`` (see below);
2. claim a batch of due messages: mark them ``sending`` under a lease and COMMIT,
   so no other sender (or a restart) picks them up meanwhile;
3. deliver each one over a reused SMTP connection / HTTP client; after the peer
   accepts a message, append its id to this sender's journal file (an unbuffered
   O_APPEND write: it survives the process being killed);
4. record every outcome (sent; queued again with backoff; failed; suppressed) in
   one transaction, then truncate the journal.

Recovery of a ``sending`` row: if its id is in its sender's journal, the peer had
accepted it: it is marked ``sent`` and not sent again. Otherwise it goes back to
``queued``. The one window that can still repeat a send is a crash after the peer
took the final ``.`` of DATA and before its ``250`` reply reached the journal (or a
host loss that takes the journal with it): see docs/playbooks.md.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from services.outreach.channels import DeliveryError
from services.outreach.channels.smtp import SmtpConfig, SmtpSender, build_email
from services.outreach.channels.webhook import WebhookSender, body_for
from services.outreach.delivery import repository as repo
from services.outreach.delivery import service
from services.outreach.models import Message
from services.outreach.policy import repository as policy_repo
from services.outreach.policy.tokens import email_hash
from shared import faults
from shared.clock import Clock, SystemClock
from shared.db import transaction
from shared.metrics import MESSAGES_DELIVERED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_SAMPLE_SECONDS

log = logging.getLogger(__name__)


class Journal:
    """Ids of messages the peer has accepted but the database may not know yet."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @staticmethod
    def read(path: Path) -> set[str]:
        try:
            return {line for line in path.read_text().split("\n") if line}
        except FileNotFoundError:
            return set()

    def append(self, message_id: str) -> None:
        os.write(self._fd, (message_id + "\n").encode())

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


class SenderWorker:
    name = "outreach-sender"

    def __init__(self, settings, session_factory: sessionmaker[Session], clock: Clock | None = None,
                 worker_id: str | None = None, smtp: SmtpSender | None = None, webhooks: WebhookSender | None = None):
        self.settings = settings
        self.session_factory = session_factory
        self.clock = clock or SystemClock()
        self.worker_id = worker_id or os.environ.get("TOUCHLINE_SENDER_ID") or f"{socket.gethostname()}-sender"
        self.smtp = smtp or SmtpSender(SmtpConfig.from_url(settings.effective_smtp_url, settings.smtp_timeout_seconds))
        self.webhooks = webhooks or WebhookSender(settings)
        self.journal = Journal(self.journal_path(self.worker_id))
        self.stop_event = threading.Event()
        self._channels: dict[str, str] = {}
        self._next_backlog_sample = None

    def journal_path(self, owner: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)
        return self.settings.var_dir / "outreach" / f"sender-{safe}.journal"

    # ---- lifecycle ----------------------------------------------------
    def run(self) -> None:
        log.info("%s %s delivering (SMTP %s)", self.name, self.worker_id, self.settings.effective_smtp_url.split("@")[-1])
        try:
            while not self.stop_event.is_set():
                if self.poll_once() == 0:
                    self.stop_event.wait(self.settings.outreach_tick_seconds)
        finally:
            self.close()

    def close(self) -> None:
        self.smtp.close()
        self.webhooks.close()
        self.journal.close()

    # ---- one tick -----------------------------------------------------
    def poll_once(self, timeout_ms: int | None = None) -> int:
        self.recover()
        self._maybe_sample_backlog()
        now = self.clock.now()
        with transaction(self.session_factory) as session:
            batch = repo.claim_due(session, now=now, limit=self.settings.outreach_send_batch, owner=self.worker_id,
                                   lease_until=now + timedelta(seconds=self.settings.outreach_lease_seconds))
            # Suppression is checked again at send time: someone may have unsubscribed since the step ran.
            blocked = policy_repo.suppressed(session, [email_hash(m.recipient) for m in batch if m.channel == "email"])
            skipped = [m for m in batch if m.channel == "email" and email_hash(m.recipient) in blocked]
            for m in repo.get_many(session, [m.id for m in skipped]):
                service.record_skip(m, "suppressed", now)
            batch = [m for m in batch if m not in skipped]
        if not batch:
            return len(skipped)
        outcomes: dict[str, DeliveryError | None] = {}
        self._channels = {m.id: m.channel for m in batch}
        for m in batch:
            outcomes[m.id] = self._deliver(m)
        faults.point(f"{self.name}.before_record")
        self._record(outcomes)
        return len(batch) + len(skipped)

    def _maybe_sample_backlog(self) -> None:
        """The due backlog and how late its oldest message is: the autoscaler's signal
        (deploy/kubernetes: KEDA scales senders on it) and the OutboxStuck alert's."""
        now = self.clock.now()
        if self._next_backlog_sample is not None and now < self._next_backlog_sample:
            return
        with transaction(self.session_factory) as session:
            count, earliest = repo.due_backlog(session, now)
        OUTBOX_BACKLOG.labels("messages").set(count)
        OUTBOX_OLDEST_AGE.labels("messages").set(max(0.0, (now - earliest).total_seconds()) if earliest else 0.0)
        self._next_backlog_sample = now + timedelta(seconds=OUTBOX_SAMPLE_SECONDS)

    def _deliver(self, m: Message) -> DeliveryError | None:
        now = self.clock.now()
        try:
            if m.channel == "email":
                msg = build_email(key=m.id, mail_from=self.settings.mail_from, mail_from_name=self.settings.mail_from_name,
                                  to=m.recipient, subject=m.subject, text_body=m.text_body, html_body=m.html_body,
                                  unsubscribe_url=(m.payload or {}).get("unsubscribe_url"), date=now,
                                  extra_headers={"X-Touchline-Message": m.id, "X-Touchline-Playbook": m.playbook_id or ""})
                self.smtp.send(msg, self.settings.mail_from, m.recipient)
            elif m.channel == "webhook":
                payload = dict(m.payload or {})
                body = body_for(payload.get("body", {}), payload.get("format", "json"), m.text_body)
                self.webhooks.send(url=m.recipient, body=body, key=m.id, at=now)
            else:
                return DeliveryError(f"channel {m.channel!r} is not delivered by the sender", transient=False)
        except DeliveryError as err:
            log.warning("%s: %s message %s to %s: %s", self.name, m.channel, m.id, _redact(m), err.detail)
            return err
        self.journal.append(m.id)
        return None

    def _record(self, outcomes: dict[str, DeliveryError | None]) -> None:
        now = self.clock.now()
        sent = [mid for mid, err in outcomes.items() if err is None]
        with transaction(self.session_factory) as session:
            repo.mark_sent(session, sent, now)
            for m in repo.get_many(session, [mid for mid, err in outcomes.items() if err is not None]):
                state = service.record_failure(session, m, outcomes[m.id], now, self.settings)
                MESSAGES_DELIVERED.labels(m.channel, "retry" if state == "queued" else "failed").inc()
        for channel in {c for c in self._channels.values()}:
            MESSAGES_DELIVERED.labels(channel, "sent").inc(sum(1 for mid in sent if self._channels.get(mid) == channel))
        self._channels.clear()
        self.journal.truncate()

    def recover(self) -> int:
        now = self.clock.now()
        with transaction(self.session_factory) as session:
            stale = repo.stale_sending(session, now=now, owner=self.worker_id)
            if not stale:
                return 0
            journals: dict[str, set[str]] = {}
            for m in stale:
                owner = m.lease_owner or ""
                if owner not in journals:
                    journals[owner] = Journal.read(self.journal_path(owner))
                if m.id in journals[owner]:
                    service.record_sent(m, now)
                    log.warning("%s: message %s was accepted before a crash; recorded as sent, not resent", self.name, m.id)
                else:
                    m.state, m.next_attempt_at, m.lease_owner, m.lease_until, m.updated_at = "queued", now, None, None, now
                    m.last_error = "sender stopped before the peer accepted this message; retrying"
                    log.warning("%s: message %s was interrupted before acceptance; queued again", self.name, m.id)
        if self.worker_id in journals:
            self.journal.truncate()
        return len(stale)


def _redact(m: Message) -> str:
    if m.channel == "email":
        local, _, domain = m.recipient.partition("@")
        return f"{local[:1]}***@{domain}"
    return m.recipient.split("?")[0]
