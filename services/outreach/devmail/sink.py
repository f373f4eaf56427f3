"""The embedded SMTP sink (aiosmtpd) for development and tests: it accepts every
message and keeps it as an ``.eml`` file under ``var/mail`` (the API lists them at
``GET /v1/dev/mail``) and in memory (for tests in the same process).

It is also a controllable peer for failure tests: ``fail_next(n)`` answers the next
``n`` recipients with ``451`` (try again), and any address whose local part starts
with ``bounce`` is refused with ``550`` (a hard bounce). It offers PIPELINING, so the
sender's pipelined envelope (services/outreach/channels/smtp.py) is what every test drives.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession

log = logging.getLogger(__name__)


class SinkHandler:
    def __init__(self, directory: Path | None, bounce_prefix: str = "bounce"):
        self.directory = directory
        self.bounce_prefix = bounce_prefix
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._transient_failures = 0
        self._lock = threading.Lock()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._transient_failures = n

    async def handle_EHLO(self, server: SMTP, session: SmtpSession, envelope: Envelope, hostname: str, responses: list[str]) -> list[str]:
        """Offer PIPELINING (RFC 2920), as Postfix and most MTAs do: aiosmtpd answers the
        commands in its buffer in turn, so a client's MAIL, RCPT and DATA may come in one write."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if address.split("@", 1)[0].lower().startswith(self.bounce_prefix):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        with self._lock:
            if self._transient_failures > 0:
                self._transient_failures -= 1
                return "451 4.3.0 mail sink busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        raw = envelope.original_content if envelope.original_content is not None else envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        # aiosmtpd calls DATA only after MAIL FROM and the message body were received.
        assert raw is not None and envelope.mail_from is not None
        if self.directory is not None:
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.eml"
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(raw)
            os.replace(tmp, self.directory / name)
        with self._lock:
            self.raw.append(raw)  # parsed on demand: the sink must stay cheap under load
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Message accepted"


class MailSink:
    """``with MailSink(dir, port) as sink:`` runs the sink on a thread of its own."""

    def __init__(self, directory: Path | None, host: str = "127.0.0.1", port: int = 8025):
        self.handler = SinkHandler(directory)
        self.host, self.port = host, port
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler._lock:
            raw = list(self.handler.raw)
        return [BytesParser(policy=policy.default).parsebytes(r) for r in raw]

    @property
    def count(self) -> int:
        return len(self.handler.raw)

    def start(self) -> MailSink:
        # decode_data=False keeps the exact bytes; 8BITMIME/SMTPUTF8 as a real relay offers them.
        self._controller = Controller(
            self.handler, hostname=self.host, port=self.port, decode_data=False, enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024
        )
        self._controller.start()
        log.info("mail sink listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_mailbox(directory: Path, limit: int = 100, to: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` messages kept by the sink, parsed (for ``GET /v1/dev/mail``)."""
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob("*.eml"), reverse=True):
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if to and to.lower() not in str(msg.get("To", "")).lower():
            continue
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        out.append(
            {
                "id": path.stem,
                "message_id": msg.get("Message-ID"),
                "from": msg.get("From"),
                "to": msg.get("To"),
                "subject": msg.get("Subject"),
                "date": msg.get("Date"),
                "headers": {k: str(v) for k, v in msg.items()},
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
            }
        )
        if len(out) >= limit:
            break
    return out


def serve_forever(directory: Path, host: str, port: int, stop: threading.Event) -> None:
    sink = MailSink(directory, host, port).start()
    try:
        stop.wait()
    finally:
        sink.stop()
