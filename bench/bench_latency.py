"""End-to-end latency: how long an event takes to become a signal and an email, under a
steady stream, with the whole system running as `touchline run` runs it.

    make bench-latency                                  # 1,000 events/s for 60 s
    LATENCY_SECONDS=30 LATENCY_RATE=500 make bench-latency

What runs: `touchline run` in a subprocess (the embedded broker, the API, the ingest,
rules, outreach, timers, sender, engagements and jobs workers, the SMTP mail sink, each
its own process) against a fresh PostgreSQL database created for the run at
TOUCHLINE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test) and
dropped at the end; ports and the var directory are private to the run.

Through the API it creates two rules and two playbooks that email the account's champion
(holdout 0):
* an event-triggered rule on `report_created` that fires when the report is big
  (`event.properties.rows >= 10000`). Every event of the stream is a track event; the
  `report_created` ones on background accounts are small, so the rule is evaluated on
  them and does not fire; LATENCY_TRIGGER_RATE per second (default 10) are big reports
  on accounts of their own, so exactly those accounts fire once each (cooldown 7d);
* a scheduled absence rule (`every: 1m`, the shortest a rule may ask for): an account of
  the `quiet` cohort (LATENCY_QUIET_ACCOUNTS, default 100) that sent a `heartbeat` and
  then nothing for LATENCY_QUIET_SECONDS (default 20 s). Each quiet account sends one
  heartbeat during the stream; the rule becomes true LATENCY_QUIET_SECONDS later and
  fires on the next tick that runs it. Its latency is measured from the moment the
  rule became true and is bounded by the larger of the tick interval
  (TOUCHLINE_RULES_TICK_SECONDS, set to LATENCY_TICK_SECONDS, default 60 as in
  production) and the rule's `every`, plus the tick's own duration.

So that what is measured is not suppressed, the run sets explicitly: the event
freshness window to an hour (events are seconds old), the contact and account caps to
10 per day (each contact gets one email), quiet hours off, holdout 0, and the tick's
ingest-lag gate to 5,000 records (five seconds of this stream).

Every contact is identified (champion, email) before the stream starts; then a Kafka
producer (kafka-python, linger 5 ms, as a product backend would) sends LATENCY_RATE
events/s (default 1,000) for LATENCY_SECONDS (default 60) over LATENCY_ACCOUNTS
background accounts (default 1,000), each event stamped with the wall clock when it is
sent. Signals are seen by polling the signals table every 100 ms (the resolution of
"stored"); an email's acceptance time is the sink's own: it names every file it keeps
after the nanosecond it accepted the message. The breakdown per stage comes from the
rows' own timestamps (ingest's received_at, the rule's fired_at, outreach's receipt,
the message's created_at and sent_at).

A benchmark, not a test: it prints and asserts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from pathlib import Path

import httpx
from kafka import KafkaProducer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.broker import free_port

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
EVENT_RULE = "bench-big-report"
TICK_RULE = "bench-went-quiet"
BIG_ROWS = 50_000
# fired_at is stamped before the batch commits: the watcher looks back this far.
_LOOKBACK = timedelta(seconds=60)


def wait_ready(base: str, run: subprocess.Popen, log_path: Path, timeout: float = 180) -> bool:
    """Wait until ``touchline run`` (``run``) answers /readyz at ``base``; False (and a
    line naming its log) if it exits or is not ready within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or run.poll() is not None:
            print(f"touchline run did not become ready; see {log_path}")
            return False
        time.sleep(0.5)  # polling a starting process


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def pg_database(base_url: str, prefix: str = "touchline_latency") -> tuple[str, Callable[[], None]]:
    """A fresh PostgreSQL database beside ``base_url``'s: its URL and a function that drops it."""
    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()

    def drop() -> None:
        a = create_engine(url, isolation_level="AUTOCOMMIT")
        with a.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        a.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def rules(quiet_seconds: float) -> list[dict]:
    return [
        {
            "id": EVENT_RULE,
            "name": "Big report",
            "kind": "lifecycle",
            "severity": "low",
            "enabled": True,
            "trigger": {"events": ["report_created"]},
            "cooldown": "7d",
            "condition": {
                "all": [
                    {"field": "event.properties.rows", "op": ">=", "value": 10_000},
                    {"metric": "count", "event": "report_created", "window": "1d", "op": ">=", "value": 1},
                ]
            },
        },
        {
            "id": TICK_RULE,
            "name": "Went quiet",
            "kind": "lifecycle",
            "severity": "low",
            "enabled": True,
            "trigger": {"schedule": {"every": "1m"}},
            "cooldown": "7d",
            "condition": {
                "all": [
                    {"field": "account.traits.cohort", "op": "==", "value": "quiet"},
                    {"metric": "count", "event": "heartbeat", "window": "1d", "op": ">=", "value": 1},
                    {"metric": "days_since", "event": "heartbeat", "op": ">=", "value": quiet_seconds / 86400},
                ]
            },
        },
    ]


