"""Content benchmark (``make bench-content``; issue 22, item 10). Figures go to
docs/performance.md ("Segments, routing and the redirect").

1. **Segment membership per tick**: BENCH_SEGMENTS (50) named segments over BENCH_ACCOUNTS
   (100,000) accounts, refreshed as the rules worker's tick refreshes them
   (``run_segments``: every live segment over every account, the difference written, the
   sizes of the day stored). Three ticks, each timed: the first fills every segment (every
   member enters: a ``segment_entered`` signal each, through the outbox), the second finds
   nothing changed (the steady tick: what a tick costs every minute), the third follows a
   change of use case and a day of logins on 1% of the accounts (some leave, some enter).
   Aim: under 10 s a tick on PostgreSQL.
2. **The recommend step**: recipients per second through the signal consumer with a
   recommend step over the starter library, as ``bench.bench_outreach --step recommend``
   measures it (its ``run_one``: one recipient per signal, so signals/s is recipients/s).
   Aim: 1,000 recipients/s or more.
3. **The redirect** ``GET /r/{token}``: ``touchline api`` in a subprocess (real uvicorn with
   the API's own limits, as production serves it) on a broker of its own; tokens minted by
   the path a message's links take (``message_links``), each followed once, so every request
   is a recorded click handed to the producer. First an open loop at BENCH_REDIRECT_RATE
   (500) requests/s for BENCH_REDIRECT_SECONDS (10): p50, p99 and how far behind the
   schedule the client fell (aim: 500 requests/s with p99 under 20 ms); then closed loops
   at BENCH_REDIRECT_CLIENTS (1, 8, 32) keep-alive connections for the same time each:
   requests/s, p50, p99, statuses. (The open loop goes first: right after a saturating
   closed loop the API's producer is still sending its backlog of clicks.) The load generator (bench/bench_api.py's minimal asyncio client) runs on
   the same machine and takes its share of the CPU. Last, the API is stopped and the
   events topic read back: every link followed should be one click on it.

    make bench-content
    BENCH_PARTS=segments BENCH_ACCOUNTS=20000 .venv/bin/python -m bench.bench_content
    BENCH_DATABASES=postgresql,sqlite BENCH_PARTS=segments .venv/bin/python -m bench.bench_content
    BENCH_PROFILE=var/segments.prof BENCH_PARTS=segments .venv/bin/python -m bench.bench_content

Databases: PostgreSQL at TOUCHLINE_BENCH_POSTGRES_URL (default the local test server; a
fresh database per run, dropped afterwards, VACUUM ANALYZE after seeding as autovacuum
would); the segments part runs on BENCH_DATABASES (default ``postgresql``), the recommend
part on both. The segments' world is seeded straight into ingest's tables, as
bench/bench_health.py does (100,000 accounts through the ingest worker would take minutes
and measure ingest); the segments themselves are created through the segments service
(validated, versioned, audited). A benchmark, not a test: it prints and asserts nothing
beyond its own sanity.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

from bench.bench_api import Connection, Dropped
from bench.bench_ingest import DEFAULT_PG, PgDatabase
from bench.bench_latency import percentiles
from shared.broker import EmbeddedBroker, free_port, port_open
from shared.db import make_engine, make_session_factory, transaction
from shared.migrate import upgrade
from shared.settings import Settings

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
TODAY = NOW.date()
INSERT_ROWS = 20_000
USE_CASES = ["analytics", "monitoring", "collaboration", "operations", "reporting"]
INDUSTRIES = ["fintech", "retail", "healthcare", "media", "logistics", "saas", "education", "public"]
SIZES = ["1-10", "11-50", "51-200", "201-1000", "1000+"]
REGIONS = ["emea", "amer", "apac"]
SEGMENT_OF = ["smb", "mid_market", "enterprise"]
PLANS = ["starter", "pro", "enterprise"]
STAGES = ["onboarding", "active", "at_risk"]


def _env_list(name: str, default: str) -> list[str]:
    return [x for x in os.environ.get(name, default).split(",") if x]


# --- 1. Segment membership -------------------------------------------------------------


def seed_accounts(factory: Any, n: int) -> int:
    """``n`` accounts with a use case, industry, company size and region (traits), a plan,
    segment and lifecycle stage, and logins on a few of the last 14 days (usage_daily and
    the last-seen row days_since reads)."""
    from services.ingest.models import Account, AccountEventSeen, UsageDaily

    rng = random.Random(22)
    total = 0
    for lo in range(0, n, 5000):
        accounts: list[dict[str, Any]] = []
        usage: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        for i in range(lo, min(n, lo + 5000)):
            a = f"acct-{i:06d}"
            accounts.append(
                {
                    "id": a,
                    "name": f"Account {i}",
                    "plan": PLANS[i % 3],
                    "segment": SEGMENT_OF[i % 3],
                    "seats": 5 + i % 40,
                    "arr": 1000.0 * (5 + i % 40),
                    "lifecycle_stage": STAGES[i % 7 % 3],
                    "traits": {
                        "use_case": USE_CASES[i % len(USE_CASES)],
                        "industry": INDUSTRIES[i * 7 % len(INDUSTRIES)],
                        "company_size": SIZES[i * 3 % len(SIZES)],
                        "region": REGIONS[i * 11 % len(REGIONS)],
                    },
                    "first_seen_at": NOW - timedelta(days=400),
                    "last_seen_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            days = rng.sample(range(1, 15), rng.randint(0, 6))
            usage.extend({"account_id": a, "day": TODAY - timedelta(days=d), "event_name": "login", "count": 1 + (i + d) % 5} for d in days)
            if days:
                last = NOW - timedelta(days=min(days))
                seen.append({"account_id": a, "event_name": "login", "first_seen_at": NOW - timedelta(days=300), "last_seen_at": last})
        with transaction(factory) as s:
            for table, rows in ((Account.__table__, accounts), (UsageDaily.__table__, usage), (AccountEventSeen.__table__, seen)):
                for j in range(0, len(rows), INSERT_ROWS):
                    s.execute(table.insert(), rows[j : j + INSERT_ROWS])
                total += len(rows)
        print(f"  seeded {min(n, lo + 5000):,} accounts ({total:,} rows)", end="\r", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return total


def segment_definitions(count: int) -> list[dict[str, Any]]:
    """``count`` segments as CS Ops would write them: traits (use case, industry, size,
    region), an audience (plan, segment, stage) and usage (logins in 7 days, days since
    the last login), combined with ``all`` and ``any``; from 1% to about 15% of the
    accounts each (three memberships an account on average)."""
    out: list[dict[str, Any]] = []
    trait = "account.traits."
    for k in range(count):
        kind = k % 5
        uc, ind, size, region = USE_CASES[k % 5], INDUSTRIES[k % 8], SIZES[k % 5], REGIONS[k % 3]
        if kind == 0:
            cond: dict[str, Any] = {
                "all": [{"field": trait + "use_case", "op": "==", "value": uc}, {"field": trait + "industry", "op": "==", "value": ind}]
            }
            audience: dict[str, Any] = {}
        elif kind == 1:
            cond = {
                "all": [
                    {"field": trait + "industry", "op": "==", "value": ind},
                    {"field": trait + "company_size", "op": "in", "value": [size, SIZES[(k + 1) % 5]]},
                ]
            }
            audience = {"segment": [SEGMENT_OF[k % 3]]}
        elif kind == 2:
            cond = {
                "all": [
                    {"field": trait + "region", "op": "==", "value": region},
                    {"metric": "count", "event": "login", "window": "7d", "op": ">=", "value": 1 + k % 4},
                ]
            }
            audience = {"plan": [PLANS[k % 3]]}
        elif kind == 3:
            cond = {
                "any": [
                    {
                        "all": [
                            {"metric": "days_since", "event": "login", "op": ">=", "value": 7 + k % 5},
                            {"field": trait + "use_case", "op": "==", "value": uc},
                        ]
                    },
                    {"field": trait + "region", "op": "==", "value": f"{region}-north"},
                ]
            }
            audience = {"lifecycle_stage": ["active", "at_risk"]}
        else:
            cond = {
                "all": [
                    {"field": trait + "use_case", "op": "in", "value": [uc, USE_CASES[(k + 2) % 5]]},
                    {"metric": "count", "event": "login", "window": "7d", "op": "<", "value": 2},
                ]
            }
            audience = {}
        out.append(
            {"id": f"bench-{k:02d}", "name": f"Bench segment {k}", "condition": cond, **({"audience": audience} if audience else {})}
        )
    return out


class StatementTimes:
    """The statements an engine sends during a ``with`` block, and the time each took
    from the cursor's execute to its return (the database's time plus the driver's): what
    bounds a tick that is not CPU in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.by_text: dict[str, list[float]] = {}

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_t"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        key = " ".join(statement.split())[:140]
        self.by_text.setdefault(key, []).append(time.perf_counter() - conn.info.pop("bench_t", time.perf_counter()))

    def __enter__(self) -> StatementTimes:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_text.values())

    @property
    def total(self) -> float:
        return sum(sum(v) for v in self.by_text.values())

    def top(self, n: int) -> list[tuple[float, int, str]]:
        return sorted(((sum(v), len(v), k) for k, v in self.by_text.items()), reverse=True)[:n]


