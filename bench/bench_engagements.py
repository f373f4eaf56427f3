"""Engagements benchmark on PostgreSQL: engagements opened per second (the service, as
the open_engagement step and CS Ops call it: priority, the automation summary, the
baseline measurement, the insert and its timeline row), then assigned per second by
two real engagement worker processes against a pool of 50 CSMs (roster lock, SKIP
LOCKED claims, the notice email rendered into the outbox), then the forecast's time
over 10,000 accounts with 90 days of signal receipts.

    make bench-engagements
    .venv/bin/python -m bench.bench_engagements --engagements 5000
    .venv/bin/python -m bench.bench_engagements --engagements 1000 --profile var/prof   # then pstats

PostgreSQL at TOUCHLINE_BENCH_POSTGRES_URL (default the local
postgresql://postgres@127.0.0.1:5432/test); the benchmark creates and drops its own
database there. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.bench_outreach import DEFAULT_PG, T0, _pg_database

ROOT = Path(__file__).resolve().parent.parent
WORKER = """
import sys, time
from datetime import datetime
from pathlib import Path
from services.outreach.engagements.worker import EngagementWorker
from shared.clock import SimulatedClock
from shared.db import make_engine, make_session_factory
from shared.settings import Settings
settings = Settings()
engine = make_engine(settings)
w = EngagementWorker(settings, make_session_factory(engine), SimulatedClock(datetime.fromisoformat(sys.argv[3])))
Path(sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.005)
profile = None
if len(sys.argv) > 4:  # --profile: where this worker writes its cProfile statistics
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
idle = 0
while idle < 2:
    idle = idle + 1 if w.poll_once() == 0 else 0
if profile is not None:
    profile.disable()
    profile.dump_stats(sys.argv[4])
engine.dispose()
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engagements", type=int, default=5000)
    ap.add_argument("--csms", type=int, default=50)
    ap.add_argument("--forecast-accounts", type=int, default=10_000)
    ap.add_argument("--profile", metavar="DIR", help="write each assigning worker's cProfile statistics here")
    args = ap.parse_args()

    from sqlalchemy import func, select

    from services.ingest.models import Account
    from services.outreach.engagements import opening, reporting
    from services.outreach.engagements.roster import put
    from services.outreach.engagements.schemas import CsmIn
    from services.outreach.models import Engagement, SignalReceipt
    from shared.db import make_engine, make_session_factory, transaction
    from shared.migrate import upgrade
    from shared.settings import Settings

    url, drop = _pg_database(os.environ.get("TOUCHLINE_BENCH_POSTGRES_URL", DEFAULT_PG))
    tmp = Path(tempfile.mkdtemp(prefix="bench-engagements-"))
    try:
        settings = Settings(env="test", database_url=url, var_dir=tmp)
        engine = make_engine(settings)
        upgrade(engine)
        factory = make_session_factory(engine)
        n, pool = args.engagements, args.csms
        per_csm = -(-n // pool)
        with transaction(factory) as s:
            s.execute(
                Account.__table__.insert(),
                [
                    {
                        "id": f"acct-{i:06d}",
                        "name": f"Account {i}",
                        "segment": ("smb", "mid_market", "enterprise")[i % 3],
                        "arr": 5000.0 + 997 * (i % 400),
                        "renewal_date": (T0 + timedelta(days=i % 365)).date(),
                        "traits": {},
                        "created_at": T0,
                        "updated_at": T0,
                    }
                    for i in range(max(n, args.forecast_accounts))
                ],
            )
            for c in range(pool):
                put(
                    s,
                    f"csm-{c:02d}",
                    CsmIn(name=f"CSM {c}", email=f"csm{c}@pool.test", capacity=per_csm),
                    actor="bench",
                    now=T0,
                    settings=settings,
                )

        started = time.perf_counter()
        for lo in range(0, n, 500):
            with transaction(factory) as s:
                for i in range(lo, min(n, lo + 500)):
                    signal = {
                        "signal_id": f"sig-{i}",
                        "rule_id": "no-login-14d",
                        "kind": "churn_risk",
                        "severity": ("low", "medium", "high", "critical")[i % 4],
                        "fired_at": T0.isoformat(),
                        "evidence": {"days_since(login)": {"value": 15}},
                    }
                    opening.open_engagement(
                        s,
                        account_id=f"acct-{i:06d}",
                        goal="recover_usage",
                        actor="bench",
                        now=T0,
                        settings=settings,
                        signal=signal,
                        key=f"bench-{i}",
                    )
        opened_s = time.perf_counter() - started

        env = {**os.environ, "TOUCHLINE_DATABASE_URL": url, "TOUCHLINE_VAR_DIR": str(tmp), "TOUCHLINE_ENV": "test"}
        go, ready = tmp / "go", [tmp / "ready-0", tmp / "ready-1"]
        profiles = [str(Path(args.profile) / f"assign-{i}.prof") for i in range(len(ready))] if args.profile else []
        procs = [
            subprocess.Popen([sys.executable, "-c", WORKER, str(go), str(r), T0.isoformat(), *profiles[i : i + 1]], cwd=ROOT, env=env)
            for i, r in enumerate(ready)
        ]
        while not all(r.exists() for r in ready):
            time.sleep(0.01)
        started = time.perf_counter()
        go.touch()
        for p in procs:
            p.wait()
        assign_s = time.perf_counter() - started
        with factory() as s:
            assigned = s.scalar(select(func.count()).select_from(Engagement).where(Engagement.status == "assigned"))
            over = s.execute(
                select(Engagement.csm_id, func.count())
                .where(Engagement.status == "assigned")
                .group_by(Engagement.csm_id)
                .having(func.count() > per_csm)
            ).all()

        with transaction(factory) as s:
            s.execute(
                SignalReceipt.__table__.insert(),
                [
                    {
                        "signal_id": f"r-{i}",
                        "account_id": f"acct-{i % args.forecast_accounts:06d}",
                        "rule_id": ("no-login-14d", "mau-up-50", "wau-down-40")[i % 3],
                        "kind": ("churn_risk", "expansion", "churn_risk")[i % 3],
                        "received_at": T0 - timedelta(minutes=13 * i),
                        "enrolled": 1,
                    }
                    for i in range(args.forecast_accounts)
                ],
            )
        from services.outreach.starter import seed_starter_content

        with transaction(factory) as s:
            seed_starter_content(s, settings, T0)
        started = time.perf_counter()
        with factory() as s:
            f = reporting.forecast(s, T0, lookback_days=90, hours_per_engagement=6, reactive=0.15, collateral=0.10, overhead=0.15)
        forecast_s = time.perf_counter() - started
        engine.dispose()
    finally:
        drop()

    print(f"opened   {n} engagements in {opened_s:.2f}s: {n / opened_s:.0f}/s (one process)")
    print(
        f"assigned {assigned} of {n} to {pool} CSMs in {assign_s:.2f}s by two worker processes: "
        f"{assigned / assign_s:.0f}/s; CSMs over capacity: {len(over)}"
    )
    print(
        f"forecast over {f.accounts} accounts and {args.forecast_accounts} signal receipts: {forecast_s * 1000:.0f} ms "
        f"({f.engagements_per_week} engagements/week, {f.csms_needed} CSMs needed)"
    )


if __name__ == "__main__":
    main()
