"""The API under load: a team at once, a share of it hostile (issue 18).

    make bench-api                                  # SQLite and PostgreSQL, 1 to 512 clients, 10 s each
    API_BENCH_LEVELS=32,128 API_BENCH_SECONDS=5 API_BENCH_DATABASES=sqlite make bench-api

What runs: `touchline run` in a subprocess (the embedded broker, the API, every worker,
the mail sink), once per database: SQLite in its private var directory, and a fresh
PostgreSQL database at TOUCHLINE_BENCH_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test) dropped at the end. Ports and the var
directory are private to the run; the API keeps its default limits (concurrency cap,
pool, threads, deadlines: docs/operations.md, "Under load").

Setup (not measured): 200 accounts with a user each, sent as one event batch and waited
for; eight console sessions signed in with the development admin key; one anonymous
sign-in form (its CSRF cookie and token) for the wrong sign-ins.

Each level runs N clients for API_BENCH_SECONDS. A client is one keep-alive HTTP/1.1
connection (a minimal asyncio client: httpx's own CPU cost would measure the client at
512 connections on two cores) sending requests back to back, each drawn from this mix:

    25%  POST /v1/events, a batch of 20 track events (a product app)
    15%  GET /v1/accounts?limit=50
    10%  GET /v1/engagements?limit=50
    10%  GET /v1/rules
    15%  a console page (/console/, /console/accounts, /console/rules) with a session cookie
    15%  GET /v1/rules with a junk key (half not even shaped like a key, half a random tl_ key)
    10%  POST /console/sign-in with a wrong key

After a 503 a client waits its Retry-After (1 s) before its next request, as the API
asks of its clients (docs/operations.md); a 401 or 429 does not slow it down.

Meanwhile a prober sends GET /healthz every 50 ms on a connection of its own. Reported
per level: requests/s, p50 and p99 latency of all answers, answers by status, the p99
of the 503s (how fast overload is answered), the requests that got no answer at all
(connection reset or a 30 s timeout: "dropped"), and the p99 of /healthz.

A benchmark, not a test: it prints and asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bench.bench_latency import DEFAULT_PG, percentiles, pg_database, wait_ready
from shared.broker import free_port

REQUEST_TIMEOUT = 30.0
MIX = [
    ("events", 25),
    ("accounts", 15),
    ("engagements", 10),
    ("rules", 10),
    ("console", 15),
    ("junk_key", 15),
    ("wrong_sign_in", 10),
]
CONSOLE_PAGES = ["/console/", "/console/accounts", "/console/rules"]
N_ACCOUNTS = 200


class Dropped(Exception):
    """No answer: the connection closed or reset, or the request timed out."""


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after the server closes it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.retry_after = 0.0  # of the last answer

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> int:
        reused = self.writer is not None
        try:
            return await asyncio.wait_for(self._exchange(method, path, headers, body), REQUEST_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self.close()
            if reused and isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                # The server had closed the idle connection (keep-alive): a client retries on a new one.
                try:
                    return await asyncio.wait_for(self._exchange(method, path, headers, body), REQUEST_TIMEOUT)
                except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError, TimeoutError) as again:
                    self.close()
                    raise Dropped(type(again).__name__) from None
            raise Dropped(type(exc).__name__) from None
        except TimeoutError:
            self.close()
            raise Dropped("timeout") from None

    async def _exchange(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> int:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}:{self.port}", f"content-length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before an answer")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        self.retry_after = 0.0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and "close" in value:
                close = True
            elif name == "retry-after" and value.isdigit():
                self.retry_after = float(value)
        if chunked:
            while True:
                size = int((await self.reader.readline()).strip() or b"0", 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status


@dataclass
class World:
    host: str
    port: int
    admin: str
    cookies: list[str]
    pre_cookie: str
    pre_csrf: str


@dataclass
class Level:
    clients: int
    seconds: float
    answers: list[tuple[str, int, float]] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    healthz: list[float] = field(default_factory=list)
    healthz_dropped: int = 0


def _request(kind: str, rng: random.Random, world: World, client: int) -> tuple[str, str, list[tuple[str, str]], bytes]:
    bearer = [("authorization", f"Bearer {world.admin}")]
    if kind == "events":
        now = time.time()
        batch = [
            {
                "event_id": uuid.uuid4().hex,
                "account_id": f"acct-{rng.randrange(N_ACCOUNTS):04d}",
                "user_id": f"u{rng.randrange(5)}",
                "name": rng.choice(["login", "page_view", "report_created", "export"]),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
            }
            for _ in range(20)
        ]
        return "POST", "/v1/events", bearer + [("content-type", "application/json")], json.dumps(batch).encode()
    if kind == "accounts":
        return "GET", "/v1/accounts?limit=50", bearer, b""
    if kind == "engagements":
        return "GET", "/v1/engagements?limit=50", bearer, b""
    if kind == "rules":
        return "GET", "/v1/rules", bearer, b""
    if kind == "console":
        return "GET", rng.choice(CONSOLE_PAGES), [("cookie", world.cookies[client % len(world.cookies)])], b""
    if kind == "junk_key":
        junk = "garbage" if rng.random() < 0.5 else f"tl_{rng.getrandbits(32):08x}_{uuid.uuid4().hex}"
        return "GET", "/v1/rules", [("authorization", f"Bearer {junk}")], b""
    body = urlencode({"csrf": world.pre_csrf, "api_key": f"tl_{rng.getrandbits(32):08x}_{uuid.uuid4().hex}"}).encode()
    return "POST", "/console/sign-in", [("cookie", world.pre_cookie), ("content-type", "application/x-www-form-urlencoded")], body


async def _client(i: int, world: World, level: Level, stop_at: float) -> None:
    rng = random.Random(i)
    conn = Connection(world.host, world.port)
    kinds, weights = [k for k, _ in MIX], [w for _, w in MIX]
    try:
        while time.perf_counter() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            method, path, headers, body = _request(kind, rng, world, i)
            t = time.perf_counter()
            try:
                status = await conn.request(method, path, headers, body)
            except Dropped as exc:
                level.dropped[str(exc)] += 1
                continue
            level.answers.append((kind, status, time.perf_counter() - t))
            if status == 503 and conn.retry_after:
                await asyncio.sleep(min(conn.retry_after, max(0.0, stop_at - time.perf_counter())))  # as the API asks
    finally:
        conn.close()


async def _prober(world: World, level: Level, stop_at: float) -> None:
    conn = Connection(world.host, world.port)
    try:
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                status = await conn.request("GET", "/healthz", [])
                level.healthz.append(time.perf_counter() - t if status == 200 else REQUEST_TIMEOUT)
            except Dropped:
                level.healthz_dropped += 1
            await asyncio.sleep(0.05)  # the probe's period
    finally:
        conn.close()


async def run_level(world: World, clients: int, seconds: float) -> Level:
    level = Level(clients, seconds)
    stop_at = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(_prober(world, level, stop_at), *(_client(i, world, level, stop_at) for i in range(clients)))
    level.seconds = time.perf_counter() - t0  # the last answers arrive after stop_at
    return level


def ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def report(level: Level) -> str:
    statuses = Counter(s for _, s, _ in level.answers)
    latencies = [d for _, _, d in level.answers]
    p = percentiles(latencies)
    shed = percentiles([d for _, s, d in level.answers if s == 503])
    health = percentiles(level.healthz)
    by_status = " ".join(f"{s}:{n}" for s, n in sorted(statuses.items()))
    five = sum(n for s, n in statuses.items() if s >= 500 and s != 503)
    return (
        f"  {level.clients:>5} {len(level.answers) / level.seconds:>8.0f} {ms(p.get('p50')):>7} {ms(p.get('p99')):>7} "
        f"{ms(shed.get('p99')):>8} {ms(health.get('p99')):>8} {five:>5} {sum(level.dropped.values()):>7}  {by_status}"
        + (f"  dropped: {dict(level.dropped)}" if level.dropped else "")
        + (f"  healthz dropped: {level.healthz_dropped}" if level.healthz_dropped else "")
    )


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    if not m:
        raise RuntimeError("no CSRF token on the sign-in page")
    return m.group(1)


def setup(base: str, admin: str) -> tuple[list[str], str, str]:
    """Accounts (waited for), eight console sessions, one anonymous sign-in form."""
    headers = {"Authorization": f"Bearer {admin}"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    batch = [
        {"event_id": f"seed-{a}", "account_id": f"acct-{a:04d}", "user_id": "u0", "name": "login", "timestamp": now}
        for a in range(N_ACCOUNTS)
    ]
    r = httpx.post(f"{base}/v1/events", headers=headers, json=batch, timeout=30)
    r.raise_for_status()
    deadline = time.monotonic() + 120
    while len(httpx.get(f"{base}/v1/accounts", params={"limit": N_ACCOUNTS}, headers=headers, timeout=30).json()["items"]) < N_ACCOUNTS:
        if time.monotonic() > deadline:
            raise RuntimeError("the seed accounts were not stored within 120 s")
        time.sleep(0.5)  # waiting for ingest to store the seed batch
    cookies = []
    for _ in range(8):
        with httpx.Client(base_url=base, timeout=30) as c:
            page = c.get("/console/sign-in")
            r = c.post("/console/sign-in", data={"csrf": _csrf(page.text), "api_key": admin})
            if r.status_code != 303:
                raise RuntimeError(f"console sign-in answered {r.status_code}: {r.text[:200]}")
            cookies.append("; ".join(f"{k}={v}" for k, v in c.cookies.items()))
    with httpx.Client(base_url=base, timeout=30) as c:
        page = c.get("/console/sign-in")
        pre = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        return cookies, pre, _csrf(page.text)


def bench_database(kind: str, levels: list[int], seconds: float) -> int:
    work = Path(tempfile.mkdtemp(prefix=f"touchline-api-{kind}-"))
    var = work / "var"
    drop = None
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_VAR_DIR": str(var),
            "TOUCHLINE_EMBEDDED_BROKER_PORT": str(free_port()),
            "TOUCHLINE_API_PORT": str(api_port),
            "TOUCHLINE_MAIL_SINK_PORT": str(free_port()),
            "TOUCHLINE_LOG_LEVEL": os.environ.get("API_BENCH_LOG_LEVEL", "WARNING"),
        }
    )
    if kind == "postgresql":
        db_url, drop = pg_database(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG), prefix="touchline_api")
        env["TOUCHLINE_DATABASE_URL"] = db_url.replace("postgresql+psycopg://", "postgresql://", 1)
    log = open(work / "run.log", "w")
    run = subprocess.Popen([sys.executable, "-m", "services.wiring.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{api_port}"
        if not wait_ready(base, run, work / "run.log"):
            return 1
        admin = (var / "dev-admin-key").read_text().strip()
        cookies, pre_cookie, pre_csrf = setup(base, admin)
        world = World("127.0.0.1", api_port, admin, cookies, pre_cookie, pre_csrf)
        print(f"\n{kind}: logs in {work}", flush=True)
        print("  clients    req/s  p50 ms  p99 ms  503 p99  /healthz  5xx* dropped  answers by status", flush=True)
        print("                                         ms  p99 ms", flush=True)
        for clients in levels:
            level = asyncio.run(run_level(world, clients, seconds))
            print(report(level), flush=True)
            time.sleep(1)  # let the last level's connections close before the next
        return 0
    finally:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        log.close()
        if drop is not None:
            drop()


def main() -> int:
    levels = [int(x) for x in os.environ.get("API_BENCH_LEVELS", "1,8,32,128,512").split(",")]
    seconds = float(os.environ.get("API_BENCH_SECONDS", 10))
    databases = os.environ.get("API_BENCH_DATABASES", "sqlite,postgresql").split(",")
    load = os.getloadavg()
    print(
        f"bench-api: {', '.join(map(str, levels))} clients, {seconds:g} s each, on {', '.join(databases)}; "
        f"mix {', '.join(f'{k} {w}%' for k, w in MIX)}",
        flush=True,
    )
    print(
        f"  machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    print("  5xx*: answers 500-599 other than 503 (503 is the API shedding load, with Retry-After)", flush=True)
    code = 0
    for kind in databases:
        code |= bench_database(kind.strip(), levels, seconds)
    load = os.getloadavg()
    print(f"\nload average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
