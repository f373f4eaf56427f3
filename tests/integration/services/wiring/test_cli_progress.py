"""Long CLI commands show progress (the bar itself: tests/unit/shared/test_progress.py):
``touchline rules backtest`` runs a backtest job (a real process, both databases) and
``touchline rules import`` reports per rule."""

from __future__ import annotations

import json

from shared.jobs.models import Job
from tests.support.helpers import T0, run_cli
from tests.support.rules import seed_one_fading_account


def _cli(settings, *args: str):
    return run_cli(settings, *args, TOUCHLINE_JOB_PROGRESS_INTERVAL_SECONDS="0")


def test_cli_backtest_runs_a_job_and_prints_its_result(settings, session_factory):
    start, end = seed_one_fading_account(session_factory, T0)
    proc = _cli(settings, "rules", "backtest", "no-login-14d", "--start", start, "--end", end, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["state"] == "succeeded" and out["result"]["accounts"] == ["fades"]
    # stderr is not a terminal here: no bar, a final progress log line
    assert "\r" not in proc.stderr and "backtest no-login-14d [" + "#" * 30 + "] 100% 21/21 days" in proc.stderr
    with session_factory() as s:
        job = s.get(Job, out["id"])
    assert job.kind == "rules.backtest" and job.created_by.startswith("cli:") and job.progress_done == 21

    proc = _cli(settings, "rules", "backtest", "no-login-14d", "--start", start, "--end", end, "--submit")
    assert proc.returncode == 0 and "queued job" in proc.stdout
    proc = _cli(settings, "rules", "backtest", "ghost", "--start", start, "--end", end)
    assert proc.returncode == 2 and "not_found" in proc.stderr


def test_cli_rules_import_reports_progress(settings, session_factory):
    proc = _cli(settings, "rules", "import")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "created" in proc.stdout and "importing rules" in proc.stderr and "rules" in proc.stderr
