"""The one settings object. Every setting is read from a ``TOUCHLINE_`` environment
variable (or a ``.env`` file) and documented in the README's configuration table.

Never read settings at import time: call :func:`get_settings` (cached) or build a
:class:`Settings` yourself, as the tests do.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property, lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# env=test only (the suite's own settings): never used by `touchline run`, `api` or a worker.
TEST_SECRET = "touchline-test-suite-secret-not-for-any-real-deployment"
# Secrets published in this code or its history: anyone can sign with them, so they are
# refused outside tests (the development default until issue 18, the compose trial's, the
# example environment's, and the test suite's).
KNOWN_PLACEHOLDERS = frozenset(
    {
        "dev-insecure-change-me",
        "compose-trial-only-replace-before-any-real-use-0b7f3c9e1d",
        "change-me-to-a-long-random-value",
        TEST_SECRET,
    }
)
MIN_SECRET_BYTES = 32
SECRET_FILE = "secret-key"
HOW_TO_SET_SECRET = (
    "set TOUCHLINE_SECRET_KEY to at least 32 random bytes, e.g. "
    "`export TOUCHLINE_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')`; "
    "in development you may leave it unset: Touchline then generates one into <TOUCHLINE_VAR_DIR>/secret-key"
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOUCHLINE_", env_file=".env", extra="ignore")

    env: str = Field("development", description="development or production")
    var_dir: Path = Field(Path("var"), description="where embedded state lives (SQLite, broker logs, mail)")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite under var/")
    # Connections per process: db_pool_size kept open, up to db_max_overflow more under
    # load. A request waits at most db_pool_timeout_seconds for one, then answers 503
    # overloaded. The API lets api_max_concurrent_requests in at once, each holding at
    # most one connection: keep db_pool_size + db_max_overflow at least that.
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(30, ge=0)
    db_pool_timeout_seconds: float = Field(2.0, gt=0)
    sqlite_busy_timeout_seconds: float = 30.0
    # Workers back off this long at most between retries of a database or broker outage.
    retry_max_seconds: float = 30.0

    # Kafka. Empty bootstrap means: use (and, for `touchline run`, start) the embedded broker.
    kafka_bootstrap: str = ""
    embedded_broker_host: str = "127.0.0.1"
    embedded_broker_port: int = 9092
    # The embedded broker cannot trim its topics (no retention, no DeleteRecords): above this
    # RSS, `touchline run` drains it and restarts it empty. Off (0) by default: a producer
    # outside `touchline run` writing straight to the broker can lose records in a recycle.
    embedded_broker_max_mb: int = 0
    # Above this RSS `touchline run` warns (a log line every 10 minutes, the gauge
    # touchline_embedded_broker_rss_bytes, the console's pipeline health) and names the
    # remedies. 0: never warn.
    embedded_broker_warn_mb: int = 1024
    topic_prefix: str = ""
    topic_partitions: int = 4
    kafka_session_timeout_ms: int | None = None
    kafka_heartbeat_interval_ms: int | None = None
    kafka_max_poll_interval_ms: int = 300_000
    kafka_max_poll_records: int = 5000
    kafka_poll_timeout_ms: int = 500
    kafka_bootstrap_timeout_ms: int = 10_000
    # `touchline run`: on Ctrl-C, how long to let consumers drain the embedded broker.
    drain_timeout_seconds: float = 60.0

    # Ingest.
    max_event_bytes: int = 64 * 1024
    max_future_skew_seconds: int = 24 * 3600
    raw_event_retention_days: int = 400
    http_batch_limit: int = 1000

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Requests in flight at once; one more answers 503 overloaded with Retry-After at once
    # (/healthz and /readyz are never counted nor refused).
    api_max_concurrent_requests: int = Field(40, ge=1)
    # Threads that run the plain-def routes and dependencies (the database work).
    api_threads: int = Field(40, ge=1)
    # Server limits (services/wiring/server.py): a connection must deliver its request
    # line and headers within api_header_timeout_seconds and its body within
    # api_body_timeout_seconds; an idle kept-alive connection is closed after
    # api_keep_alive_seconds; at api_max_connections open, a new one closes the one longest
    # waiting for a request head, or is answered 503 if every one is mid-request.
    # The keep-alive outlives common clients' own idle expiry (httpx and Node: 5 s), so
    # the client drops an idle connection first and never sends a request into a socket
    # the server is closing (a reset, not an answer: the race CI met at 5 s against 5 s).
    api_header_timeout_seconds: float = Field(10.0, gt=0)
    api_body_timeout_seconds: float = Field(30.0, gt=0)
    api_keep_alive_seconds: int = Field(15, ge=1)
    api_max_connections: int = Field(1000, ge=1)
    api_backlog: int = Field(2048, ge=1)
    # Every request body, whatever the route: larger is a 413 before any parsing.
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # JSON bodies nested deeper (objects and arrays) are a 422 before any parsing.
    max_json_depth: int = Field(32, ge=4, le=200)
    # 0: /metrics is served on the API port to admin keys only. A port: the API process
    # serves its metrics there, without a key (bind it where only Prometheus reaches),
    # and not on the API port.
    metrics_port: int = Field(0, ge=0, le=65535)
    # A verified API key is not looked up again for this long; revoking it takes effect
    # at once in the process that revokes, within this bound in every other (0: no cache).
    auth_cache_seconds: float = Field(5.0, ge=0, le=60)
    log_level: str = "INFO"
    # A warning or error identical to one logged in the last this-many seconds is counted,
    # not logged; the next one after the interval carries the count (0: log every one).
    log_repeat_seconds: float = Field(60.0, ge=0)
    # Signs and seals console sessions, CSRF tokens, sign-in links and unsubscribe links.
    # Empty: the first command that needs it generates one into <var_dir>/secret-key
    # (mode 0600) and every later one reads it (see `secret`). Several API replicas or
    # hosts must share one value: set it explicitly there.
    secret_key: str = Field("", repr=False)
    # Console: signed session cookies last this long; `touchline console-link` links this long.
    console_session_minutes: int = 720
    console_link_minutes: int = 15
    # A key minted for a one-time link expires this long after the link was made; the
    # session the link opened ends with it.
    console_link_key_minutes: int = Field(720, ge=1)
    # Sign-in throttle (shared/signin.py, docs/security.md), per API process: failures per
    # client address and key prefix before each try waits (1 s, doubling) and before that
    # address is refused for that key for the window.
    signin_failures_before_delay: int = Field(5, ge=1)
    signin_failures_before_refusal: int = Field(20, ge=2)
    signin_throttle_window_seconds: float = Field(900.0, gt=0)
    signin_throttle_max_tracked: int = Field(10_000, ge=100)

    # Rules.
    rules_tick_seconds: int = 60
    # The rules worker evaluates an event once ingest has stored it; after this long it
    # evaluates anyway (ingest may have dead-lettered the event).
    rules_ingest_wait_seconds: float = 30.0
    # Freshness. The scheduled tick runs only while ingest's consumer lag (as the ingest
    # workers report it in consumer_progress) is at most rules_max_ingest_lag records and
    # every partition has reported within rules_ingest_stale_seconds; otherwise it waits.
    rules_max_ingest_lag: int = 1000
    rules_ingest_stale_seconds: float = 120.0
    # Event-triggered rules ignore events whose timestamp is older than this (a backfill
    # of history must not email anyone today).
    rules_event_freshness_seconds: float = 6 * 3600
    # A signal with no outreach decision this long after it fired is published again.
    signal_decision_grace_seconds: float = 300.0
    # Health (docs/health.md): one score per account per UTC day is kept this long.
    health_score_retention_days: int = Field(400, ge=31)
    # The daily scoring scores this many accounts per rules worker poll (an event waits for
    # at most one chunk; docs/health.md, "The daily scoring").
    health_chunk_accounts: int = Field(1000, ge=1)

    # Background jobs (backtests, forecasts): `touchline worker jobs` runs them.
    job_time_limit_seconds: float = 600.0
    job_lease_seconds: float = 60.0
    job_poll_seconds: float = 1.0
    job_progress_interval_seconds: float = 1.0
    job_max_attempts: int = 2
    job_max_active_per_key: int = 5
    job_retention_days: float = 7.0

    # Outreach: mail. Empty smtp_url means the embedded sink (`touchline run` starts it on
    # mail_sink_port and keeps every message under var/mail for GET /v1/dev/mail).
    # smtp://user:pass@host:587 uses STARTTLS when the server offers it; smtps:// is TLS
    # from the first byte; ?starttls=require refuses to send in clear.
    smtp_url: str = ""
    mail_sink_host: str = "127.0.0.1"
    mail_sink_port: int = 8025
    mail_from: str = "success@touchline.example"
    mail_from_name: str = "The Touchline team"
    product_name: str = "Touchline"
    product_url: str = "https://app.touchline.example"
    public_base_url: str = Field(
        "", description="where unsubscribe, tracked-link (/r/) and survey links point; empty means the API's own address"
    )
    # Links in customer messages go through the signed redirect /r/{token} (docs/content.md,
    # "Every link answers back"); a click is a link_clicked event.
    link_tracking: bool = True
    link_token_days: int = Field(
        180, ge=1, le=3650, description="a tracked link records clicks this long after it was sent; later it only redirects"
    )
    link_click_dedupe_seconds: int = Field(30, ge=1, le=3600, description="the same link clicked again within this window is one click")
    link_fallback_url: str = Field(
        "", pattern=r"^(https?://[^\s]+)?$", description="where a damaged or forged link lands; empty: product_url"
    )
    smtp_timeout_seconds: float = 10.0
    # RFC 5321 4.5.3.2.6: the reply to DATA's final dot may take 10 minutes (the relay
    # is committing the message). Giving up sooner turns a delivered message into a
    # resend; a timeout here is recorded as `uncertain`, never resent blindly.
    smtp_data_timeout_seconds: float = 600.0
    smtp_ca_file: str = Field("", description="CA bundle (PEM) trusted for SMTP TLS besides the system's; for private relays")

    # Outreach: delivery and timers.
    outreach_tick_seconds: float = 1.0
    # The sender is on the event -> email path: a queued message waits for its next poll
    # (an idle poll is one claim query).
    outreach_send_poll_seconds: float = 0.25
    outreach_conversion_check_seconds: int = 60
    # A broadcast is sent this many member accounts a transaction (docs/broadcasts.md).
    broadcast_chunk_accounts: int = Field(500, ge=1, le=10_000, description="member accounts a broadcast sends per transaction")
    outreach_send_batch: int = 200
    outreach_max_attempts: int = 8
    outreach_retry_base_seconds: float = 30.0
    outreach_retry_max_seconds: float = 3600.0
    outreach_lease_seconds: float = 300.0
    sender_id: str = Field("", description="this sender's id (its crash journal); empty means <hostname>-sender")
    # Template rendering budgets, per template part, at save, preview and send.
    template_cpu_seconds: float = Field(0.5, gt=0)
    template_max_output_chars: int = Field(1_000_000, ge=1000)
    template_max_loop_iterations: int = Field(100_000, ge=100)
    webhook_timeout_seconds: float = 5.0
    webhook_secret: str = Field("", description="HMAC key for webhook signatures; empty derives one from secret_key")

    # Outreach: contact policy (global; a playbook may add stricter caps of its own).
    contact_cap_messages: int = 1
    contact_cap_days: float = 3
    account_cap_touches: int = 3
    account_cap_days: float = 7
    quiet_hours_start: int = 21
    quiet_hours_end: int = 8
    default_timezone: str = "UTC"

    # Outreach: pooled-CSM engagements (docs/engagements.md).
    engagement_time_box_days: float = 30
    engagement_max_extension_days: float = Field(14, description="the one extension a CSM may take, at most this long")
    engagement_reminder_days: str = Field("7,1", description="remind the CSM this many days before the due time")
    engagement_sticky: bool = Field(True, description="prefer the CSM who last worked the account, if eligible")
    engagement_webhook_url: str = Field("", description="also notify assignments here (signed); empty: email only")
    engagement_webhook_format: str = Field("json", description="json or slack")
    engagement_recovery_ratio: float = Field(1.0, description="recovered = 28-day active users back to ratio x baseline")
    engagement_assign_batch: int = 500

    @field_validator("env")
    @classmethod
    def _env_known(cls, v: str) -> str:
        if v not in ("development", "production", "test"):
            raise ValueError("TOUCHLINE_ENV must be development, production or test")
        return v

    @model_validator(mode="after")
    def _no_public_or_short_secret(self) -> Settings:
        if self.env != "test" and self.secret_key:
            _check_secret(self.secret_key, "TOUCHLINE_SECRET_KEY")
        if self.env == "production" and not self.secret_key:
            # A generated secret lives in one var dir: replicas would each sign with their own.
            raise ValueError(f"TOUCHLINE_ENV=production needs TOUCHLINE_SECRET_KEY, shared by every process: {HOW_TO_SET_SECRET}")
        return self

    @cached_property
    def secret(self) -> str:
        """The secret every signature and seal uses: ``secret_key`` when set; otherwise,
        outside tests, the one kept in ``<var_dir>/secret-key``, generated (256 random
        bits, mode 0600) the first time a command needs it."""
        if self.secret_key:
            return self.secret_key
        if self.env == "test":
            return TEST_SECRET
        return load_or_create_secret(self.var_dir / SECRET_FILE)

    # ---- derived values -------------------------------------------------
    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.embedded_broker_host}:{self.embedded_broker_port}"

    @property
    def session_timeout_ms(self) -> int:
        # The embedded broker holds a group join for ~session_timeout/2: keep it short there.
        if self.kafka_session_timeout_ms is not None:
            return self.kafka_session_timeout_ms
        return 2000 if self.embedded_broker else 10_000

    @property
    def heartbeat_interval_ms(self) -> int:
        if self.kafka_heartbeat_interval_ms is not None:
            return self.kafka_heartbeat_interval_ms
        return 300 if self.embedded_broker else 3000

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the usual postgres:// spellings and use psycopg 3.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.var_dir / 'touchline.db').as_posix()}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def topic_events(self) -> str:
        return self.topic("product.events")

    @property
    def topic_events_dlq(self) -> str:
        return self.topic("product.events.dlq")

    @property
    def embedded_mail_sink(self) -> bool:
        return not self.smtp_url

    @property
    def effective_smtp_url(self) -> str:
        return self.smtp_url or f"smtp://{self.mail_sink_host}:{self.mail_sink_port}"

    @property
    def mail_dir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def public_url(self) -> str:
        return (self.public_base_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @property
    def engagement_reminders(self) -> list[float]:
        out = []
        for part in self.engagement_reminder_days.split(","):
            if part.strip():
                out.append(float(part))
        return sorted({d for d in out if d > 0}, reverse=True)

    @property
    def topic_signals(self) -> str:
        return self.topic("cs.signals")

    @property
    def topic_signals_dlq(self) -> str:
        return self.topic("cs.signals.dlq")


def _check_secret(value: str, where: str) -> None:
    if value in KNOWN_PLACEHOLDERS:
        raise ValueError(f"{where} is a published placeholder, so anyone can forge sessions and links with it; {HOW_TO_SET_SECRET}")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{where} is {len(value.encode())} bytes; it must be at least {MIN_SECRET_BYTES}: {HOW_TO_SET_SECRET}")


def load_or_create_secret(path: Path) -> str:
    """The secret kept in ``path``, created if missing. Written whole to a private temp
    file and then hard-linked into place, which fails if the file exists: two processes
    starting at once agree on one secret, and neither ever reads a half-written file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won; use its secret
        finally:
            tmp.unlink()
    value = path.read_text().strip()
    _check_secret(value, str(path))
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
