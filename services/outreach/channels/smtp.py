"""Email over SMTP: MIME building and a sender that reuses its connection.

``TOUCHLINE_SMTP_URL``: ``smtp://[user:password@]host[:port][?starttls=auto|require|off]``
or ``smtps://...`` (implicit TLS). With ``auto`` (the default) STARTTLS is used whenever
the server offers it; ``require`` refuses to send in clear. Certificates are verified
against the system's CAs plus ``TOUCHLINE_SMTP_CA_FILE`` when set.

DATA is driven here rather than by ``smtplib.sendmail`` for one reason: the reply to
the final dot gets its own timeout (``TOUCHLINE_SMTP_DATA_TIMEOUT_SECONDS``, 10 minutes
by default, as RFC 5321 4.5.3.2.6 gives the server), and a timeout or a dropped
connection while waiting for it is reported as *uncertain* (the server may have
committed the message), never as an ordinary transient failure to be resent.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr
from urllib.parse import parse_qs, unquote, urlsplit

from services.outreach.channels import DeliveryError
from shared.settings import Settings


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: str = "auto"
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    data_timeout: float = 600.0
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls.from_url(
            settings.effective_smtp_url,
            settings.smtp_timeout_seconds,
            data_timeout=settings.smtp_data_timeout_seconds,
            ca_file=settings.smtp_ca_file or None,
        )

    @classmethod
    def from_url(cls, url: str, timeout: float = 10.0, *, data_timeout: float = 600.0, ca_file: str | None = None) -> SmtpConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"TOUCHLINE_SMTP_URL must start with smtp:// or smtps://, not {parts.scheme!r}")
        starttls = parse_qs(parts.query).get("starttls", ["auto"])[0]
        if starttls not in ("auto", "require", "off"):
            raise ValueError("starttls must be auto, require or off")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (465 if parts.scheme == "smtps" else 25),
            implicit_tls=parts.scheme == "smtps",
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            timeout=timeout,
            data_timeout=data_timeout,
            ca_file=ca_file,
        )

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()


def domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "touchline.local"


def message_id_for(key: str, mail_from: str) -> str:
    """The Message-ID is derived from the outbox row's idempotency key: a resend of the
    same row carries the same Message-ID, so mail clients and relays can tell."""
    return f"<{key}@{domain_of(mail_from)}>"


def _safe(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise DeliveryError(f"refusing header {name}: it contains a line break (header injection)", transient=False)
    return value


def _encoded(value: str) -> str:
    """RFC 2047 encoding for non-ASCII header text (folded by the encoder)."""
    return value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")


def _part(content_type: str, body: str) -> bytes:
    data = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n').encode() + data


def build_email(
    *,
    key: str,
    mail_from: str,
    mail_from_name: str,
    to: str,
    subject: str,
    text_body: str,
    html_body: str,
    unsubscribe_url: str | None,
    date: datetime,
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """The message as wire bytes (CRLF): multipart/alternative, text then HTML, UTF-8,
    base64 bodies (no line-length or dot-stuffing surprises whatever the template says).

    Written out directly rather than through ``email.message``: its header machinery
    costs more than the whole SMTP exchange with a local relay. Every header value is
    checked for line breaks (header injection) before it is written."""
    if "@" not in to:
        raise DeliveryError(f"refusing recipient {to!r}: not an address", transient=False)
    headers = [
        ("From", formataddr((_safe("From", mail_from_name), _safe("From", mail_from)), charset="utf-8")),
        ("To", _safe("To", to)),
        ("Subject", _encoded(_safe("Subject", subject))),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id_for(key, mail_from)),
        ("MIME-Version", "1.0"),
    ]
    if unsubscribe_url:
        # RFC 8058 one-click: mailbox providers POST "List-Unsubscribe=One-Click" to this URL.
        headers.append(("List-Unsubscribe", f"<{_safe('List-Unsubscribe', unsubscribe_url)}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    for name, value in (extra_headers or {}).items():
        headers.append((_safe("header name", name), _encoded(_safe(name, value))))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    if not html_body:
        return head.encode() + _part("text/plain", text_body or " ")
    # "=_" never occurs in base64 bodies, so this boundary cannot collide with content.
    boundary = f"=_tl_{key}"
    return (
        (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n').encode()
        + f"--{boundary}\r\n".encode()
        + _part("text/plain", text_body or " ")
        + f"--{boundary}\r\n".encode()
        + _part("text/html", html_body)
        + f"--{boundary}--\r\n".encode()
    )


class SmtpSender:
    """One SMTP connection, opened lazily and reused across messages; a connection
    that has been idle is checked with NOOP before use. Not thread-safe: one per worker."""

    idle_check_seconds = 5.0

    def __init__(self, config: SmtpConfig):
        self.config = config
        self._conn: smtplib.SMTP | None = None
        self._last_used = 0.0
        self.connections_opened = 0

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        conn: smtplib.SMTP
        try:
            if c.implicit_tls:
                conn = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=c.tls_context())
            else:
                conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            conn.ehlo()
            if not c.implicit_tls and c.starttls != "off":
                if conn.has_extn("starttls"):
                    conn.starttls(context=c.tls_context())
                    conn.ehlo()
                elif c.starttls == "require":
                    conn.close()
                    raise DeliveryError(f"{c.host}:{c.port} does not offer STARTTLS and starttls=require", transient=True)
            if c.username:
                conn.login(c.username, c.password or "")
        except DeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {c.host}:{c.port} refused the session: {exc.smtp_code} {_text(exc.smtp_error)}", transient=True, code=exc.smtp_code
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot connect to SMTP {c.host}:{c.port}: {type(exc).__name__}: {exc}", transient=True) from None
        self.connections_opened += 1
        return conn

    def _connection(self) -> smtplib.SMTP:
        if self._conn is not None and time.monotonic() - self._last_used > self.idle_check_seconds:
            try:
                if self._conn.noop()[0] != 250:
                    self.close()
            except (OSError, smtplib.SMTPException):
                self.close()
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def send(self, raw: bytes, mail_from: str, to: str, *, committing: Callable[[], None] | None = None) -> None:
        """Deliver one message to one recipient. ``committing`` is called just before the
        final dot is sent: from then on a lost reply leaves the outcome uncertain (the
        sender journals that moment so a crash there is not resent blindly either)."""
        conn = self._connection()
        dot_sent = False
        try:
            options = [f"SIZE={len(raw)}"] if conn.has_extn("size") else []
            _envelope(conn, mail_from, options, to)
            data = _DOT_LINE.sub(b"..", raw)
            if not data.endswith(b"\r\n"):
                data += b"\r\n"
            if committing is not None:
                committing()
            conn.send(data + b".\r\n")
            dot_sent = True
            # The server now commits the message; it has up to 10 minutes to say so.
            assert conn.sock is not None  # connected: the data was just sent on it
            conn.sock.settimeout(self.config.data_timeout)
            code, text = conn.getreply()
            if conn.sock is not None:
                conn.sock.settimeout(self.config.timeout)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._reset()
            raise DeliveryError(f"recipient refused: {code} {_text(text)}", transient=code < 500, bounce=code >= 500, code=code) from None
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused
            self._reset()
            raise DeliveryError(
                f"SMTP refused the message: {exc.smtp_code} {_text(exc.smtp_error)}", transient=exc.smtp_code < 500, code=exc.smtp_code
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            if dot_sent:
                raise DeliveryError(
                    f"no reply to the final dot of DATA (the server may have the message): {type(exc).__name__}: {exc}",
                    transient=True,
                    uncertain=True,
                ) from None
            raise DeliveryError(f"SMTP connection lost: {type(exc).__name__}: {exc}", transient=True) from None
        self._last_used = time.monotonic()

    def _reset(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rset()
            self._last_used = time.monotonic()
        except (OSError, smtplib.SMTPException, AttributeError):
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (OSError, smtplib.SMTPException):
                try:
                    self._conn.close()
                except OSError:
                    pass
            self._conn = None


_DOT_LINE = re.compile(rb"(?m)^\.")  # RFC 5321 4.5.2 dot-stuffing


def _envelope(conn: smtplib.SMTP, mail_from: str, options: list[str], to: str) -> None:
    """MAIL, RCPT and DATA up to the server's 354. Where the server offers PIPELINING
    (RFC 2920, as Postfix and most MTAs do) the three go in one write and their three
    replies are read after: one round trip instead of three, the most of a message's
    time over a fast link. Each reply is then judged in order, as if sent one by one."""
    if not conn.has_extn("pipelining"):
        replies = [conn.mail(mail_from, options)]
        if replies[0][0] == 250:
            replies.append(conn.rcpt(to))
            if replies[1][0] in (250, 251):
                replies.append(conn.docmd("data"))
    else:
        extra = "".join(f" {o}" for o in options)
        conn.send(f"MAIL FROM:{smtplib.quoteaddr(mail_from)}{extra}\r\nRCPT TO:{smtplib.quoteaddr(to)}\r\nDATA\r\n")
        replies = [conn.getreply(), conn.getreply(), conn.getreply()]
        if replies[2][0] == 354 and (replies[0][0] != 250 or replies[1][0] not in (250, 251)):
            # RFC 2920 says a server refuses DATA after a refused envelope; one that opened
            # it anyway gets an empty message, which has no recipient to go to.
            conn.send(".\r\n")
            conn.getreply()
    (code, text), rest = replies[0], replies[1:]
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, mail_from)
    code, text = rest[0]
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({to: (code, text)})
    code, text = rest[1]
    if code != 354:
        raise smtplib.SMTPDataError(code, text)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