def run_segments_part(kind: str, n: int, count: int) -> dict[str, Any]:
    from services.ingest.models import Account, AccountEventSeen, UsageDaily
    from services.rules.evaluation.segments import run_segments
    from services.rules.models import SegmentMember
    from services.rules.segments.service import create, parse

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-content-")))
        url = (
            stack.enter_context(PgDatabase(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG)))
            if kind == "postgresql"
            else f"sqlite:///{tmp / 'bench.db'}"
        )
        settings = Settings(env="test", var_dir=tmp, database_url=url)
        engine = make_engine(settings)
        upgrade(engine)
        factory = make_session_factory(engine)
        t = time.perf_counter()
        rows = seed_accounts(factory, n)
        with transaction(factory) as s:
            for body in segment_definitions(count):
                create(s, parse(body, settings.raw_event_retention_days), "bench", NOW)
        if kind == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE"))
        seeded = time.perf_counter() - t
        ticks: list[dict[str, Any]] = []
        profile = os.environ.get("BENCH_PROFILE")
        for label in ("fill", "steady", "1% changed"):
            if label == "1% changed":
                with transaction(factory) as s:  # 1% of the accounts: a new use case, a login today
                    changed = [f"acct-{i:06d}" for i in range(0, n, 100)]
                    for acct in s.scalars(select(Account).where(Account.id.in_(changed))):
                        acct.traits = {
                            **acct.traits,
                            "use_case": USE_CASES[(USE_CASES.index(acct.traits["use_case"]) + 1) % len(USE_CASES)],
                        }
                    s.execute(UsageDaily.__table__.delete().where(UsageDaily.day == TODAY, UsageDaily.account_id.in_(changed)))
                    s.execute(
                        UsageDaily.__table__.insert(), [{"account_id": a, "day": TODAY, "event_name": "login", "count": 3} for a in changed]
                    )
                    s.execute(AccountEventSeen.__table__.update().where(AccountEventSeen.account_id.in_(changed)).values(last_seen_at=NOW))
            prof = cProfile.Profile() if profile and label == "steady" else None  # the steady tick: what every minute costs
            load = os.getloadavg()[0]
            cpu = time.process_time()
            t = time.perf_counter()
            if prof:
                prof.enable()
            with StatementTimes(engine) as statements:
                report = run_segments(factory, settings, NOW)
            if prof and profile:
                prof.disable()
                prof.dump_stats(profile)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            wall = time.perf_counter() - t
            ticks.append(
                {
                    "tick": label,
                    "seconds": wall,
                    "cpu_seconds": time.process_time() - cpu,
                    "entered": report.entered,
                    "left": report.left,
                    "load": load,
                    "statements": statements.count,
                    "db_seconds": statements.total,
                    "slowest": statements.top(4),
                }
            )
        with factory() as s:
            members = s.scalar(select(func.count()).select_from(SegmentMember))
        engine.dispose()
    return {"db": kind, "accounts": n, "segments": count, "rows": rows, "seed_s": seeded, "members": members, "ticks": ticks}


