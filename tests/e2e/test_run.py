"""`touchline run` (what `make run` starts): the whole system on embedded defaults,
events in over HTTP, state out over the API, clean shutdown on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import httpx

from shared.broker import free_port, port_open
from tests.support import helpers


def wait_for(predicate, timeout: float, what: str):
    """Poll a real process (the API may not answer yet: a refused connection is "not yet")."""
    return helpers.wait_for(predicate, timeout, what, interval=0.2, ignore=(httpx.HTTPError,))


def test_touchline_run_brings_everything_up_and_down(tmp_path):
    broker_port, api_port, mail_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update(
        {
            "TOUCHLINE_VAR_DIR": str(tmp_path / "var"),
            "TOUCHLINE_EMBEDDED_BROKER_PORT": str(broker_port),
            "TOUCHLINE_API_PORT": str(api_port),
            "TOUCHLINE_MAIL_SINK_PORT": str(mail_port),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.wiring.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 60, "/readyz")
        key = (tmp_path / "var" / "dev-admin-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        now = datetime.now(UTC).isoformat()
        r = httpx.post(
            f"{base}/v1/events",
            headers=headers,
            json=[
                {"event_id": str(uuid.uuid4()), "account_id": "acme", "user_id": "ada", "name": "login", "timestamp": now},
                {"event_id": str(uuid.uuid4()), "type": "group", "account_id": "acme", "timestamp": now, "traits": {"plan": "pro"}},
            ],
        )
        assert r.status_code == 202, r.text
        account = wait_for(
            lambda: (r := httpx.get(f"{base}/v1/accounts/acme", headers=headers)).status_code == 200 and r.json(),
            60,
            "the account to be ingested",
        )
        assert account["plan"] == "pro" or wait_for(
            lambda: httpx.get(f"{base}/v1/accounts/acme", headers=headers).json()["plan"] == "pro", 30, "traits"
        )
        assert httpx.get(f"{base}/v1/dev/mail", headers=headers).json()["count"] == 0  # the sink is up, empty
        assert port_open("127.0.0.1", mail_port)
        playbooks = {p["id"] for p in httpx.get(f"{base}/v1/playbooks", headers=headers).json()["items"]}
        assert "win-back" in playbooks  # the starter content is seeded
        metrics = httpx.get(f"{base}/metrics", headers=headers).text
        assert "touchline_events_consumed_total" in metrics  # the worker's metrics, aggregated by the API

        # A backtest is a job: 202 with its location, run by the jobs worker `touchline run` started.
        today = datetime.now(UTC).date().isoformat()
        rule = {
            "id": "quiet-7d",
            "name": "Quiet for a week",
            "kind": "churn_risk",
            "trigger": {"schedule": {"every": "1h"}},
            "condition": {"all": [{"metric": "days_since", "event": "login", "op": ">=", "value": 7}]},
        }
        r = httpx.post(f"{base}/v1/rules/backtest", headers=headers, json={"rule": rule, "start": today, "end": today})
        assert r.status_code == 202, r.text
        job = wait_for(
            lambda: (j := httpx.get(f"{base}{r.headers['location']}", headers=headers).json())["state"] not in ("queued", "running") and j,
            60,
            "the backtest job to finish",
        )
        assert job["state"] == "succeeded" and job["result"]["total_firings"] == 0, job

        # The embedded broker dies: `touchline run` restarts it, recreates the topics, and the
        # API and the worker carry on by themselves.
        broker_pid = int(subprocess.check_output(["pgrep", "-f", f"tcp://127.0.0.1:{broker_port}"], text=True).split()[0])
        os.kill(broker_pid, signal.SIGKILL)
        wait_for(
            lambda: (
                subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{broker_port}"], capture_output=True).returncode == 0
                and port_open("127.0.0.1", broker_port)
            ),
            60,
            "the broker to be restarted",
        )

        def post_after_restart():
            r = httpx.post(
                f"{base}/v1/events",
                headers=headers,
                timeout=30,
                json={
                    "event_id": "after-restart",
                    "account_id": "globex",
                    "name": "login",
                    "timestamp": datetime.now(UTC).isoformat(),
                },
            )
            return r.status_code == 202

        wait_for(post_after_restart, 60, "the API to publish again")
        wait_for(
            lambda: httpx.get(f"{base}/v1/accounts/globex", headers=headers).status_code == 200,
            90,
            "an event sent after the broker restart to be ingested",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "Development admin API key" in out
    assert "embedded broker stopped" in out
    assert not port_open("127.0.0.1", broker_port) and not port_open("127.0.0.1", api_port)
    assert not port_open("127.0.0.1", mail_port)
