"""Soak: `touchline run` with the live demo streaming, for a long time, watching memory.

    make soak                      # an hour
    SOAK_MINUTES=15 make soak      # shorter
    SOAK_SAMPLE_SECONDS=60         # how often to sample (default every minute)
    SOAK_ACCOUNTS=200              # demo accounts

Every sample prints each process's RSS (the embedded broker, the API, every worker, the
mail sink, the demo) and each consumer group's lag; at the end, the RSS slope per
process (least squares, MB per hour) over the whole run and over its second half (after
warm-up). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shared.broker import free_port
from shared.kafka.lag import LagProbe
from shared.settings import Settings


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def name_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = [a.decode() for a in argv if a]
    if any("tansu" in a for a in text[:1]):
        return "broker"
    if "worker" in text:
        return "worker-" + text[text.index("worker") + 1]
    for cmd in ("api", "mailsink", "demo"):
        if cmd in text:
            return cmd
    return " ".join(text)[:40]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if den == 0 else sum((t - mx) * (v - my) for t, v in points) / den * 3600


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "60"))
    every = float(os.environ.get("SOAK_SAMPLE_SECONDS", "60"))
    accounts = os.environ.get("SOAK_ACCOUNTS", "200")
    work = Path(tempfile.mkdtemp(prefix="touchline-soak-"))
    broker_port, api_port, mail_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_") or k.startswith("TOUCHLINE_EMBEDDED_BROKER_MAX")}
    env.update(
        {
            "TOUCHLINE_VAR_DIR": str(work / "var"),
            "TOUCHLINE_EMBEDDED_BROKER_PORT": str(broker_port),
            "TOUCHLINE_API_PORT": str(api_port),
            "TOUCHLINE_MAIL_SINK_PORT": str(mail_port),
            "TOUCHLINE_LOG_LEVEL": "WARNING",
        }
    )
    settings = Settings(var_dir=work / "var", embedded_broker_port=broker_port)
    cli = [sys.executable, "-m", "services.wiring.cli"]
    print(f"soak: {minutes:g} min, sampling every {every:g}s, {accounts} demo accounts; logs in {work}", flush=True)
    run = subprocess.Popen(cli + ["run"], env=env, stdout=open(work / "run.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    demo = subprocess.Popen(
        cli + ["demo", "--accounts", accounts, "--live"], env=env, stdout=open(work / "demo.log", "w"), stderr=subprocess.STDOUT
    )
    groups = {
        settings.topic("touchline-ingest"): [settings.topic_events],
        settings.topic("touchline-rules"): [settings.topic_events],
        settings.topic("touchline-outreach"): [settings.topic_signals],
    }
    series: dict[str, list[tuple[float, float]]] = {}
    started = time.monotonic()
    end = started + minutes * 60
    probe = None
    try:
        while True:
            t = time.monotonic() - started
            pids = {name_of(p): p for p in children(run.pid)}
            pids["demo"] = demo.pid
            pids["supervisor"] = run.pid
            row = []
            for name, pid in sorted(pids.items()):
                mb = rss_mb(pid)
                if mb is not None:
                    series.setdefault(name, []).append((t, mb))
                    row.append(f"{name}={mb:.0f}")
            lags = []
            try:
                probe = probe or LagProbe(settings)
                for g, ts in groups.items():
                    lags.append(f"{g.removeprefix('touchline-')}={sum(probe.lag(g, ts).values())}")
            except Exception as exc:  # report, keep sampling
                lags.append(f"lag unavailable ({type(exc).__name__})")
                if probe is not None:
                    probe.close()
                probe = None
            print(f"[{t / 60:5.1f} min] RSS MB: {' '.join(row)} | lag: {' '.join(lags)}", flush=True)
            if time.monotonic() >= end or run.poll() is not None:
                break
            time.sleep(min(every, max(0.0, end - time.monotonic())))  # the sampling period of a benchmark
    finally:
        if probe is not None:
            probe.close()
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
        run.send_signal(signal.SIGINT)
        run.wait(300)
    half = (time.monotonic() - started) / 2
    print("\nRSS slope per process (MB/hour): whole run | second half; first -> last sample")
    for name, pts in sorted(series.items()):
        late = [p for p in pts if p[0] >= half]
        print(f"  {name:<24} {slope(pts):+8.1f} | {slope(late):+8.1f}   {pts[0][1]:.0f} -> {pts[-1][1]:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