# --- 2. The recommend step ---------------------------------------------------------------


def run_recommend_part(kinds: list[str], n: int) -> list[dict[str, Any]]:
    from bench.bench_outreach import run_one

    broker = EmbeddedBroker("127.0.0.1", free_port(), Path(tempfile.mkdtemp()) / "broker.log").start()
    try:
        return [{**run_one(kind, n, broker, "recommend"), "load": os.getloadavg()[0]} for kind in kinds]
    finally:
        broker.stop()


# --- 3. The redirect ---------------------------------------------------------------------


def mint_links(settings: Settings, n: int) -> list[str]:
    """``n`` tracked-link paths (``/r/<token>``), minted the way a message's links are."""
    from services.outreach.links.rewriting import message_links

    out = []
    for i in range(n):
        body = message_links(
            {"text_body": f"https://help.example.com/guides/{i % 13}"},
            settings,
            now=datetime.now(UTC),
            message_id=f"m-{i}",
            account_id=f"acct-{i % 5000:06d}",
            user_id=f"u{i % 7}",
            playbook_id="win-back",
            resource_id=f"res-{i % 13}",
        )
        [path] = re.findall(r"/r/[\w-]+", body["text_body"])
        out.append(path)
    return out


async def _closed_loop(host: str, port: int, links: list[str], clients: int, seconds: float) -> dict[str, Any]:
    answers: list[tuple[int, float]] = []
    dropped = 0
    stop_at = time.perf_counter() + seconds
    it = iter(links)

    async def client() -> None:
        nonlocal dropped
        conn = Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                path = next(it, None)
                if path is None:
                    return
                t = time.perf_counter()
                try:
                    status = await conn.request("GET", path, [])
                except Dropped:
                    dropped += 1
                    continue
                answers.append((status, time.perf_counter() - t))
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return _summary(answers, dropped, time.perf_counter() - t0, clients=clients)


