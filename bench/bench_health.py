"""Health benchmark (``make bench-health``; issue 21, item 9). Figures go to
docs/performance.md ("Customer health").

1. The daily scoring of N accounts with the starter model (BENCH_ACCOUNTS, default
   100,000), as the rules worker runs it: one chunk of TOUCHLINE_HEALTH_CHUNK_ACCOUNTS
   (default 1,000) after another until the day is finished; the time of the whole day, the
   longest chunk (what an event-triggered rule's event can wait for between two polls) and
   the peak RSS of the process that scored, against the same at BENCH_SMALL_ACCOUNTS (1,000):
   the scoring runs in a child process of its own, so the seeding's memory is not counted.
2. One account's explanation: the on-demand scoring of one account (``POST
   /v1/accounts/{id}/health``: measured, explained, stored), 20 accounts, median and max.
3. Validation (the ``health.validation`` job) over BENCH_VALIDATION_ACCOUNTS (10,000)
   accounts with one contract outcome each, their effective dates spread so that the scoring
   days (90 days before) cover BENCH_VALIDATION_DAYS (180) days.

    .venv/bin/python -m bench.bench_health
    BENCH_DATABASES=sqlite BENCH_ACCOUNTS=20000 .venv/bin/python -m bench.bench_health
    BENCH_PARTS=validation .venv/bin/python -m bench.bench_health
    BENCH_PROFILE=var/health.prof .venv/bin/python -m bench.bench_health   # cProfile of the big scoring

Databases (BENCH_DATABASES, default ``postgresql,sqlite``): PostgreSQL at
TOUCHLINE_BENCH_POSTGRES_URL (default the local test server; a fresh database per world,
dropped afterwards, VACUUM ANALYZE after seeding as autovacuum would) and SQLite in a
temporary directory (no ANALYZE: Touchline never runs one there).

The world, seeded straight into the tables (not through ingest): account i has 3 to 12 seats,
each seat active on a day with probability 0.1 (user_activity_daily; 60 days of history for
the scoring, 236 for validation: the scoring days and the starter's 56-day trend), a fifth
of the accounts stop being active 1 to 40 days before the end (for validation: 0 to 30 days
before their scoring day, and they churn), three quarters have a champion contact (a third a
second one), a ticket every 60 days on average (a fifth of them P0) and an NPS answer every
90 days with probability 0.6 (raw events), renewals spread over the year. Wall-clock figures
on a shared machine depend on its load: the load average and the CPU time of the scoring
process are printed with them.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.bench_ingest import DEFAULT_PG, PgDatabase, peak_rss_mb
from services.ingest.models import Account, AccountEventSeen, ContractOutcome, RawEvent, UsageDaily, User, UserActivityDaily
from shared.db import make_engine, make_session_factory, read_transaction, transaction
from shared.migrate import upgrade
from shared.settings import Settings

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
TODAY = NOW.date()
SCORING_HISTORY = 60
HORIZON = 90
INSERT_ROWS = 20_000


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def seed(factory: Any, n: int, history: int, *, outcomes_days: int | None = None) -> int:
    """The world above for ``n`` accounts and ``history`` days ending yesterday; with
    ``outcomes_days`` one contract outcome per account whose scoring day (HORIZON days before
    it) falls in the last ``outcomes_days`` days, and the daily login counts a replay reads."""
    rng = random.Random(21)
    first = TODAY - timedelta(days=history)
    total = 0
    for lo in range(0, n, 2000):
        accounts: list[dict[str, Any]] = []
        users: list[dict[str, Any]] = []
        activity: list[dict[str, Any]] = []
        usage: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        outcomes: list[dict[str, Any]] = []
        for i in range(lo, min(n, lo + 2000)):
            a = f"acct-{i:06d}"
            seats = 3 + i % 10
            fading = i % 5 == 0
            scored_on = TODAY - timedelta(days=i * 7919 % outcomes_days) if outcomes_days else None
            if fading:
                stop = (scored_on - timedelta(days=rng.randint(0, 30))) if scored_on else TODAY - timedelta(days=rng.randint(1, 40))
            else:
                stop = TODAY
            accounts.append(
                {
                    "id": a,
                    "name": f"Account {i}",
                    "seats": seats,
                    "arr": 1000.0 * seats,
                    "lifecycle_stage": "active",
                    "renewal_date": TODAY + timedelta(days=i * 37 % 365),
                    "signup_date": first - timedelta(days=200),
                    "traits": {},
                    "first_seen_at": _noon(first),
                    "last_seen_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            champions = (["u0"] if i % 4 else []) + (["u1"] if i % 3 == 0 else [])
            users.extend(
                {
                    "account_id": a,
                    "id": u,
                    "email": f"{u}@{a}.example",
                    "role": "champion",
                    "traits": {},
                    "first_seen_at": _noon(first),
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for u in champions
            )
            span = max(0, (stop - first).days)
            per_day: dict[date, int] = {}
            for u in range(seats):
                k = min(span, int(span * 0.1 + rng.random() * 2))  # about one day in ten
                for d in rng.sample(range(span), k):
                    day = first + timedelta(days=d)
                    activity.append({"account_id": a, "day": day, "user_id": f"u{u}", "count": 1 + d % 3})
                    per_day[day] = per_day.get(day, 0) + 1
            if per_day:
                last = max(per_day)
                seen.append({"account_id": a, "event_name": "login", "first_seen_at": _noon(min(per_day)), "last_seen_at": _noon(last)})
                if outcomes_days:
                    usage.extend({"account_id": a, "day": d, "event_name": "login", "count": c} for d, c in per_day.items())
            # Raw events: tickets (a fifth P0) and NPS answers, over the history and the NPS window before it.
            back = history + 180
            for d in rng.sample(range(back), min(back, int(back / 60 + rng.random()))):
                priority = "P0" if rng.random() < 0.2 else "P2"
                events.append(_event(f"t-{i}-{d}", a, "ticket_opened", _ago(d, i), {"priority": priority}))
            for d in rng.sample(range(back), min(back, int(back * 0.6 / 90 + rng.random()))):
                events.append(_event(f"n-{i}-{d}", a, "nps_answered", _ago(d, i), {"score": rng.randint(0, 10)}))
            if scored_on is not None:
                kind = "churned" if fading else ("expanded" if i % 7 == 0 else "renewed")
                arr = 1000.0 * seats
                outcomes.append(
                    {
                        "event_id": f"c-{i}",
                        "account_id": a,
                        "kind": kind,
                        "arr_before": arr,
                        "arr_after": 0.0 if kind == "churned" else arr * (1.4 if kind == "expanded" else 1.0),
                        "effective_date": scored_on + timedelta(days=HORIZON),
                        "source": "api",
                        "occurred_at": NOW,
                        "received_at": NOW,
                    }
                )
        with transaction(factory) as s:
            for table, rows in (
                (Account.__table__, accounts),
                (User.__table__, users),
                (UserActivityDaily.__table__, activity),
                (UsageDaily.__table__, usage),
                (AccountEventSeen.__table__, seen),
                (RawEvent.__table__, events),
                (ContractOutcome.__table__, outcomes),
            ):
                for j in range(0, len(rows), INSERT_ROWS):
                    s.execute(table.insert(), rows[j : j + INSERT_ROWS])
                total += len(rows)
        print(f"  seeded {min(n, lo + 2000):,} accounts ({total:,} rows)", end="\r", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return total


def _ago(days: int, i: int) -> datetime:
    return NOW - timedelta(days=days + 1, minutes=i % 600)


def _event(event_id: str, account: str, name: str, ts: datetime, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "account_id": account,
        "user_id": "u0",
        "type": "track",
        "name": name,
        "timestamp": ts,
        "properties": props,
        "received_at": ts,
    }


def _starter(factory: Any) -> None:
    from services.rules.interface import install_starter_health_model

    with transaction(factory) as s:
        install_starter_health_model(s, "bench", NOW - timedelta(days=1))


# ---- the child process: the day's scoring and the explanations ------------------------


def child_score(url: str, explain: bool, profile: str | None) -> dict[str, Any]:
    """Score the day as the rules worker does (chunk after chunk), then time 20 on-demand scorings."""
    from services.rules.evaluation.health import score_account, score_health_chunk

    settings = Settings(env="test", database_url=url)
    engine = make_engine(settings)
    factory = make_session_factory(engine)
    prof = cProfile.Profile() if profile else None
    chunks: list[float] = []
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    scored = 0
    while True:
        t = time.perf_counter()
        report = score_health_chunk(factory, settings, NOW)
        if not report.ran:
            break
        chunks.append(time.perf_counter() - t)
        scored += report.scored
        if report.done:
            break
    if prof:
        prof.disable()
    out: dict[str, Any] = {
        "scored": scored,
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "chunks": len(chunks),
        "max_chunk": max(chunks, default=0.0),
        "median_chunk": statistics.median(chunks) if chunks else 0.0,
        "rss_mb": peak_rss_mb(),
        "load": load,
        "load_after": os.getloadavg()[0],
    }
    if prof and profile:
        prof.dump_stats(profile)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    if explain:
        with read_transaction(factory) as s:
            ids = [str(a) for a in s.scalars(text("SELECT id FROM accounts ORDER BY id"))]
        picks = [ids[(k * 7919) % len(ids)] for k in range(20)]
        times = []
        for a in picks:
            t = time.perf_counter()
            with transaction(factory) as s:
                row = score_account(s, a, NOW + timedelta(minutes=5))
            times.append(time.perf_counter() - t)
            assert row["components"], row
        out["explain_median_ms"] = statistics.median(times) * 1000
        out["explain_max_ms"] = max(times) * 1000
    engine.dispose()
    return out


# ---- the parent ------------------------------------------------------------------------


def world(stack: ExitStack, kind: str, tmp: Path, name: str) -> str:
    if kind == "postgresql":
        return stack.enter_context(PgDatabase(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG)))
    return f"sqlite:///{tmp / name}.db"


def prepare(url: str, n: int, history: int, outcomes_days: int | None = None) -> tuple[float, int]:
    engine = make_engine(Settings(env="test", database_url=url))
    upgrade(engine)
    factory = make_session_factory(engine)
    t = time.perf_counter()
    rows = seed(factory, n, history, outcomes_days=outcomes_days)
    _starter(factory)
    if url.startswith("postgresql"):
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - t, rows


def score_part(kind: str, url: str, n: int, explain: bool, profile: str | None) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.bench_health", "--child", url, "1" if explain else "0", profile or ""]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the scoring child failed:\n{done.stderr}")
    if profile:
        print(done.stderr[-6000:], file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"db": kind, "accounts": n, **result}


def validation_part(url: str, n: int, days: int) -> dict[str, Any]:
    from services.rules.backtest import validation

    settings = Settings(env="test", database_url=url)
    engine = make_engine(settings)
    factory = make_session_factory(engine)
    load = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    steps = 0

    def progress(done: int, total: int, message: str) -> None:
        nonlocal steps
        steps = done

    body = validation.ValidationIn.model_validate({"horizon_days": HORIZON})
    with read_transaction(factory) as s:  # as the job reads
        prep = validation.prepare(s, body, settings, TODAY)
        result = validation.validate(s, prep, settings, TODAY, progress=progress)
    out = {
        "accounts": n,
        "days": days,
        "scoring_days": steps,
        "outcomes": result["outcomes"],
        "auc": result["auc"],
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "load": load,
    }
    engine.dispose()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child_score(sys.argv[2], sys.argv[3] == "1", sys.argv[4] or None)))
        return
    n = int(os.environ.get("BENCH_ACCOUNTS", "100000"))
    small = int(os.environ.get("BENCH_SMALL_ACCOUNTS", "1000"))
    n_val = int(os.environ.get("BENCH_VALIDATION_ACCOUNTS", "10000"))
    val_days = int(os.environ.get("BENCH_VALIDATION_DAYS", "180"))
    kinds = [k for k in os.environ.get("BENCH_DATABASES", "postgresql,sqlite").split(",") if k]
    parts = set(os.environ.get("BENCH_PARTS", "score,validation").split(","))
    profile = os.environ.get("BENCH_PROFILE") or None
    chunk = Settings(env="test").health_chunk_accounts
    print(f"load average at start: {os.getloadavg()}", flush=True)
    scoring: list[dict[str, Any]] = []
    validations: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        for kind in kinds:
            if "score" in parts:
                for size in sorted({small, n}):
                    url = world(stack, kind, tmp, f"score{size}")
                    seconds, rows = prepare(url, size, SCORING_HISTORY)
                    print(f"{kind}: seeded {size:,} accounts, {rows:,} rows in {seconds:.0f}s", flush=True)
                    r = score_part(kind, url, size, explain=size == n, profile=profile if size == n else None)
                    print(json.dumps(r), flush=True)
                    scoring.append(r)
            if "validation" in parts:
                url = world(stack, kind, tmp, "validation")
                seconds, rows = prepare(url, n_val, val_days + 56, outcomes_days=val_days)
                print(f"{kind}: seeded {n_val:,} accounts for validation, {rows:,} rows in {seconds:.0f}s", flush=True)
                v = {"db": kind, **validation_part(url, n_val, val_days)}
                print(json.dumps(v), flush=True)
                validations.append(v)
    if scoring:
        print(
            f"\nDaily scoring, starter model, chunks of {chunk:,} accounts\n"
            "| database | accounts | seconds | CPU s | chunks | longest chunk s | median chunk s | peak RSS MB "
            "| explanation median / max ms | load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        for r in scoring:
            explain = f"{r['explain_median_ms']:.0f} / {r['explain_max_ms']:.0f}" if "explain_median_ms" in r else ""
            print(
                f"| {r['db']} | {r['accounts']:,} | {r['seconds']:.1f} | {r['cpu']:.1f} | {r['chunks']} | {r['max_chunk']:.2f} "
                f"| {r['median_chunk']:.2f} | {r['rss_mb']:.0f} | {explain} | {r['load']:.1f}-{r['load_after']:.1f} |"
            )
    if validations:
        print(
            "\nValidation\n| database | accounts | scoring days | outcomes | AUC | seconds | CPU s | load |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for v in validations:
            print(
                f"| {v['db']} | {v['accounts']:,} | {v['scoring_days']} | {v['outcomes']:,} | {v['auc']} | {v['seconds']:.1f} "
                f"| {v['cpu']:.1f} | {v['load']:.1f} |"
            )
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
