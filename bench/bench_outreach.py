"""Outreach benchmark: signals per second through enrolment and contact policy (the
consumer on cs.signals: dedupe, playbook match, holdout, policy checks, template
render, outbox insert, offsets after commit), then emails per second delivered by the
sender to the embedded SMTP sink over one reused connection (``--senders 1,2``: one run
with each number of sender processes sharing the outbox, checking that no Message-ID
reaches the sink twice; each sender's and the sink's CPU per email; ``--peer smtp-sink``:
Postfix's C test server instead of our Python sink). It also counts the
statements the consumer sends the database per batch (an engine event listener), and
prints the consumer's CPU per signal and, on PostgreSQL, its backends' (``/proc``), and
signals/s without the first batch ("after 1st"), whose poll also waits out the group
join and the first fetch (0 to 500 ms: up to 100 us a signal of a 5,000-signal run).

    make bench-outreach
    .venv/bin/python -m bench.bench_outreach --signals 5000 --db sqlite,postgresql
    .venv/bin/python -m bench.bench_outreach --step recommend   # the recommend step (docs/content.md)

``--step recommend`` replaces the playbook's send with a recommend step over the starter
content library, the accounts carrying one of four use cases and a different feature
event each: every signal's recipient gets a resource chosen for them.

PostgreSQL is used when it answers at TOUCHLINE_BENCH_POSTGRES_URL (default: the
local postgresql://postgres@127.0.0.1:5432/test); the benchmark creates and drops its
own database there. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from shared.broker import EmbeddedBroker, free_port, port_open
from shared.kafka import compat
from shared.settings import Settings

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _pg_database(base_url: str):
    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"touchline_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()

    def drop():
        a = create_engine(url, isolation_level="AUTOCOMMIT")
        with a.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        a.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


USE_CASES = ["analytics", "monitoring", "collaboration", "operations"]
FEATURE_EVENTS = ["report_created", "alert_configured", "invite_sent", "export_run"]
RESOURCE_PICK = {
    "name": "A resource for you",
    "subject": "{{ recipient.first_name }}, {{ resource.title }}",
    "html_body": '<p><a href="{{ resource.url }}">{{ resource.title }}</a></p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text_body": "{{ resource.title }}: {{ resource.url }}\nUnsubscribe: {{ unsubscribe_url }}",
}


def run_one(kind: str, n: int, broker: EmbeddedBroker, step: str = "send", senders: int = 1, peer: str = "devmail") -> dict:
    from kafka import KafkaProducer

    from services.ingest.models import Account, AccountEventSeen, User
    from services.outreach.content.schemas import ResourceIn
    from services.outreach.content.service import save as save_resource
    from services.outreach.models import Enrollment, Message
    from services.outreach.playbooks.schemas import PlaybookDefinition
    from services.outreach.playbooks.service import save as save_playbook
    from services.outreach.playbooks.worker import SignalWorker
    from services.outreach.starter import starter_resources, starter_templates
    from services.outreach.templates.schemas import TemplateIn
    from services.outreach.templates.service import save as save_template
    from shared.clock import SimulatedClock
    from shared.db import make_engine, make_session_factory, transaction
    from shared.kafka.clients import ensure_topics
    from shared.migrate import upgrade

    tmp = Path(tempfile.mkdtemp(prefix="bench-outreach-"))
    drop = None
    if kind == "postgresql":
        url, drop = _pg_database(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG))
    else:
        url = f"sqlite:///{tmp / 'bench.db'}"
    settings = Settings(
        env="test",
        var_dir=tmp,
        database_url=url,
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:6]}.",
        mail_sink_port=free_port(),
        outreach_send_batch=500,
        kafka_max_poll_records=500,
    )
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
    clock = SimulatedClock(T0)
    with transaction(factory) as s:
        save_template(s, "win-back", TemplateIn(**starter_templates()["win-back"]), settings=settings, actor="bench", now=T0)
        save_template(s, "resource-pick", TemplateIn(**RESOURCE_PICK), settings=settings, actor="bench", now=T0)
        for rid, body in starter_resources().items():
            save_resource(s, rid, ResourceIn(**body), actor="bench", now=T0)
        first = (
            {"type": "send", "channel": "email", "template": "win-back", "to": ["champion"]}
            if step == "send"
            else {
                "type": "recommend",
                "channel": "email",
                "template": "resource-pick",
                "to": ["champion"],
                "fallback": "welcome-back-guide",
            }
        )
        save_playbook(
            s,
            "win-back",
            PlaybookDefinition.model_validate(
                {
                    "name": "Win back",
                    "trigger": {"rules": ["no-login-14d"]},
                    "holdout_percent": 0,
                    "steps": [
                        first,
                        {"type": "wait", "duration": "4d"},
                    ],
                }
            ),
            actor="bench",
            now=T0,
        )
        for i in range(n):
            a = f"acct-{i:06d}"
            s.add(
                Account(
                    id=a,
                    name=f"Account {i}",
                    plan="pro",
                    segment="smb",
                    traits={"use_case": USE_CASES[i % 4]},
                    created_at=T0,
                    updated_at=T0,
                )
            )
            s.add(AccountEventSeen(account_id=a, event_name=FEATURE_EVENTS[i % 4], first_seen_at=T0, last_seen_at=T0))
            s.add(
                User(
                    account_id=a,
                    id="u1",
                    email=f"champion@{a}.example",
                    name="Casey Champion",
                    role="champion",
                    timezone="Europe/London",
                    traits={},
                    created_at=T0,
                    updated_at=T0,
                )
            )
    ensure_topics(settings)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=256 * 1024)
    for i in range(n):
        a = f"acct-{i:06d}"
        sig = {
            "signal_id": f"sig-{i}",
            "rule_id": "no-login-14d",
            "rule_version": 1,
            "account_id": a,
            "kind": "churn_risk",
            "severity": "high",
            "fired_at": T0.isoformat(),
            "evidence": {"days_since:login": {"value": 15}},
        }
        producer.send(settings.topic_signals, key=a.encode(), value=json.dumps(sig).encode())
    producer.flush()
    producer.close()

    def count(model) -> int:
        with factory() as s:
            return s.scalar(select(func.count()).select_from(model))

    consumer = SignalWorker(settings, factory, clock)
    handled, signals_s, batches, statements = 0, 0.0, 0, 0
    first_s, first_n = 0.0, 0  # the first batch's poll also waits out the group join and the first fetch
    cpu_s, backend_s = 0.0, 0.0  # this process's CPU and the database's backends', over the timed polls
    issued = [0]

    def backends_cpu() -> float:  # PostgreSQL on this machine: its backends' CPU seconds (/proc)
        if kind != "postgresql":
            return 0.0
        with factory() as s:
            pids = s.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).all()
        return sum(_process_cpu(pid) for pid in pids if Path(f"/proc/{pid}").exists())

    def issue(*_args) -> None:
        issued[0] += 1

    event.listen(engine, "before_cursor_execute", issue)  # statements the database is sent, per batch
    while handled < n:
        # Only batches that carried records are timed: the group join is not what we measure.
        backend = backends_cpu()
        issued[0] = 0
        cpu, t = time.process_time(), time.perf_counter()
        got = consumer.poll_once(500)
        if got:
            signals_s += time.perf_counter() - t
            cpu_s += time.process_time() - cpu
            if not batches:
                first_s, first_n = signals_s, got
            handled += got
            batches += 1
            statements += issued[0]
            backend_s += backends_cpu() - backend
    event.remove(engine, "before_cursor_execute", issue)
    consumer.close()
    assert count(Enrollment) == n and count(Message) == n
    with factory() as s:
        routed = s.scalar(select(func.count()).select_from(Message).where(Message.resource_id.is_not(None)))
    assert routed == (n if step == "recommend" else 0), routed

    # The sink runs in its own process, as under `touchline run`: ours (Python, aiosmtpd), or
    # Postfix's smtp-sink (C), which takes the sink's CPU out of what the sender is measured by.
    if peer == "smtp-sink":
        settings.mail_dir.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o711)  # smtp-sink drops to nobody before it writes
        settings.mail_dir.chmod(0o777)
        privs = ["-u", "nobody"] if os.geteuid() == 0 else []
        command = [SMTP_SINK, *privs, "-d", f"{settings.mail_dir}/m.", f"{settings.mail_sink_host}:{settings.mail_sink_port}", "256"]
        sink = subprocess.Popen(command)
    else:
        env = {
            **os.environ,
            "TOUCHLINE_VAR_DIR": str(tmp),
            "TOUCHLINE_MAIL_SINK_PORT": str(settings.mail_sink_port),
            "TOUCHLINE_LOG_LEVEL": "WARNING",
        }
        sink = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "mailsink"], env=env)
    while not port_open(settings.mail_sink_host, settings.mail_sink_port):
        time.sleep(0.05)
    # Under `touchline run` each sender is its own process with its own connections (and
    # senders share the outbox: SKIP LOCKED claims). Each is started and ready (imports,
    # engine) before the clock starts; they all start at once and stop when none finds a
    # due message.
    engine.dispose()
    spawn = multiprocessing.get_context("spawn")
    go, results = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=_deliver, args=(settings, f"bench-{k}", go, results)) for k in range(senders)]
    for proc in procs:
        proc.start()
    ready = [results.get(timeout=120) for _ in procs]
    assert all(r == "ready" for r in ready), ready
    sink_cpu = _process_cpu(sink.pid)
    started = time.perf_counter()
    go.set()
    done = [results.get(timeout=3600) for _ in procs]
    mail_s = time.perf_counter() - started
    sink_cpu = _process_cpu(sink.pid) - sink_cpu
    for proc in procs:
        proc.join(30)
    with factory() as s:
        delivered = s.scalar(select(func.count()).select_from(Message).where(Message.state == "sent"))
        if delivered < n:
            print(s.execute(select(Message.state, Message.last_error, func.count()).group_by(Message.state, Message.last_error)).all())
    message_ids = [_message_id(path) for path in settings.mail_dir.glob("*.eml" if peer == "devmail" else "m.*")]
    sink.kill()  # smtp-sink does not stop on SIGTERM
    sink.wait(10)
    assert len(message_ids) == delivered == sum(d["sent"] for d in done), (len(message_ids), delivered, done)
    assert len(set(message_ids)) == len(message_ids), "a Message-ID was delivered twice"
    engine.dispose()
    if drop:
        drop()
    return {
        "db": kind,
        "step": step,
        "signals": n,
        "signals_per_s": n / signals_s,
        "steady_per_s": (n - first_n) / (signals_s - first_s) if n > first_n else 0.0,
        "cpu_us": cpu_s / n * 1e6,
        "backend_cpu_us": backend_s / n * 1e6,
        "batches": batches,
        "statements_per_batch": statements / batches,
        "emails": delivered,
        "emails_per_s": delivered / mail_s,
        "senders": senders,
        "peer": peer,
        "per_sender": [d["sent"] for d in done],
        "sender_cpu_us": sum(d["cpu"] for d in done) / delivered * 1e6,
        "sink_cpu_us": sink_cpu / delivered * 1e6,
        "smtp_connections": sum(d["connections"] for d in done),
    }


def _deliver(settings: Settings, worker_id: str, go, results) -> None:
    """One sender process: deliver until no due message is left; report what it sent and
    its CPU seconds."""
    from services.outreach.delivery.worker import SenderWorker
    from shared.clock import SimulatedClock
    from shared.db import make_engine, make_session_factory

    engine = make_engine(settings)
    sender = SenderWorker(settings, make_session_factory(engine), SimulatedClock(T0), worker_id=worker_id)
    results.put("ready")
    go.wait()
    cpu, sent = time.process_time(), 0
    while got := sender.poll_once():
        sent += got
    cpu = time.process_time() - cpu
    results.put({"worker": worker_id, "sent": sent, "cpu": cpu, "connections": sender.smtp.connections_opened})
    sender.close()
    engine.dispose()


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _message_id(path: Path) -> bytes:
    with path.open("rb") as f:
        for line in f:
            if line.lower().startswith(b"message-id:"):
                return line.split(b":", 1)[1].strip()
            if line in (b"\r\n", b"\n"):
                break
    raise AssertionError(f"{path} has no Message-ID")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--signals", type=int, default=5000)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--step", choices=["send", "recommend"], default="send", help="the playbook's first step (default: send)")
    p.add_argument("--senders", default="1", help="sender processes sharing the outbox, e.g. 1,2: one whole run each (default: 1)")
    p.add_argument(
        "--peer",
        choices=["devmail", "smtp-sink"],
        default="devmail",
        help="the SMTP server: touchline's mail sink (default) or Postfix's smtp-sink (Debian's postfix package)",
    )
    args = p.parse_args(argv)
    if args.peer == "smtp-sink" and not SMTP_SINK:
        p.error("--peer smtp-sink needs Postfix's smtp-sink: apt-get install postfix")
    kinds = [k for k in args.db.split(",") if k]
    if "postgresql" in kinds:
        try:
            e = create_engine(
                make_url(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG).replace("postgresql://", "postgresql+psycopg://", 1))
            )
            with e.connect():
                pass
            e.dispose()
        except Exception as exc:  # report and go on with SQLite
            print(f"PostgreSQL not reachable ({type(exc).__name__}); skipping it")
            kinds.remove("postgresql")
    broker = EmbeddedBroker("127.0.0.1", free_port(), Path(tempfile.mkdtemp()) / "broker.log").start()
    try:
        print(
            f"{'db':<11}{'step':<10}{'signals':>8}{'signals/s':>11}{'after 1st':>11}{'CPU us/sig':>12}{'backend':>9}{'batches':>9}{'stmts/batch':>13}{'emails':>8}{'senders':>8}"
            f"{'emails/s':>10}{'sender CPU us/email':>21}{'sink CPU us/email':>19}{'SMTP conns':>12}  per sender"
        )
        for kind in kinds:
            for senders in [int(k) for k in args.senders.split(",") if k]:
                r = run_one(kind, args.signals, broker, args.step, senders, args.peer)
                print(
                    f"{r['db']:<11}{r['step']:<10}{r['signals']:>8}{r['signals_per_s']:>11.0f}{r['steady_per_s']:>11.0f}{r['cpu_us']:>12.0f}{r['backend_cpu_us']:>9.0f}{r['batches']:>9}{r['statements_per_batch']:>13.1f}"
                    f"{r['emails']:>8}{r['senders']:>8}{r['emails_per_s']:>10.0f}{r['sender_cpu_us']:>21.0f}{r['sink_cpu_us']:>19.0f}"
                    f"{r['smtp_connections']:>12}  {r['per_sender']}  (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    raise SystemExit(main())