async def _open_loop(host: str, port: int, links: list[str], rate: float, seconds: float, pool: int = 32) -> dict[str, Any]:
    """Requests at a fixed ``rate`` (their start times on a schedule, whatever the answers),
    each on a free connection of a pool: latency counts from the scheduled start, so a
    server (or client) that falls behind shows it in the tail."""
    answers: list[tuple[int, float]] = []
    dropped = 0
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        free.put_nowait(Connection(host, port))
    total = int(rate * seconds)
    t0 = time.perf_counter()
    lag: list[float] = []

    async def one(k: int, path: str) -> None:
        nonlocal dropped
        due = t0 + k / rate
        conn = await free.get()
        lag.append(time.perf_counter() - due)
        try:
            status = await conn.request("GET", path, [])
            answers.append((status, time.perf_counter() - due))
        except Dropped:
            dropped += 1
        finally:
            free.put_nowait(conn)

    tasks = []
    for k, path in enumerate(links[:total]):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule of an open-loop load, not a stand-in for a clock
        tasks.append(asyncio.create_task(one(k, path)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait().close()
    out = _summary(answers, dropped, time.perf_counter() - t0, rate=rate)
    out["start_lag_p99_ms"] = 1000 * float(percentiles(lag).get("p99", 0.0))
    return out


def _summary(answers: list[tuple[int, float]], dropped: int, seconds: float, **extra: Any) -> dict[str, Any]:
    lat = [x for _, x in answers]
    pct = percentiles(lat)
    p50, p99 = float(pct.get("p50", 0.0)), float(pct.get("p99", 0.0))
    statuses: dict[int, int] = {}
    for st, _ in answers:
        statuses[st] = statuses.get(st, 0) + 1
    return {
        **extra,
        "requests": len(answers),
        "per_s": len(answers) / seconds,
        "p50_ms": 1000 * p50,
        "p99_ms": 1000 * p99,
        "max_ms": 1000 * max(lat, default=0.0),
        "statuses": statuses,
        "dropped": dropped,
        "load": os.getloadavg()[0],
    }


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_redirect_part(client_levels: list[int], seconds: float, rate: float) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-redirect-"))
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp / "broker.log").start()
    port = free_port()
    secret = uuid.uuid4().hex * 2
    env = {
        **os.environ,
        "TOUCHLINE_VAR_DIR": str(tmp),
        "TOUCHLINE_DATABASE_URL": f"sqlite:///{tmp / 'touchline.db'}",
        "TOUCHLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "TOUCHLINE_TOPIC_PREFIX": "bench.",
        "TOUCHLINE_SECRET_KEY": secret,
        "TOUCHLINE_API_PORT": str(port),
        "TOUCHLINE_API_HOST": "127.0.0.1",
        "TOUCHLINE_LOG_LEVEL": "WARNING",
    }
    settings = Settings(var_dir=tmp, secret_key=secret, kafka_bootstrap=broker.bootstrap, topic_prefix="bench.", api_port=port)
    # Up to 3,000 links a second for each closed-loop level (a level that runs out stops
    # early, and says so in its request count), and the open loop's.
    needed = int(len(client_levels) * seconds * 3_000 + rate * seconds) + 1000
    t = time.perf_counter()
    links = mint_links(settings, needed)
    minted_s = time.perf_counter() - t
    subprocess.run([sys.executable, "-m", "services.wiring.cli", "migrate"], env=env, check=True, capture_output=True)
    api = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "api"], env=env)
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port):
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("touchline api did not start")
            time.sleep(0.1)  # waiting for another process to listen
        asyncio.run(_closed_loop("127.0.0.1", port, links[:200], 4, 2.0))  # warm-up: connections, the producer
        used = 200
        # The open loop first, from the warmed-up API: after the closed loops have saturated
        # it, the API's producer still has tens of thousands of clicks to send, and the
        # first seconds at 500/s paid for that (p99 20-40 ms, then 3-8 ms in the next run).
        cpu = _cpu_seconds(api.pid)
        r = asyncio.run(_open_loop("127.0.0.1", port, links[used:], rate, seconds))
        used += r["requests"] + r["dropped"]
        out.append({"mode": "open", **r, "api_cpu_ms": 1000 * (_cpu_seconds(api.pid) - cpu) / max(1, r["requests"])})
        for clients in client_levels:
            cpu = _cpu_seconds(api.pid)
            r = asyncio.run(_closed_loop("127.0.0.1", port, links[used:], clients, seconds))
            used += r["requests"] + r["dropped"]
            out.append({"mode": "closed", **r, "api_cpu_ms": 1000 * (_cpu_seconds(api.pid) - cpu) / max(1, r["requests"])})
        _stop(api)  # a graceful stop: the API sends what it queued and flushes its producer
        published, distinct = _clicks_on_topic(broker.bootstrap, settings.topic_events)
        out.append({"mode": "published", "clicks": published, "distinct": distinct, "followed": used, "minted_per_s": needed / minted_s})
    finally:
        _stop(api)
        broker.stop()
    return out


