"""SMTP over TLS against a real aiosmtpd server with a certificate made for the test:
STARTTLS used when offered, ``?starttls=require`` refusing a server without it (never
a cleartext MAIL), implicit TLS (smtps://), certificate verification, AUTH success and
failure."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from services.outreach.channels import DeliveryError
from services.outreach.channels.smtp import SmtpConfig, SmtpSender
from services.outreach.delivery.worker import SenderWorker
from services.outreach.devmail.sink import SinkHandler
from shared.broker import free_port
from tests.support.outreach import messages, queue_messages, send_one


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the test certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            str(d / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


class RecordingHandler(SinkHandler):
    """The sink, also remembering every MAIL FROM and whether its session was encrypted."""

    def __init__(self):
        super().__init__(None)
        self.mail_commands: list[bool] = []  # one per MAIL FROM: was the session TLS?
        self.logins: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_commands.append(server.transport.get_extra_info("cipher") is not None)
        envelope.mail_from = address
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"touchline" and auth_data.password == b"s3cret"
    if ok:
        server.event_handler.logins.append(auth_data.login.decode())
    return AuthResult(success=ok, handled=False)  # let aiosmtpd answer 235 or 535


@pytest.fixture
def smtp_server(certificate):
    """start(mode) -> (handler, port); mode: plain, starttls or implicit."""
    cert, key = certificate
    started = []

    def start(mode: str):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        handler = RecordingHandler()
        kwargs = {"authenticator": authenticator, "auth_require_tls": True}
        if mode == "starttls":
            kwargs["tls_context"] = ctx
        elif mode == "implicit":
            # aiosmtpd counts only STARTTLS as TLS for AUTH; here the whole connection is TLS.
            kwargs.update(ssl_context=ctx, auth_require_tls=False)
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        started.append(controller)
        return handler, port

    yield start
    for c in started:
        c.stop()


def send_one_to(url: str, ca_file) -> None:
    send_one(SmtpSender(SmtpConfig.from_url(url, 10.0, ca_file=str(ca_file) if ca_file else None)), "tls-1")


def test_starttls_is_used_when_offered_and_auth_goes_over_it(smtp_server, certificate):
    handler, port = smtp_server("starttls")
    send_one_to(f"smtp://touchline:s3cret@127.0.0.1:{port}", certificate[0])
    assert handler.mail_commands == [True]  # the envelope went over TLS
    assert handler.logins == ["touchline"]
    assert len(handler.raw) == 1 and b"Subject: Hello" in handler.raw[0]


def test_an_untrusted_certificate_is_refused(smtp_server):
    handler, port = smtp_server("starttls")
    with pytest.raises(DeliveryError) as err:
        send_one_to(f"smtp://127.0.0.1:{port}", ca_file=None)  # the test CA is not among the system's
    assert err.value.transient and "CERTIFICATE_VERIFY_FAILED" in err.value.detail
    assert handler.mail_commands == [] and handler.raw == []


def test_implicit_tls(smtp_server, certificate):
    handler, port = smtp_server("implicit")
    send_one_to(f"smtps://touchline:s3cret@127.0.0.1:{port}", certificate[0])
    assert handler.mail_commands == [True] and handler.logins == ["touchline"] and len(handler.raw) == 1


def test_a_wrong_password_is_a_transient_session_refusal_and_sends_nothing(smtp_server, certificate):
    handler, port = smtp_server("starttls")
    with pytest.raises(DeliveryError) as err:
        send_one_to(f"smtp://touchline:wrong@127.0.0.1:{port}", certificate[0])
    # Retried with backoff: a fixed password must not have failed every message meanwhile.
    assert err.value.transient and err.value.code == 535 and not err.value.uncertain
    assert handler.logins == [] and handler.mail_commands == [] and handler.raw == []


def test_starttls_require_never_sends_in_clear_retries_then_fails(smtp_server, settings, session_factory, clock):
    handler, port = smtp_server("plain")
    settings = settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{port}?starttls=require", "outreach_max_attempts": 3, "outreach_retry_base_seconds": 60}
    )
    [mid] = queue_messages(session_factory, 1, clock.now())
    sender = SenderWorker(settings, session_factory, clock, worker_id="tls-require")
    try:
        for attempt in (1, 2):
            sender.poll_once()
            [m] = messages(session_factory)
            assert (m.state, m.attempts) == ("queued", attempt)
            assert "does not offer STARTTLS" in m.last_error
            clock.advance(timedelta(days=1))
        sender.poll_once()
    finally:
        sender.close()
    [m] = messages(session_factory)
    assert (m.id, m.state, m.attempts) == (mid, "failed", 3)
    assert m.last_error.startswith("gave up after 3 attempts") and "STARTTLS" in m.last_error
    assert handler.mail_commands == [] and handler.raw == []  # not one envelope in clear


def test_starttls_auto_with_a_plain_server_sends_in_clear(smtp_server):
    """The documented default: ``auto`` uses TLS only when offered (require it in production)."""
    handler, port = smtp_server("plain")
    send_one_to(f"smtp://127.0.0.1:{port}", ca_file=None)
    assert handler.mail_commands == [False] and len(handler.raw) == 1
