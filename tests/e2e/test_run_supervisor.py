"""`touchline run` heals: every worker is SIGKILLed in turn while events stream in over
HTTP; the supervisor restarts each one and keeps the embedded broker up, and Ctrl-C
drains what the broker holds before stopping. The totals are exact: every accepted
event stored and counted once, every account's signal fired once, and every signal
has its outreach decision (receipt and enrolment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import httpx
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from shared.broker import free_port, port_open
from tests.support.helpers import wait_for

ACCOUNTS = 30
RULE = {
    "id": "kill-test",
    "name": "Logged in",
    "kind": "lifecycle",
    "severity": "low",
    "enabled": True,
    "trigger": {"events": ["login"]},
    "cooldown": "30d",
    "condition": {"metric": "count", "event": "login", "window": "1d", "op": ">=", "value": 1},
}
PLAYBOOK = {
    "name": "Kill test",
    "trigger": {"rules": ["kill-test"]},
    "holdout_percent": 0,
    "steps": [{"type": "send", "channel": "email", "template": "win-back", "to": ["champion"]}, {"type": "wait", "duration": "7d"}],
}
WORKERS = [
    "worker-ingest",
    "worker-rules",
    "worker-outreach",
    "worker-outreach-timers",
    "worker-outreach-sender",
    "worker-outreach-engagements",
    "worker-jobs",
]


def child_pid(supervisor: int, worker: str) -> int | None:
    name = worker.removeprefix("worker-")
    out = subprocess.run(
        ["pgrep", "-P", str(supervisor), "-f", f"services.wiring.cli worker {name}$"], capture_output=True, text=True
    ).stdout.split()
    return int(out[0]) if out else None


class Stream:
    """Posts rounds of events (two per account, the first a login) until stopped; a
    round that fails is posted again with the same ids, so it is accepted exactly once."""

    def __init__(self, base: str, headers: dict):
        self.base, self.headers = base, headers
        self.accepted: set[str] = set()
        self.rounds = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self.stop.is_set():
                now = datetime.now(UTC).isoformat()
                batch = [
                    {"event_id": str(uuid.uuid4()), "account_id": f"acct-{i:03d}", "user_id": "champ", "name": name, "timestamp": now}
                    for i in range(ACCOUNTS)
                    for name in ("login", "report_created")
                ]
                while not self._post(batch):
                    if self.stop.wait(0.5):  # pacing retries against a real process
                        return
                self.accepted.update(e["event_id"] for e in batch)
                self.rounds += 1
                self.stop.wait(0.2)  # pacing a live stream
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _post(self, batch) -> bool:
        try:
            return httpx.post(f"{self.base}/v1/events", headers=self.headers, json=batch, timeout=30).status_code == 202
        except httpx.HTTPError:
            return False


def test_sigkill_of_each_worker_under_touchline_run_loses_and_doubles_nothing(tmp_path):
    broker_port, api_port, mail_port = free_port(), free_port(), free_port()
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_VAR_DIR": str(var),
            "TOUCHLINE_EMBEDDED_BROKER_PORT": str(broker_port),
            "TOUCHLINE_API_PORT": str(api_port),
            "TOUCHLINE_MAIL_SINK_PORT": str(mail_port),
            "TOUCHLINE_DRAIN_TIMEOUT_SECONDS": "900",
            "TOUCHLINE_RETRY_MAX_SECONDS": "2",
            "TOUCHLINE_QUIET_HOURS_START": "0",
            "TOUCHLINE_QUIET_HOURS_END": "0",
        }
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log_file:  # a file, not a pipe: a full pipe would block the processes
        proc = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "run"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    stream = None
    try:
        # "Touchline is up" is said once it is true: the API answers the moment the line is logged.
        wait_for(lambda: "Touchline is up" in log_path.read_text(), 120, "the 'Touchline is up' line")
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 120, "/readyz", ignore=(httpx.HTTPError,))
        key = (var / "dev-admin-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{base}/v1/rules", headers=headers, json=RULE, timeout=30).status_code == 201
        assert httpx.put(f"{base}/v1/playbooks/kill-test", headers=headers, json=PLAYBOOK, timeout=30).status_code == 200
        now = datetime.now(UTC).isoformat()
        contacts = [
            {
                "event_id": f"id-{i}",
                "type": "identify",
                "account_id": f"acct-{i:03d}",
                "user_id": "champ",
                "timestamp": now,
                "traits": {"email": f"champ{i}@acct.test", "name": "Champ", "role": "champion"},
            }
            for i in range(ACCOUNTS)
        ]
        assert httpx.post(f"{base}/v1/events", headers=headers, json=contacts, timeout=30).status_code == 202

        stream = Stream(base, headers)
        stream.thread.start()
        for worker in WORKERS:
            rounds = stream.rounds
            wait_for(lambda rounds=rounds: stream.rounds >= rounds + 3 or stream.error, 180, "events to stream")
            pid = wait_for(lambda worker=worker: child_pid(proc.pid, worker), 60, f"{worker} to run")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda worker=worker, pid=pid: (p := child_pid(proc.pid, worker)) and p != pid, 120, f"{worker} to be restarted")
            assert proc.poll() is None, "the supervisor must outlive its workers"
        rounds = stream.rounds
        wait_for(lambda: stream.rounds >= rounds + 3 or stream.error, 180, "events to stream after the kills")
        stream.stop.set()
        stream.thread.join(60)
        assert stream.error is None, stream.error
    finally:
        if stream is not None:
            stream.stop.set()
        proc.send_signal(signal.SIGINT)  # stops the API, drains the broker, then stops it
        proc.wait(timeout=1200)
    out = log_path.read_text()
    assert proc.returncode == 0, out[-5000:]
    for worker in WORKERS:
        assert f"{worker} was killed by SIGKILL; restarting it" in out
    assert "drained " in out and "embedded broker stopped" in out
    assert not port_open("127.0.0.1", broker_port)

    from services.ingest.models import RawEvent, UsageDaily
    from services.outreach.models import Enrollment, Message, SignalReceipt
    from services.rules.models import SignalRecord

    engine = create_engine(f"sqlite:///{var / 'touchline.db'}")
    with Session(engine) as s:
        stored = set(s.scalars(select(RawEvent.event_id).where(RawEvent.type == "track")))
        assert len(stream.accepted) >= ACCOUNTS * 2 * 15
        assert stored == stream.accepted  # nothing lost
        assert s.scalar(select(func.sum(UsageDaily.count))) == len(stream.accepted)  # nothing counted twice
        signals = set(s.scalars(select(SignalRecord.signal_id).where(SignalRecord.rule_id == "kill-test")))
        assert len(signals) == ACCOUNTS  # one per account (cooldown), none missing, none doubled
        assert set(s.scalars(select(SignalReceipt.signal_id))) == signals  # every signal reached outreach
        enrolled = list(s.scalars(select(Enrollment.account_id).where(Enrollment.playbook_id == "kill-test")))
        assert sorted(enrolled) == [f"acct-{i:03d}" for i in range(ACCOUNTS)]  # ... and has its decision
        assert s.scalar(select(func.count()).select_from(Message).where(Message.playbook_id == "kill-test")) == ACCOUNTS
    engine.dispose()


def test_the_embedded_broker_is_recycled_when_it_grows_and_nothing_is_lost(tmp_path):
    """Tansu keeps every record in memory and cannot trim (no retention, no DeleteRecords):
    above TOUCHLINE_EMBEDDED_BROKER_MAX_MB the supervisor drains it and restarts it empty.
    With a limit of 1 MB it recycles every 30 s: events streamed across recycles are all
    stored once, and a dead-lettered record is carried over, not lost or doubled. The
    broker's RSS reaches /metrics, and the 1 MB warning threshold is logged."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    broker_port, api_port, mail_port = free_port(), free_port(), free_port()
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_VAR_DIR": str(var),
            "TOUCHLINE_EMBEDDED_BROKER_PORT": str(broker_port),
            "TOUCHLINE_API_PORT": str(api_port),
            "TOUCHLINE_MAIL_SINK_PORT": str(mail_port),
            "TOUCHLINE_DRAIN_TIMEOUT_SECONDS": "600",
            "TOUCHLINE_EMBEDDED_BROKER_MAX_MB": "1",
            "TOUCHLINE_EMBEDDED_BROKER_WARN_MB": "1",
        }
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "run"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{api_port}"
    bootstrap = f"127.0.0.1:{broker_port}"
    stream = None
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 120, "/readyz", ignore=(httpx.HTTPError,))
        headers = {"Authorization": f"Bearer {(var / 'dev-admin-key').read_text().strip()}"}
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("product.events", key=b"acct-000", value=b"not json at all")  # for the DLQ
        producer.flush()
        producer.close()
        stream = Stream(base, headers)
        stream.thread.start()
        wait_for(lambda: log_path.read_text().count("embedded broker recycled") >= 2 or stream.error, 400, "two broker recycles")
        stream.stop.set()
        stream.thread.join(60)
        assert stream.error is None, stream.error

        def settled() -> bool:  # no recycle half done
            text = log_path.read_text()
            return text.count("recycling it") == text.count("embedded broker recycled") + text.count("recycle postponed")

        wait_for(settled, 300, "a recycle in progress to finish")

        def dlq() -> list:
            consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
            tp = TopicPartition("product.events.dlq", 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            records = [r.value for r in consumer]
            consumer.close()
            return records

        assert wait_for(lambda: dlq() == [b"not json at all"], 120, "the DLQ record, once, after the recycles")
        # The supervisor's samples reach the API's /metrics (one multiprocess directory),
        # and its warning names the recycle that is on. (The API is down while a recycle
        # runs: ask until it answers.)
        metrics = wait_for(
            lambda: httpx.get(f"{base}/metrics", headers=headers, timeout=10).raise_for_status().text,
            300,
            "/metrics between recycles",
            interval=0.5,
            ignore=(httpx.HTTPError,),
        )
        rss = [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("touchline_embedded_broker_rss_bytes")]
        assert rss and rss[0] > 2**20, metrics[-2000:]
        assert "touchline_embedded_broker_warn_bytes 1.048576e+06" in metrics
        assert "recycling is on above 1 MB (TOUCHLINE_EMBEDDED_BROKER_MAX_MB)" in log_path.read_text()
    finally:
        if stream is not None:
            stream.stop.set()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=1200)
    out = log_path.read_text()
    assert proc.returncode == 0, out[-5000:]

    from services.ingest.models import RawEvent, UsageDaily

    engine = create_engine(f"sqlite:///{var / 'touchline.db'}")
    with Session(engine) as s:
        stored = set(s.scalars(select(RawEvent.event_id).where(RawEvent.type == "track")))
        assert stream.accepted and stored == stream.accepted
        assert s.scalar(select(func.sum(UsageDaily.count))) == len(stream.accepted)
    engine.dispose()
