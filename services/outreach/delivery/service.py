"""Outbox rules: idempotency keys, retry schedule, and what each delivery outcome
does to a message row."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from services.outreach.channels import DeliveryError
from services.outreach.models import Message
from services.outreach.policy import repository as policy_repo
from services.outreach.policy.tokens import email_hash
from shared.ids import uuid5
from shared.settings import Settings

NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4d59-9f0b-5d7a3e0f2a11")


def message_key(enrollment_id: str, step_id: str, recipient: str) -> str:
    """The idempotency key of a message: the same enrolment, step and recipient always
    give the same id, so redoing a step (a redelivered signal, a timer run twice) is a no-op."""
    return uuid5(NAMESPACE, f"{enrollment_id}\x1f{step_id}\x1f{recipient.lower()}")


def backoff(attempts: int, key: str, settings: Settings) -> timedelta:
    """Exponential backoff with jitter: base * 2^(attempts-1), capped, times a factor in
    [0.5, 1.0) drawn from the message id and attempt (deterministic, so replays agree,
    but spread across messages so a recovering relay is not hit all at once)."""
    raw = min(settings.outreach_retry_max_seconds, settings.outreach_retry_base_seconds * 2 ** max(0, attempts - 1))
    jitter = 0.5 + 0.5 * random.Random(f"{key}:{attempts}").random()
    return timedelta(seconds=raw * jitter)


AT_LEAST_ONCE = "at_least_once"


def _unlease(m: Message, now: datetime) -> None:
    m.lease_owner, m.lease_until, m.lease_token, m.updated_at = None, None, None, now


def record_sent(m: Message, now: datetime) -> None:
    m.state, m.sent_at, m.last_error, m.next_attempt_at = "sent", now, None, None
    _unlease(m, now)


def resend_if_uncertain(m: Message) -> bool:
    """Whether an uncertain outcome may be retried like a transient failure: webhooks
    always (they carry Idempotency-Key for the receiver to drop a repeat), email only
    when its playbook step says ``delivery: at_least_once``."""
    return m.channel != "email" or (m.payload or {}).get("delivery") == AT_LEAST_ONCE


def record_uncertain(m: Message, detail: str, now: datetime) -> None:
    """The peer may have the message and never said so: park it as ``uncertain`` for an
    operator (``GET /v1/messages?state=uncertain``; retry or leave it), never resend it blindly."""
    m.state, m.next_attempt_at, m.last_error = "uncertain", None, detail[:2000]
    _unlease(m, now)


def record_failure(session: Session, m: Message, err: DeliveryError, now: datetime, settings: Settings) -> str:
    """Apply a failed attempt; returns the new state (queued for a retry, or failed)."""
    m.last_error = err.detail[:2000]
    _unlease(m, now)
    if err.transient and m.attempts < settings.outreach_max_attempts:
        m.state = "queued"
        m.next_attempt_at = now + backoff(m.attempts, m.id, settings)
    else:
        m.state = "failed"
        m.next_attempt_at = None
        if err.transient:
            m.last_error = f"gave up after {m.attempts} attempts: {m.last_error}"[:2000]
    if err.bounce and m.channel == "email" and m.recipient:
        policy_repo.add_suppression(
            session, email_hash=email_hash(m.recipient), email=m.recipient, reason="hard_bounce", detail=err.detail[:500], now=now
        )
    return m.state


def record_skip(m: Message, reason: str, now: datetime) -> None:
    m.state, m.skip_reason, m.next_attempt_at = "skipped", reason, None
    _unlease(m, now)
