"""The sender: delivers queued email and webhook messages from the outbox.

One tick:
1. recover messages a dead sender left ``sending`` (see below);
2. claim a batch of due messages: mark them ``sending`` under a lease and a fresh
   fencing token, and COMMIT, so no other sender (or a restart) picks them up meanwhile;
3. deliver each one over a reused SMTP connection / HTTP client, renewing the lease
   as it goes (``lease.py``) and stopping if the claim was lost. Just before SMTP's
   final dot the sender journals ``D <id> <token>``; after the peer accepts, ``A <id>
   <token>`` (unbuffered O_APPEND writes: they survive the process being killed);
4. record every outcome (sent; queued again with backoff; failed; uncertain;
   suppressed) in one transaction, only for rows still holding the claim's token,
   put back what was never attempted, then truncate the journal.

Recovery of a ``sending`` row, by the same sender id at once (the journal's file lock
proves no other live process has that id) or by anyone once the lease has run out and
no live process on this host holds the owner's journal: ``A`` for the row's token means
the peer accepted it: ``sent``, not sent again; ``D`` without ``A`` means the final dot
may have reached the peer: ``uncertain`` for email (unless its step accepts
at-least-once); nothing means it was never committed: back to ``queued``. What can
still repeat a send is in docs/playbooks.md ("Delivery guarantees").
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from services.outreach.channels import DeliveryError
from services.outreach.channels.smtp import SmtpConfig, SmtpSender, build_email
from services.outreach.channels.webhook import WebhookSender, body_for
from services.outreach.delivery import repository as repo
from services.outreach.delivery import service
from services.outreach.delivery.lease import Lease
from services.outreach.models import Message
from services.outreach.policy import repository as policy_repo
from services.outreach.policy.tokens import email_hash
from shared import faults
from shared.clock import Clock
from shared.db import transaction
from shared.metrics import MESSAGES_DELIVERED, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_SAMPLE_SECONDS, STALE_OUTCOMES
from shared.settings import Settings
from shared.worker import PeriodicWorker

log = logging.getLogger(__name__)


class SenderIdInUse(RuntimeError):
    pass


@dataclass(frozen=True)
class JournalEntries:
    committing: frozenset[tuple[str, str]]  # (message id, claim token): the final dot was (about to be) sent
    accepted: frozenset[tuple[str, str]]  # the peer answered 250


@dataclass
class Claim:
    token: str
    messages: list[Message]
    lease_until: datetime


class Journal:
    """What this sender handed to its peers under which claim, for messages the
    database may not know about yet. The file is locked (flock) for the life of the
    process: a second live sender with the same id is refused, and a recovering sender
    can tell a live owner on this host from a dead one."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SenderIdInUse(f"another live sender holds {path}; give each sender its own TOUCHLINE_SENDER_ID") from None

    @staticmethod
    def read(path: Path) -> JournalEntries:
        committing: set[tuple[str, str]] = set()
        accepted: set[tuple[str, str]] = set()
        try:
            lines = path.read_text().split("\n")
        except FileNotFoundError:
            lines = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            mid, _, token = rest.partition(" ")
            if token:
                (accepted if kind == "A" else committing).add((mid, token))
        return JournalEntries(frozenset(committing), frozenset(accepted))

    @staticmethod
    def in_use(path: Path) -> bool:
        """Whether a live process on this host holds the journal at ``path``."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def committing(self, message_id: str, token: str) -> None:
        os.write(self._fd, f"D {message_id} {token}\n".encode())

    def accepted(self, message_id: str, token: str) -> None:
        os.write(self._fd, f"A {message_id} {token}\n".encode())

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        os.close(self._fd)


class SenderWorker(PeriodicWorker):
    name = "outreach-sender"

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        clock: Clock | None = None,
        worker_id: str | None = None,
        smtp: SmtpSender | None = None,
        webhooks: WebhookSender | None = None,
    ):
        super().__init__(settings, session_factory, clock)
        explicit = worker_id or settings.sender_id
        self.worker_id = explicit or f"{socket.gethostname()}-sender"
        try:
            self.journal = Journal(self.journal_path(self.worker_id))
        except SenderIdInUse:
            if explicit:
                raise
            # A second sender on this host without an id of its own: one per process.
            self.worker_id = f"{self.worker_id}-{os.getpid()}"
            self.journal = Journal(self.journal_path(self.worker_id))
        self.smtp = smtp or SmtpSender(SmtpConfig.from_settings(settings))
        self.webhooks = webhooks or WebhookSender(settings)
        self._next_backlog_sample: datetime | None = None

    def journal_path(self, owner: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)
        return self.settings.var_dir / "outreach" / f"sender-{safe}.journal"

    # ---- lifecycle (the loop is PeriodicWorker's) ---------------------
    def interval(self) -> float:
        return self.settings.outreach_send_poll_seconds

    def describe(self) -> str:
        return f"as {self.worker_id}, delivering over SMTP {self.settings.effective_smtp_url.split('@')[-1]}"

    def close(self) -> None:
        self.smtp.close()
        self.webhooks.close()
        self.journal.close()

    # ---- one tick -----------------------------------------------------
    def poll_once(self, timeout_ms: int | None = None) -> int:
        self.recover()
        self._maybe_sample_backlog()
        claim, skipped = self.claim()
        if not claim.messages:
            return skipped
        outcomes = self.send(claim)
        faults.point(f"{self.name}.before_record")
        self.record(claim, outcomes)
        return len(outcomes) + skipped

    def claim(self) -> tuple[Claim, int]:
        """Claim a batch under a fresh token; suppressed recipients, and the messages of a
        cancelled broadcast, are skipped at once. Returns the claim (possibly empty) and how
        many were skipped."""
        now = self.clock.now()
        token = str(uuid.uuid4())
        lease_until = now + timedelta(seconds=self.settings.outreach_lease_seconds)
        with transaction(self.session_factory) as session:
            batch = repo.claim_due(
                session, now=now, limit=self.settings.outreach_send_batch, owner=self.worker_id, lease_until=lease_until, token=token
            )
            # Suppression is checked again at send time: someone may have unsubscribed since the step ran.
            blocked = policy_repo.suppressed(session, [email_hash(m.recipient) for m in batch if m.channel == "email"])
            skipped = {m.id for m in batch if m.channel == "email" and email_hash(m.recipient) in blocked}
            for m in repo.get_many(session, skipped):
                service.record_skip(m, "suppressed", now)
            # So is a cancelled broadcast: its cancel withdrew what was queued, but a message a
            # sender held then may have been put back since (released unattempted, or a retry).
            cancelled = repo.cancelled_broadcasts(session, {m.broadcast_id for m in batch if m.broadcast_id})
            withdrawn = {m.id for m in batch if m.broadcast_id in cancelled and m.id not in skipped}
            for m in repo.get_many(session, withdrawn):
                service.record_skip(m, "cancelled", now)
            skipped |= withdrawn
        return Claim(token, [m for m in batch if m.id not in skipped], lease_until), len(skipped)

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

    def send(self, claim: Claim) -> dict[str, DeliveryError | None]:
        """Deliver the claim's messages in order while its lease is held; stop at the
        first sign that it was lost. Messages not attempted are absent from the result."""
        outcomes: dict[str, DeliveryError | None] = {}
        with Lease(
            self.session_factory,
            self.clock,
            token=claim.token,
            count=len(claim.messages),
            until=claim.lease_until,
            seconds=self.settings.outreach_lease_seconds,
        ) as lease:
            for m in claim.messages:
                if not lease.held():
                    log.error(
                        "%s %s: lost the lease of its batch; %d messages left for their new owner",
                        self.name,
                        self.worker_id,
                        len(claim.messages) - len(outcomes),
                    )
                    break
                outcomes[m.id] = self._deliver(m, claim.token)
        return outcomes

    def _deliver(self, m: Message, token: str) -> DeliveryError | None:
        now = self.clock.now()
        try:
            if m.channel == "email":
                msg = build_email(
                    key=m.id,
                    mail_from=self.settings.mail_from,
                    mail_from_name=self.settings.mail_from_name,
                    to=m.recipient,
                    subject=m.subject,
                    text_body=m.text_body,
                    html_body=m.html_body,
                    unsubscribe_url=(m.payload or {}).get("unsubscribe_url"),
                    date=now,
                    extra_headers={"X-Touchline-Message": m.id, "X-Touchline-Playbook": m.playbook_id or ""},
                )
                self.smtp.send(msg, self.settings.mail_from, m.recipient, committing=lambda: self.journal.committing(m.id, token))
            elif m.channel == "webhook":
                payload = dict(m.payload or {})
                body = body_for(payload.get("body", {}), payload.get("format", "json"), m.text_body)
                self.webhooks.send(url=m.recipient, body=body, key=m.id, at=now)
            else:
                return DeliveryError(f"channel {m.channel!r} is not delivered by the sender", transient=False)
        except DeliveryError as err:
            log.warning("%s: %s message %s to %s: %s", self.name, m.channel, m.id, _redact(m), err.detail)
            return err
        self.journal.accepted(m.id, token)
        return None

    def record(self, claim: Claim, outcomes: dict[str, DeliveryError | None]) -> int:
        """Record the outcomes the claim still owns; put back the messages never attempted.
        Returns how many outcomes were refused because another sender took their rows over."""
        now = self.clock.now()
        channels = {m.id: m.channel for m in claim.messages}
        sent = [mid for mid, err in outcomes.items() if err is None]
        errors = {mid: err for mid, err in outcomes.items() if err is not None}
        failed = list(errors)
        with transaction(self.session_factory) as session:
            recorded = repo.mark_sent(session, sent, now, claim.token)
            held = repo.held_by(session, failed, claim.token)
            for m in held:
                err = errors[m.id]
                if err.uncertain and not service.resend_if_uncertain(m):
                    service.record_uncertain(m, err.detail, now)
                    outcome = "uncertain"
                    log.error("%s: %s message %s: outcome uncertain, not resent: %s", self.name, m.channel, m.id, err.detail)
                else:
                    outcome = "retry" if service.record_failure(session, m, err, now, self.settings) == "queued" else "failed"
                MESSAGES_DELIVERED.labels(m.channel, outcome).inc()
            repo.release(session, [m.id for m in claim.messages if m.id not in outcomes], now, claim.token)
        for channel in set(channels.values()):
            MESSAGES_DELIVERED.labels(channel, "sent").inc(sum(1 for mid in sent if channels[mid] == channel))
        refused = len(sent) - recorded + len(failed) - len(held)
        if refused:
            STALE_OUTCOMES.inc(refused)
            log.error(
                "%s %s: %d outcomes refused: another sender took over their messages while this one held "
                "them (accepted ones may be sent again by the new owner)",
                self.name,
                self.worker_id,
                refused,
            )
        self.journal.truncate()
        return refused

    def recover(self) -> int:
        now = self.clock.now()
        recovered = 0
        own_seen = False
        with transaction(self.session_factory) as session:
            stale = repo.stale_sending(session, now=now, owner=self.worker_id)
            if not stale:
                return 0
            journals: dict[str, JournalEntries | None] = {}
            for m in stale:
                owner = m.lease_owner or ""
                if owner not in journals:
                    path = self.journal_path(owner)
                    # An expired lease whose owner still runs on this host: it is alive (cut off
                    # from the database, or stuck); its fenced claim is not ours to resend.
                    alive = owner != self.worker_id and Journal.in_use(path)
                    journals[owner] = None if alive else Journal.read(path)
                entries = journals[owner]
                if entries is None:
                    continue
                own_seen |= owner == self.worker_id
                recovered += 1
                key = (m.id, m.lease_token or "")
                if key in entries.accepted:
                    service.record_sent(m, now)
                    log.warning("%s: message %s was accepted before a crash; recorded as sent, not resent", self.name, m.id)
                elif key in entries.committing and not service.resend_if_uncertain(m):
                    service.record_uncertain(
                        m, "the sender stopped after the final dot of DATA and before the reply: the peer may have the message", now
                    )
                    MESSAGES_DELIVERED.labels(m.channel, "uncertain").inc()
                    log.error("%s: message %s: sender stopped while the peer committed it; outcome uncertain, not resent", self.name, m.id)
                else:
                    m.state, m.next_attempt_at, m.lease_owner, m.lease_until, m.lease_token, m.updated_at = (
                        "queued",
                        now,
                        None,
                        None,
                        None,
                        now,
                    )
                    m.last_error = "sender stopped before the peer accepted this message; retrying"
                    log.warning("%s: message %s was interrupted before acceptance; queued again", self.name, m.id)
        if own_seen:
            self.journal.truncate()
        return recovered


def _redact(m: Message) -> str:
    if m.channel == "email":
        local, _, domain = m.recipient.partition("@")
        return f"{local[:1]}***@{domain}"
    return m.recipient.split("?")[0]