def _stop(api: subprocess.Popen[bytes]) -> None:
    if api.poll() is None:
        api.terminate()
        try:
            api.wait(20)
        except subprocess.TimeoutExpired:
            api.kill()


def _clicks_on_topic(bootstrap: str, topic: str) -> tuple[int, int]:
    """The records on ``topic`` and their distinct event ids, read back from the start.
    Not the end offsets: the embedded broker's ListOffsets(latest) answers short of the
    records it holds (14,334 for 14,337 records read back on 2026-12-07, one or two short
    on two of four partitions), which made 2 of 27,430 clicks look lost."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ids = [json.loads(m.value)["event_id"] for m in consumer]
    finally:
        consumer.close()
    return len(ids), len(set(ids))


def main() -> int:
    parts = _env_list("BENCH_PARTS", "segments,recommend,redirect")
    n = int(os.environ.get("BENCH_ACCOUNTS", "100000"))
    count = int(os.environ.get("BENCH_SEGMENTS", "50"))
    print(f"bench-content: {platform_line()}; load average at start {os.getloadavg()}", flush=True)
    if "segments" in parts:
        for kind in _env_list("BENCH_DATABASES", "postgresql"):
            r = run_segments_part(kind, n, count)
            print(
                f"\nsegments on {r['db']}: {r['segments']} segments over {r['accounts']:,} accounts "
                f"(seeded {r['rows']:,} rows in {r['seed_s']:.0f}s); {r['members']:,} memberships after the last tick"
            )
            print(f"{'tick':<12}{'seconds':>9}{'cpu s':>8}{'entered':>10}{'left':>8}{'load':>7}")
            for tk in r["ticks"]:
                print(
                    f"{tk['tick']:<12}{tk['seconds']:>9.2f}{tk['cpu_seconds']:>8.2f}{tk['entered']:>10,}{tk['left']:>8,}{tk['load']:>7.2f}"
                    f"   {tk['statements']} statements, {tk['db_seconds']:.2f}s in them"
                )
            for tk in r["ticks"]:
                print(f"slowest statements of the {tk['tick']} tick (seconds, times, statement):")
                for secs, times, sql in tk["slowest"]:
                    print(f"  {secs:8.2f} {times:>6}  {sql}")
            sys.stdout.flush()
    if "recommend" in parts:
        signals = int(os.environ.get("BENCH_RECOMMEND_SIGNALS", "3000"))
        print(f"\nrecommend step: {signals:,} signals, one recipient each, the starter library (bench.bench_outreach's run_one)")
        print(f"{'db':<12}{'recipients/s':>13}{'stmts/batch':>13}{'load':>7}")
        for r in run_recommend_part(_env_list("BENCH_RECOMMEND_DATABASES", "postgresql,sqlite"), signals):
            print(f"{r['db']:<12}{r['signals_per_s']:>13.0f}{r['statements_per_batch']:>13.1f}{r['load']:>7.2f}", flush=True)
    if "redirect" in parts:
        levels = [int(x) for x in _env_list("BENCH_REDIRECT_CLIENTS", "1,8,32")]
        seconds = float(os.environ.get("BENCH_REDIRECT_SECONDS", "10"))
        rate = float(os.environ.get("BENCH_REDIRECT_RATE", "500"))
        print(f"\nGET /r/{{token}} through `touchline api` (uvicorn), each token followed once, {seconds:g}s a level")
        print(
            f"{'load':<16}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'dropped':>8}{'loadavg':>8}{'api cpu ms/req':>15}  statuses"
        )
        for r in run_redirect_part(levels, seconds, rate):
            if r["mode"] == "published":
                print(
                    f"clicks on the events topic, read back after the API stopped: {r['clicks']:,} ({r['distinct']:,} distinct) "
                    f"of {r['followed']:,} links followed (tokens minted at {r['minted_per_s']:,.0f}/s)"
                )
                continue
            label = f"{r['clients']} clients" if r["mode"] == "closed" else f"open {r['rate']:.0f}/s"
            print(
                f"{label:<16}{r['requests']:>9,}{r['per_s']:>8.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}{r['dropped']:>8}"
                f"{r['load']:>8.2f}{r['api_cpu_ms']:>15.2f}  {r['statuses']}"
                + (f" (start lag p99 {r['start_lag_p99_ms']:.1f} ms)" if r["mode"] == "open" else ""),
                flush=True,
            )
    print(f"\nload average at the end {os.getloadavg()}")
    return 0


def platform_line() -> str:
    import platform

    return f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"


if __name__ == "__main__":
    from shared.kafka import compat

    compat.apply()  # before any consumer joins a group (shared/kafka/compat.py)
    raise SystemExit(main())
