"""Outreach benchmark: signals per second through enrolment and contact policy (the
consumer on cs.signals: dedupe, playbook match, holdout, policy checks, template
render, outbox insert, offsets after commit), then emails per second delivered by the
sender to the embedded SMTP sink over one reused connection (``--senders 1,2``: one run
with each number of sender processes sharing the outbox, checking that no Message-ID
reaches the sink twice; each sender's and the sink's CPU per email; ``--peer smtp-sink``:
Postfix's C test server instead of our Python sink). The enrolment consumers run as
processes in one group, as ``touchline worker outreach`` does (``--consumers 1,2``: one
run with each number of them sharing cs.signals, which has the product's 4 partitions or
one per consumer if more; default 1). Each joins the group on the empty topic, the
signals are published once the partitions are split, and all start at once. The bench
checks that every signal was handled once across the group (one enrolment, one message
and one decision per signal, no signal enrolled twice), and prints signals/s from the
first record any consumer handled to the last; signals/s without the first batches
("after 1st": from the moment every consumer has finished its first, whose poll also
waits out the first fetch); each consumer's CPU per signal and, on PostgreSQL, its
backends' (``/proc``); the statements sent per batch (an engine event listener); and how
many cores the whole machine was busy meanwhile (the cores are shared: a second
consumer is only faster if one is free). 2026-12-07, PostgreSQL, 26 runs each, alternating,
on 2 cores shared with two other helpers: one consumer 1,717-3,497 signals/s, two
1,375-6,436 (5,000 reached in 5 of 26, when the two cores were nearly theirs;
docs/performance.md, "Outreach").

    make bench-outreach
    .venv/bin/python -m bench.bench_outreach --signals 5000 --db sqlite,postgresql
    .venv/bin/python -m bench.bench_outreach --db postgresql --consumers 1,2,1,2   # scale-out
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
import bisect
import functools
import json
import multiprocessing
import operator
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
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


def run_one(
    kind: str, n: int, broker: EmbeddedBroker, step: str = "send", senders: int = 1, peer: str = "devmail", consumers: int = 1
) -> dict:
    from kafka import KafkaProducer

    from services.ingest.models import Account, AccountEventSeen, User
    from services.outreach.content.schemas import ResourceIn
    from services.outreach.content.service import save as save_resource
    from services.outreach.models import Enrollment, Message, OutreachDecision
    from services.outreach.playbooks.schemas import PlaybookDefinition
    from services.outreach.playbooks.service import save as save_playbook
    from services.outreach.starter import starter_resources, starter_templates
    from services.outreach.templates.schemas import TemplateIn
    from services.outreach.templates.service import save as save_template
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
        # The product's partition count for cs.signals, or more: a consumer without a partition idles.
        topic_partitions=max(Settings.model_fields["topic_partitions"].default, consumers),
    )
    engine = make_engine(settings)
    upgrade(engine)
    factory = make_session_factory(engine)
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
    ensure_topics(settings)  # cs.signals with settings.topic_partitions, as in production

    def count(model, column=None) -> int:
        with factory() as s:
            return s.scalar(select(func.count(column.distinct()) if column is not None else func.count()).select_from(model))

    # Under `touchline run` (or several `touchline worker outreach`) each consumer is its own
    # process with its own connections, the group sharing the partitions. Each joins the group
    # on the empty topic and is ready once the partitions are split among them; the signals are
    # published, then they all start at once and stop when they have handled N between them.
    engine.dispose()
    spawn = multiprocessing.get_context("spawn")
    owned, handled = spawn.Array("q", consumers), spawn.Value("q", 0)
    procs, go, results = _ready_processes(spawn, _enrol, [(settings, k, n, owned, handled) for k in range(consumers)])
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
    # What the whole machine is busy with meanwhile (every process: ours, PostgreSQL, the
    # broker, the other helpers' work), sampled every 20 ms and read over the enrolment's own
    # window below, not the wait for the consumers' last (empty) polls.
    load, machine, sampled = os.getloadavg()[0], [(time.perf_counter(), _machine_busy())], threading.Event()

    def sample() -> None:
        while not sampled.wait(0.02):
            machine.append((time.perf_counter(), _machine_busy()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    go.set()
    enrolled = sorted((results.get(timeout=3600) for _ in procs), key=lambda f: f["consumer"])
    sampled.set()
    sampler.join()
    machine.append((time.perf_counter(), _machine_busy()))
    for proc in procs:
        proc.join(30)
    batches = [b for f in enrolled for b in f["batches"]]
    assert sum(got for _, _, got in batches) == n, [f["signals"] for f in enrolled]  # none handled twice (no redelivery)
    start, end = min(t0 for t0, _, _ in batches), max(t1 for _, t1, _ in batches)
    # "After 1st": from the moment every consumer has finished its first batch (whose poll
    # also waits out the first fetch), counting each batch's signals in proportion to its
    # time inside that window. With one consumer: the run without its first batch.
    warm = max(f["batches"][0][1] for f in enrolled if f["batches"])
    steady = sum(got * (t1 - max(t0, warm)) / (t1 - t0) for t0, t1, got in batches if t1 > warm)
    busy_cores = (_busy_at(machine, end) - _busy_at(machine, start)) / (end - start)  # in cores of the machine
    # Effectively once across the group: one enrolment and one message per signal, no signal
    # enrolled twice, a decision for each.
    assert count(Enrollment) == n and count(Message) == n, (count(Enrollment), count(Message))
    assert count(Enrollment, Enrollment.signal_id) == n and count(Message, Message.enrollment_id) == n
    assert count(OutreachDecision) == n
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
    # senders share the outbox: SKIP LOCKED claims); they all start at once and stop when
    # none finds a due message.
    engine.dispose()
    procs, go, results = _ready_processes(spawn, _deliver, [(settings, f"bench-{k}") for k in range(senders)])
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
    shutil.rmtree(tmp, ignore_errors=True)  # the SQLite file and the sink's 5,000 messages a run
    return {
        "db": kind,
        "step": step,
        "signals": n,
        "consumers": consumers,
        "signals_per_s": n / (end - start),
        "steady_per_s": steady / (end - warm) if end > warm else 0.0,
        "cpu_us": sum(f["cpu"] for f in enrolled) / n * 1e6,
        "backend_cpu_us": sum(f["backend_cpu"] for f in enrolled) / n * 1e6,
        "per_consumer": [(f["signals"], f["cpu"] / f["signals"] * 1e6 if f["signals"] else 0.0) for f in enrolled],
        "batches": len(batches),
        "statements_per_batch": sum(f["statements"] for f in enrolled) / len(batches),
        "load": load,
        "busy_cores": busy_cores,
        "emails": delivered,
        "emails_per_s": delivered / mail_s,
        "senders": senders,
        "peer": peer,
        "per_sender": [d["sent"] for d in done],
        "sender_cpu_us": sum(d["cpu"] for d in done) / delivered * 1e6,
        "sink_cpu_us": sink_cpu / delivered * 1e6,
        "smtp_connections": sum(d["connections"] for d in done),
    }


def _ready_processes(spawn, target, args: list[tuple]) -> tuple[list, object, object]:
    """Start ``target(*a, go, results)`` for each ``a`` of ``args``, each its own process
    with its own connections, as under ``touchline run``, and wait until every one has put
    "ready" (imports, engine; a consumer also its share of the partitions): the clock starts
    when the caller sets ``go``, for all of them at once. Each then puts its figures."""
    go, results = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=target, args=(*a, go, results)) for a in args]
    for proc in procs:
        proc.start()
    ready = [results.get(timeout=120) for _ in procs]
    assert all(r == "ready" for r in ready), ready
    return procs, go, results


def _enrol(settings: Settings, index: int, n: int, owned, handled, go, results) -> None:
    """One enrolment consumer process (``touchline worker outreach``): a SignalWorker in the
    outreach group. It joins on the empty topic and is ready once every consumer holds
    partitions and none is held twice (``owned``: each consumer's partitions as a bit mask,
    written after each of its polls; the group is stable then, since no member comes or
    goes). After ``go`` it handles batches until the consumers have handled ``n`` signals
    between them (``handled``), and reports each batch's start, end and size, its CPU
    seconds over them, its backends' (``/proc``) and the statements it sent them."""
    from services.outreach.playbooks.worker import SignalWorker
    from shared.clock import SimulatedClock
    from shared.collector import freeze_startup_heap
    from shared.db import make_engine, make_session_factory

    engine = make_engine(settings)
    backends: set[int] = set()  # PostgreSQL on this machine: the pids of this process's connections
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", lambda conn, _record: backends.add(conn.info.backend_pid))
    consumer = SignalWorker(settings, make_session_factory(engine), SimulatedClock(T0))
    freeze_startup_heap()  # as `touchline worker` does before its loop
    every = (1 << settings.topic_partitions) - 1
    while True:
        consumer.poll_once(100)
        assert consumer.consumer is not None
        owned[index] = sum(1 << tp.partition for tp in consumer.consumer.assignment())
        masks = owned[:]
        if all(masks) and sum(masks) == every and functools.reduce(operator.or_, masks) == every:
            break
    issued = [0]

    def issue(*_args) -> None:
        issued[0] += 1

    event.listen(engine, "before_cursor_execute", issue)  # statements the database is sent, per batch
    results.put("ready")
    go.wait()
    before = {pid: _process_cpu(pid) for pid in backends}
    batches: list[tuple[float, float, int]] = []  # each batch's start and end (perf_counter: one clock for every process) and size
    cpu, statements = 0.0, 0
    while handled.value < n:
        # Only polls that carried records are timed: a consumer whose partitions are drained
        # waits in its poll for the others to finish.
        issued[0] = 0
        c, t = time.process_time(), time.perf_counter()
        got = consumer.poll_once(500)
        if got:
            batches.append((t, time.perf_counter(), got))
            cpu += time.process_time() - c
            statements += issued[0]
            with handled.get_lock():
                handled.value += got
    backend_cpu = sum(_process_cpu(pid) - before.get(pid, 0.0) for pid in backends if Path(f"/proc/{pid}").exists())
    consumer.close()
    engine.dispose()
    results.put(
        {
            "consumer": index,
            "signals": sum(got for _, _, got in batches),
            "batches": batches,
            "cpu": cpu,
            "backend_cpu": backend_cpu,
            "statements": statements,
        }
    )