def playbook(rule_id: str) -> dict:
    return {
        "name": f"Latency {rule_id}",
        "trigger": {"rules": [rule_id]},
        "holdout_percent": 0,
        "steps": [{"type": "send", "channel": "email", "template": "win-back", "to": ["champion"]}, {"type": "wait", "duration": "7d"}],
    }


def percentiles(values: list[float]) -> dict[str, float | int]:
    """Nearest-rank p50/p95/p99 and the max, in seconds."""
    if not values:
        return {"n": 0}
    s = sorted(values)

    def rank(p: float) -> float:
        return s[min(len(s) - 1, max(0, int(-(-p * len(s) // 100)) - 1))]

    return {"n": len(s), "p50": rank(50), "p95": rank(95), "p99": rank(99), "max": s[-1]}


def row(label: str, values: list[float]) -> str:
    p = percentiles(values)
    if not p["n"]:
        return f"  {label:<36}{0:>7}        -       -       -       -"
    return f"  {label:<36}{p['n']:>7}{p['p50']:>9.2f}{p['p95']:>8.2f}{p['p99']:>8.2f}{p['max']:>8.2f}"


class SignalWatcher:
    """Polls the signals table every ``period`` seconds and notes when each signal was
    first visible (committed): the "signal stored" time, to within the period."""

    def __init__(self, url: str, period: float = 0.1):
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), pool_size=1)
        self.period = period
        self.seen: dict[str, tuple[float, str, str, str | None, datetime]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        since = datetime(1970, 1, 1, tzinfo=UTC)
        while not self.stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT signal_id, rule_id, account_id, event_id, fired_at FROM signals WHERE fired_at >= :since"),
                    {"since": since},
                ).all()
            now = time.time()
            for sid, rule, account, event_id, fired in rows:
                if sid not in self.seen:
                    self.seen[sid] = (now, rule, account, event_id, fired)
            if self.seen:
                latest = max(v[4] for v in self.seen.values())
                since = latest.replace(tzinfo=latest.tzinfo or UTC) - _LOOKBACK
            self.stop.wait(self.period)  # the sampling period of the watcher

    def count(self, rule_id: str) -> int:
        return sum(1 for v in list(self.seen.values()) if v[1] == rule_id)


def main() -> int:
    seconds = env_float("LATENCY_SECONDS", 60)
    rate = env_float("LATENCY_RATE", 1000)
    trigger_rate = env_float("LATENCY_TRIGGER_RATE", 10)
    n_accounts = int(env_float("LATENCY_ACCOUNTS", 1000))
    tick = int(env_float("LATENCY_TICK_SECONDS", 60))
    quiet_after = env_float("LATENCY_QUIET_SECONDS", 20)
    n_quiet = int(env_float("LATENCY_QUIET_ACCOUNTS", 100))
    drain_timeout = env_float("LATENCY_DRAIN_SECONDS", 180)
    rng = random.Random(7)

    total = int(rate * seconds)
    trig_every = max(1, int(rate / trigger_rate)) if trigger_rate > 0 else total + 1
    trigger_slots = {i: f"trig-{i // trig_every:05d}" for i in range(0, total, trig_every)}
    # Heartbeats spread so that the rule becomes true for each quiet account during the stream.
    quiet_span = max(1.0, seconds - quiet_after)
    quiet_slots = {min(total - 1, int(k * quiet_span / max(1, n_quiet) * rate)) + 1: f"quiet-{k:04d}" for k in range(n_quiet)}
    quiet_slots = {i: a for i, a in quiet_slots.items() if i not in trigger_slots}
    trig_accounts, quiet_accounts = list(trigger_slots.values()), list(quiet_slots.values())

    work = Path(tempfile.mkdtemp(prefix="touchline-latency-"))
    var = work / "var"
    db_url, drop = pg_database(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG))
    broker_port, api_port, mail_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    config = {
        "TOUCHLINE_DATABASE_URL": db_url.replace("postgresql+psycopg://", "postgresql://", 1),
        "TOUCHLINE_VAR_DIR": str(var),
        "TOUCHLINE_EMBEDDED_BROKER_PORT": str(broker_port),
        "TOUCHLINE_API_PORT": str(api_port),
        "TOUCHLINE_MAIL_SINK_PORT": str(mail_port),
        "TOUCHLINE_LOG_LEVEL": os.environ.get("LATENCY_LOG_LEVEL", "WARNING"),
        # What must not suppress the measurement (see the docstring):
        "TOUCHLINE_RULES_EVENT_FRESHNESS_SECONDS": "3600",
        "TOUCHLINE_CONTACT_CAP_MESSAGES": "10",
        "TOUCHLINE_CONTACT_CAP_DAYS": "1",
        "TOUCHLINE_ACCOUNT_CAP_TOUCHES": "10",
        "TOUCHLINE_ACCOUNT_CAP_DAYS": "1",
        "TOUCHLINE_QUIET_HOURS_START": "0",
        "TOUCHLINE_QUIET_HOURS_END": "0",
        "TOUCHLINE_RULES_TICK_SECONDS": str(tick),
        "TOUCHLINE_RULES_MAX_INGEST_LAG": "5000",
    }
    env.update(config)
    load_before = os.getloadavg()
    print(
        f"bench-latency: {rate:g} events/s for {seconds:g} s over {n_accounts} accounts; {len(trig_accounts)} "
        f"event-rule firings, {len(quiet_accounts)} tick-rule firings; tick {tick} s, quiet after {quiet_after:g} s",
        flush=True,
    )
    print(
        f"  machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; logs in {work}",
        flush=True,
    )
    print(
        "  settings: "
        + " ".join(
            f"{k.removeprefix('TOUCHLINE_')}={v}"
            for k, v in config.items()
            if k not in ("TOUCHLINE_DATABASE_URL", "TOUCHLINE_VAR_DIR") and "PORT" not in k
        ),
        flush=True,
    )
    log = open(work / "run.log", "w")
    run = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    watcher = None
    try:
        base = f"http://127.0.0.1:{api_port}"
        if not wait_ready(base, run, work / "run.log"):
            return 1
        headers = {"Authorization": f"Bearer {(var / 'dev-admin-key').read_text().strip()}"}
        for rule in rules(quiet_after):
            r = httpx.post(f"{base}/v1/rules", headers=headers, json=rule, timeout=30)
            if r.status_code != 201:
                print(f"rule {rule['id']}: {r.status_code} {r.text}")
                return 1
        for rule_id in (EVENT_RULE, TICK_RULE):
            r = httpx.put(f"{base}/v1/playbooks/latency-{rule_id}", headers=headers, json=playbook(rule_id), timeout=30)
            if r.status_code != 200:
                print(f"playbook for {rule_id}: {r.status_code} {r.text}")
                return 1

        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{broker_port}", linger_ms=5, acks="all")
        topic = "product.events"

        def send(ev: dict) -> None:
            producer.send(topic, key=ev["account_id"].encode(), value=json.dumps(ev).encode())

        # Setup, not measured: every contact (and the quiet cohort's trait), stored before the stream.
        now = datetime.now(UTC).isoformat()
        for a in trig_accounts + quiet_accounts:
            send(
                {
                    "event_id": f"id-{a}",
                    "type": "identify",
                    "account_id": a,
                    "user_id": "champ",
                    "timestamp": now,
                    "traits": {"email": f"champ@{a}.bench.test", "name": "Champ", "role": "champion"},
                }
            )
        for a in quiet_accounts:
            send({"event_id": f"grp-{a}", "type": "group", "account_id": a, "timestamp": now, "traits": {"cohort": "quiet"}})
        producer.flush()
        engine = create_engine(db_url, pool_size=1)
        setup_deadline = time.monotonic() + 180
        expected = len(trig_accounts) + 2 * len(quiet_accounts)
        while True:
            with engine.connect() as conn:
                stored = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
            if stored >= expected:
                break
            if time.monotonic() > setup_deadline:
                print(f"setup: only {stored} of {expected} contact events stored; see {work / 'run.log'}")
                return 1
            time.sleep(0.2)  # polling the database for the setup

        watcher = SignalWatcher(db_url)
        watcher.thread.start()
        names = ["login", "page_view", "report_created", "export"]
        sent_at: dict[str, float] = {}  # trigger account -> the event's timestamp (epoch s)
        true_at: dict[str, float] = {}  # quiet account -> when its rule became true
        trigger_event_ids: dict[str, str] = {}
        behind = 0.0
        t0 = time.time()
        i = 0
        while i < total:
            due = min(total, int((time.time() - t0) * rate) + 1)
            if due <= i:
                time.sleep(max(0.0, t0 + i / rate - time.time()))  # the stream's pacing
                continue
            behind = max(behind, time.time() - (t0 + (due - 1) / rate))
            for j in range(i, due):
                ts = time.time()
                stamp = datetime.fromtimestamp(ts, UTC).isoformat()
                eid = uuid.uuid4().hex
                if j in trigger_slots:
                    a = trigger_slots[j]
                    ev = {
                        "event_id": eid,
                        "account_id": a,
                        "user_id": "champ",
                        "name": "report_created",
                        "timestamp": stamp,
                        "properties": {"rows": BIG_ROWS},
                    }
                    sent_at[a], trigger_event_ids[a] = ts, eid
                elif j in quiet_slots:
                    a = quiet_slots[j]
                    ev = {"event_id": eid, "account_id": a, "user_id": "champ", "name": "heartbeat", "timestamp": stamp}
                    true_at[a] = ts + quiet_after
                else:
                    name = rng.choice(names)
                    ev = {
                        "event_id": eid,
                        "account_id": f"acct-{rng.randrange(n_accounts):05d}",
                        "user_id": f"u{rng.randrange(10)}",
                        "name": name,
                        "timestamp": stamp,
                        "properties": {"rows": rng.randint(1, 5000)} if name == "report_created" else {},
                    }
                send(ev)
            i = due
        producer.flush()
        elapsed = time.time() - t0
        load_during = os.getloadavg()
        print(
            f"  sent {total} events in {elapsed:.1f} s ({total / elapsed:.0f}/s; the producer was at most "
            f"{behind * 1000:.0f} ms behind schedule); load average at the end of the stream "
            f"{load_during[0]:.2f} {load_during[1]:.2f} {load_during[2]:.2f}",
            flush=True,
        )

        mail_dir = var / "mail"
        want = len(trig_accounts) + len(quiet_accounts)
        drain_deadline = time.monotonic() + drain_timeout
        while time.monotonic() < drain_deadline:
            signals = watcher.count(EVENT_RULE) + watcher.count(TICK_RULE)
            emails = len(list(mail_dir.glob("*.eml"))) if mail_dir.is_dir() else 0
            if signals >= want and emails >= want:
                break
            time.sleep(0.5)  # waiting for the system to finish what was sent
        watcher.stop.set()
        watcher.thread.join(10)

        # Emails: the sink's acceptance time is in each file's name.
        accepted: dict[str, float] = {}
        for path in mail_dir.glob("*.eml") if mail_dir.is_dir() else []:
            msg = BytesParser().parsebytes(path.read_bytes(), headersonly=True)
            to = str(msg.get("To", ""))
            account = to.split("@", 1)[1].split(".bench.test", 1)[0] if "@" in to else ""
            accepted.setdefault(account, int(path.name.split("-", 1)[0]) / 1e9)
        # The stages, from the rows' own timestamps.
        with engine.connect() as conn:
            ingested = {
                a: ts.timestamp()
                for a, ts in conn.execute(
                    text(
                        "SELECT account_id, received_at FROM events WHERE name IN ('report_created', 'heartbeat') "
                        "AND (account_id LIKE 'trig-%' OR account_id LIKE 'quiet-%')"
                    )
                ).all()
            }
            received = {
                a: ts.timestamp() for a, ts in conn.execute(text("SELECT account_id, received_at FROM outreach_signal_receipts")).all()
            }
            queued = {
                a: (c.timestamp(), s.timestamp() if s else None)
                for a, c, s in conn.execute(text("SELECT account_id, created_at, sent_at FROM messages WHERE channel = 'email'")).all()
            }
            states = {
                f"{s}:{r}" if r else s: n
                for s, r, n in conn.execute(text("SELECT state, skip_reason, count(*) FROM messages GROUP BY state, skip_reason")).all()
            }
        engine.dispose()

        def stages(origin: dict[str, float], rule_id: str, from_ingest: bool) -> list[tuple[str, list[float]]]:
            sigs = {v[2]: v for v in watcher.seen.values() if v[1] == rule_id}
            out = []
            if from_ingest:
                out.append(("ingested (events.received_at)", [ingested[a] - t for a, t in origin.items() if a in ingested]))
            out += [
                ("rule fired (its batch began)", [sigs[a][4].timestamp() - t for a, t in origin.items() if a in sigs]),
                ("SIGNAL STORED (seen committed)", [sigs[a][0] - t for a, t in origin.items() if a in sigs]),
                ("outreach got the signal (batch began)", [received[a] - t for a, t in origin.items() if a in received]),
                ("email queued (its batch began)", [queued[a][0] - t for a, t in origin.items() if a in queued]),
                (
                    "email sent (messages.sent_at)",
                    [queued[a][1] - t for a, t in origin.items() if a in queued and queued[a][1] is not None],
                ),
                ("EMAIL ACCEPTED by the SMTP sink", [accepted[a] - t for a, t in origin.items() if a in accepted]),
            ]
            return out

        load_after = os.getloadavg()
        print(f"\n  latency in seconds; load average now {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        print(f"  {'':<36}{'count':>7}{'p50':>9}{'p95':>8}{'p99':>8}{'max':>8}")
        print(f"  event-triggered rule {EVENT_RULE}: from the event's timestamp ({len(sent_at)} trigger events among {total} sent)")
        for label, values in stages(sent_at, EVENT_RULE, True):
            print(row(label, values))
        print(
            f"  tick-based rule {TICK_RULE}: from the moment it became true (heartbeat + {quiet_after:g} s; "
            f"{len(true_at)} accounts); bounded by the tick interval ({tick} s) plus the tick's duration"
        )
        for label, values in stages(true_at, TICK_RULE, False):
            print(row(label, values))
        print(
            f"\n  counts: events sent {total}; signals {watcher.count(EVENT_RULE)} event-triggered "
            f"(expected {len(sent_at)}), {watcher.count(TICK_RULE)} tick (expected {len(true_at)}); "
            f"emails accepted by the sink {len(accepted)} (expected {want}); messages by state {states}",
            flush=True,
        )
        return 0
    finally:
        if watcher is not None:
            watcher.stop.set()
        run.send_signal(signal.SIGINT)
        try:
            run.wait(300)
        except subprocess.TimeoutExpired:
            run.kill()
        log.close()
        drop()


if __name__ == "__main__":
    sys.exit(main())