def _deliver(settings: Settings, worker_id: str, go, results) -> None:
    """One sender process: deliver until no due message is left; report what it sent and
    its CPU seconds."""
    from services.outreach.delivery.worker import SenderWorker
    from shared.clock import SimulatedClock
    from shared.collector import freeze_startup_heap
    from shared.db import make_engine, make_session_factory

    engine = make_engine(settings)
    sender = SenderWorker(settings, make_session_factory(engine), SimulatedClock(T0), worker_id=worker_id)
    freeze_startup_heap()  # as `touchline worker` does before its loop
    results.put("ready")
    go.wait()
    cpu, sent = time.process_time(), 0
    while got := sender.poll_once():
        sent += got
    cpu = time.process_time() - cpu
    results.put({"worker": worker_id, "sent": sent, "cpu": cpu, "connections": sender.smtp.connections_opened})
    sender.close()
    engine.dispose()


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores (psutil, /proc/stat)."""
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + t.irq + t.softirq


def _busy_at(samples: list[tuple[float, float]], at: float) -> float:
    """The machine's busy seconds at ``at`` (perf_counter), interpolated between samples."""
    i = bisect.bisect_left([t for t, _ in samples], at)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, b0), (t1, b1) = samples[i - 1], samples[i]
    return b0 + (b1 - b0) * (at - t0) / (t1 - t0)


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
    p.add_argument(
        "--consumers",
        default="1",
        help="enrolment consumer processes in one group sharing cs.signals, e.g. 1,2: one whole run each (default: 1)",
    )
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
            f"{'db':<11}{'step':<10}{'signals':>8}{'consumers':>10}{'signals/s':>11}{'after 1st':>11}{'CPU us/sig':>12}{'backend':>9}{'batches':>9}{'stmts/batch':>13}"
            f"{'emails':>8}{'senders':>8}{'emails/s':>10}{'sender CPU us/email':>21}{'sink CPU us/email':>19}{'SMTP conns':>12}"
            "  per consumer (signals, CPU us/sig)  per sender  machine busy (cores)  load at go / end"
        )
        for kind in kinds:
            for consumers in [int(k) for k in args.consumers.split(",") if k]:
                for senders in [int(k) for k in args.senders.split(",") if k]:
                    r = run_one(kind, args.signals, broker, args.step, senders, args.peer, consumers)
                    print(
                        f"{r['db']:<11}{r['step']:<10}{r['signals']:>8}{r['consumers']:>10}{r['signals_per_s']:>11.0f}{r['steady_per_s']:>11.0f}"
                        f"{r['cpu_us']:>12.0f}{r['backend_cpu_us']:>9.0f}{r['batches']:>9}{r['statements_per_batch']:>13.1f}"
                        f"{r['emails']:>8}{r['senders']:>8}{r['emails_per_s']:>10.0f}{r['sender_cpu_us']:>21.0f}{r['sink_cpu_us']:>19.0f}"
                        f"{r['smtp_connections']:>12}  {[(k, round(us)) for k, us in r['per_consumer']]}  {r['per_sender']}"
                        f"  {r['busy_cores']:.2f}  (load {r['load']:.1f} / {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    raise SystemExit(main())
