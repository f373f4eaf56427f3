"""The README's Quick tour, run as a test: its commands are read from README.md itself
(the fenced bash blocks under "## Quick tour"), run one by one in one bash (as a reader's
terminal: a variable one command sets stays for the next) against the system served on
a real port, and each claim the README makes about what a command shows is checked
against what happened. The demo runs as written, in its own process; the workers run
here on the simulated clock, which moves where the tour says time passes (the rules'
tick, the demo-paced escalation "about five minutes after its signal").

Only addresses are localised: the API's and the broker's port and the topic prefix of
this test. A tour command no check knows fails the test: a new claim needs its check."""

from __future__ import annotations

import ast
import asyncio
import json
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.helpers import ROOT

MARK = "@@@tour-exit "
# The end of the tour's commands that list an account's win-back emails (sent, or queued for the
# end of the champion's quiet hours: the resource is chosen when the email is queued) with why
# each resource was picked.
WHY = "&playbook_id=win-back\" \\\n  | .venv/bin/python -c 'import json, sys; [print("


def tour_blocks(readme: str) -> list[str]:
    """The fenced bash blocks of the README's Quick tour section, in order."""
    section = readme.split("\n## Quick tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    """A block's commands: comment-only lines dropped, backslash continuations joined."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.rstrip().endswith("\\"):
            out.append(current.rstrip("\n"))
            current = ""
    assert not current, f"a continuation runs off the end of a block: {current!r}"
    return out


class Shell:
    """One bash, fed one command at a time; its stdout is read on a thread so the
    workers (``tick``) keep running while a command waits on them."""

    def __init__(self, cwd: Path, env: dict[str, str], tick: Callable[[], object]):
        self.tick, self.cwd = tick, cwd
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def run(self, command: str, timeout: float = 120) -> tuple[str, str]:
        """(stdout, stderr) of ``command``; it must exit 0."""
        err = self.cwd / "stderr.txt"
        self.proc.stdin.write(f"{{ {command}\n}} 2>{err}; printf '\\n{MARK}%s\\n' $?\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout  # bounds a failing test only
        while True:
            try:
                line = self.lines.get(timeout=0.05)
            except queue.Empty:
                assert time.monotonic() < deadline, f"{command!r} did not finish: {''.join(out)[-2000:]}"
                self.tick()
                continue
            if line.startswith(MARK):
                stderr = err.read_text()
                assert line.split()[-1] == "0", f"{command!r} failed: {''.join(out)[-2000:]} {stderr[-2000:]}"
                return "".join(out).removesuffix("\n"), stderr
            out.append(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)  # what `make run` starts on
def test_the_readme_tour_as_written_shows_what_it_says(topics, session_factory, clock, sink, keys, tmp_path):
    from services.demo import DEMO_PACED_WIN_BACK
    from services.ingest.events.worker import IngestWorker
    from services.ingest.models import Account, RawEvent
    from services.jobs import JobWorker
    from services.outreach.delivery.worker import SenderWorker
    from services.outreach.engagements.worker import EngagementWorker
    from services.outreach.models import Engagement, Enrollment, Message
    from services.outreach.outcomes import signals_with_decision
    from services.outreach.playbooks.worker import SignalWorker
    from services.outreach.starter import seed_starter_content, starter_resources
    from services.outreach.timers import TimerWorker
    from services.rules.evaluation.worker import RulesWorker
    from services.rules.models import SignalRecord
    from services.wiring.app import create_app
    from shared.db import transaction
    from shared.models import DeadLetter
    from tests.support.console import sign_in
    from tests.support.counts import (
        arr_at_risk_is_sum_of_list,
        console_figures_are_counts_of_lists,
        playbook_reports_are_counts_of_lists,
        pool_figures_are_counts_of_lists,
    )
    from tests.support.demo import run_outreach_until, settled
    from tests.support.helpers import auth, cli_env, drain
    from tests.support.server import serving

    settings = topics
    sends = [x for x in DEMO_PACED_WIN_BACK["steps"] if x["type"] in ("send", "recommend")]
    [email] = [x["id"] for x in sends if "champion" in x["to"]]  # the customer's; the other is the owner's brief
    blocks = [commands(b) for b in tour_blocks((ROOT / "README.md").read_text())]
    # `make run`: migrated, starter content seeded, the admin key in var/, the workers (here, on the clock).
    assert blocks[0] == ["make run"]
    started = datetime.now(UTC)
    clock.set(started - timedelta(hours=6))
    with transaction(session_factory) as s:
        seed_starter_content(s, settings, clock.now(), enable_playbooks=True)
    (settings.var_dir / "dev-admin-key").write_text(keys["admin"] + "\n")
    ingest, rules, signals = (
        IngestWorker(settings, session_factory, clock),
        RulesWorker(settings, session_factory, clock),
        SignalWorker(settings, session_factory, clock),
    )
    outreach = [
        signals,
        TimerWorker(settings, session_factory, clock),
        SenderWorker(settings, session_factory, clock, worker_id="tour"),
        EngagementWorker(settings, session_factory, clock),
    ]
    everything = [ingest, rules, *outreach, JobWorker(settings, session_factory, clock)]

    def tick() -> None:
        for w in everything:
            w.poll_once(100)

    tour = tmp_path / "tour"  # the reader's checkout: var/ and .venv/ where the tour looks for them
    tour.mkdir()
    (tour / "var").symlink_to(settings.var_dir)
    (tour / ".venv").symlink_to(ROOT / ".venv")
    app = create_app(settings, clock, session_factory)

    def localise(command: str) -> str:
        return (
            command.replace("http://127.0.0.1:8000", base)
            .replace("127.0.0.1:9092", settings.kafka_bootstrap)
            .replace('"product.events"', json.dumps(settings.topic_events))
        )

    with serving(app, settings) as base:
        shell = Shell(tour, cli_env(settings), tick)
        admin = httpx.Client(base_url=base, headers=auth(keys["admin"]), timeout=30)
        try:
            # In another terminal: the key, then the demo as written (--live: Ctrl-C stops it).
            *preamble, demo = blocks[1]
            assert demo == ".venv/bin/touchline demo --accounts 100 --days 60 --live", demo
            for command in preamble:
                shell.run(localise(command))
            proc = subprocess.Popen(
                ["bash", "-c", "\n".join(map(localise, preamble)) + "\nexec " + demo],
                cwd=tour,
                env=cli_env(settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            log: list[str] = []
            threading.Thread(target=lambda: [log.append(line) for line in proc.stdout], daemon=True).start()
            try:
                deadline = time.monotonic() + 600  # bounds a failing test only
                while not any("live usage every" in line for line in log):
                    assert proc.poll() is None and time.monotonic() < deadline, "".join(log)[-3000:]
                    for w in (ingest, rules, signals):
                        w.poll_once(100)
                    if clock.now() < started:  # the clock keeps moving while the history loads
                        clock.advance(timedelta(hours=1))
                proc.send_signal(signal.SIGINT)  # Ctrl-C stops it
                assert proc.wait(timeout=60) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            output = "".join(log)
            # "waits until ingest has stored all of it (progress in the log), then enables the eight starter rules"
            assert "waiting for ingest" in output and output.index("whole history") < output.index("starter rules enabled")
            assert "live stream stopped" in output
            enabled = admin.get("/v1/rules", params={"limit": 100}).json()["items"]
            assert sorted(r["id"] for r in enabled if r["enabled"]) == sorted(
                p.stem for p in (ROOT / "services/rules/starter").glob("*.yaml")
            )
            assert len(enabled) == 8
            # "Within a minute of the demo enabling them (the scheduled tick)"
            clock.set(datetime.now(UTC) + timedelta(seconds=settings.rules_tick_seconds))
            drain([ingest, rules, signals], lambda: settled(session_factory), timeout=120)

            cohorts = json.loads((settings.var_dir / "demo-cohorts.json").read_text())
            churning, expanding = set(cohorts["churning"]), set(cohorts["expanding"])
            reached = churning - set(cohorts["win_back_message_holdout"])
            engaged = set(cohorts["escalated_unless_they_come_back"])
            with session_factory() as s:
                fired = list(s.scalars(select(SignalRecord)))
                accounts = s.scalar(select(func.count()).select_from(Account))
                assert len(signals_with_decision(s, [f.signal_id for f in fired])) == len(fired)  # a decision for every one
            # "the starter rules fire on exactly the churning and expanding accounts" (and nps-detractor on the detractor)
            assert {f.account_id for f in fired if f.kind == "churn_risk" and f.rule_id != "nps-detractor"} == churning
            assert {f.account_id for f in fired if f.rule_id == "nps-detractor"} <= set(cohorts["nps_detractor"])
            assert {f.account_id for f in fired if f.kind == "expansion"} == expanding
            assert accounts == 100 and len(churning) == 15 and len(expanding) == 15

            def champions(account_id: str) -> list[dict]:
                return admin.get(f"/v1/accounts/{account_id}/users", params={"role": "champion"}).json()["items"]

            def emails_sent() -> bool:  # the first win-back email, seconds after the signal (or deferred: quiet hours)
                with session_factory() as s:
                    return not s.scalar(
                        select(func.count())
                        .select_from(Message)
                        .where(Message.state.in_(("queued", "sending")), Message.next_attempt_at <= clock.now())
                    )

            def churn_engagements() -> dict[str, str]:  # win-back's (the detractor's has the same goal)
                with session_factory() as s:
                    rows = s.scalars(select(Engagement).where(Engagement.goal == "recover_usage", Engagement.playbook_id == "win-back"))
                    return {e.account_id: e.status for e in rows}

            def escalated() -> bool:  # the tour's account is with a CSM (others may be waiting for quiet hours to end)
                return churn_engagements().get(ran["acct"]) == "assigned"

            def dead_letter_stored() -> bool:
                with session_factory() as s:
                    return s.scalar(select(func.count()).select_from(DeadLetter)) == 1

            ran: dict[str, str] = {}

            def j(out: str):
                return json.loads(out)

            # Each tour command: (a piece of it that names it, what to do before it, its check).
            def check_account_var(out, err):
                acct = shell.run('printf %s "$ACCT"')[0]
                assert acct == cohorts["escalated_unless_they_come_back"][0] and acct in churning
                ran["acct"] = acct

            def check_accounts(out, err):
                page = j(out)
                assert len(page["items"]) == 5 and {a["segment"] for a in page["items"]} == {"smb"} and page["next_cursor"]

            def check_usage(out, err):
                usage = j(out)
                assert usage["account_id"] == ran["acct"] and usage["days"] and all(d["day"] >= usage["start"] for d in usage["days"])
                assert (date.fromisoformat(usage["end"]) - date.fromisoformat(usage["start"])).days == 27  # 28 days
                # a churning account: its logins stopped more than 14 days before now
                assert date.fromisoformat(usage["end"]) - date.fromisoformat(usage["last_seen"]["login"][:10]) > timedelta(days=14)

            def check_champions(out, err):
                items = j(out)["items"]
                assert items and {u["role"] for u in items} == {"champion"} and {u["account_id"] for u in items} == {ran["acct"]}

            def check_event(out, err):
                assert j(out)["accepted"] == 1, out
                drain(ingest, lambda: admin.get("/v1/accounts/acct-00001").json().get("last_seen_at") is not None)
                with session_factory() as s:  # the tour's own event is not a 101st account
                    assert s.scalar(select(func.count()).select_from(Account)) == 100

            def check_signals(out, err):
                items = j(out)["items"]
                detractor = set(cohorts["nps_detractor"])  # its answer fires nps-detractor, a churn_risk rule too
                assert (
                    len(items) == 3
                    and {x["kind"] for x in items} == {"churn_risk"}
                    and {x["account_id"] for x in items} <= churning | detractor
                )
                assert all(x["evidence"] for x in items)

            def check_dry_run(out, err):
                r = j(out)
                # It fired (the signal above): every predicate holds, each with its value; now it is in cooldown.
                assert r["account_id"] == ran["acct"] and r["condition"]["result"] is True
                assert r["condition"]["all"] and all(p["result"] is True for p in r["condition"]["all"])
                assert r["evidence"]["days_since(login)"]["value"] >= 14
                assert (
                    r["would_fire"] is False and r["cooldown"]["active"] and r["reasons"] == [r["summary"].removeprefix("would not fire: ")]
                )

            def check_backtest_job(out, err):
                job = shell.run('printf %s "$JOB"')[0]
                assert job.startswith("/v1/jobs/"), job
                ran["job"] = job

            def check_poll(out, err):
                assert j(out)["state"] in ("queued", "running", "succeeded")
                deadline = time.monotonic() + 120
                while (r := admin.get(ran["job"]).json())["state"] != "succeeded":
                    assert r["state"] in ("queued", "running") and time.monotonic() < deadline, r
                    tick()
                result = r["result"]
                assert len(result["per_day"]) == 31 and result["per_week"] and result["accounts"]  # firings per day and week, accounts
                assert sum(d["firings"] for d in result["per_day"]) == result["total_firings"] > 0
                assert result["samples"] and all(x["evidence"] for x in result["samples"])
                ran["backtest"] = result

            def check_cli_backtest(out, err):
                assert str(ran["backtest"]["total_firings"]) in out, out  # the same replay as the job's

            def check_health_list(out, err):
                page = j(out)
                scores = [x["score"] for x in page["items"]]
                assert len(scores) == 5 and scores == sorted(scores), page
                assert {x["account_id"] for x in page["items"]} <= churning, page
                assert {x["label"] for x in page["items"]} <= {"watch", "at_risk"}, page

            def check_health_history(out, err):
                r = j(out)
                assert r["current"]["account_id"] == ran["acct"] and r["current"]["label"] in ("watch", "at_risk")
                days = sorted(r["history"], key=lambda x: x["day"])
                assert len(days) == 45 and days[0]["label"] == "healthy" and days[0]["score"] - days[-1]["score"] >= 20, days
                assert all(c["points"] is not None or c["value"] is None for c in r["current"]["components"])

            def check_validation_job(out, err):
                job = shell.run('printf %s "$VAL"')[0]
                assert job.startswith("/v1/jobs/"), job
                ran["validation"] = job

            def check_validation(out, err):
                assert j(out)["state"] in ("queued", "running", "succeeded")
                deadline = time.monotonic() + 120
                while (r := admin.get(ran["validation"]).json())["state"] != "succeeded":
                    assert r["state"] in ("queued", "running") and time.monotonic() < deadline, r
                    tick()
                result = r["result"]
                # every outcome the demo sent is scored on a day of its history
                assert result["horizon_days"] == 90 and result["unscored"] == 0 and result["churned"] >= 5 and result["stayed"] >= 5, result
                assert result["auc"] >= 0.8, result
                rates = [b["churn_rate"] for b in result["by_band"] if b["outcomes"]]
                assert len(rates) >= 2 and rates == sorted(rates, reverse=True) and rates[0] > rates[-1], result["by_band"]
                assert all(b["ci95"] for b in result["by_band"] if b["outcomes"]) and [x["label"] for x in result["by_label"]] == [
                    "healthy",
                    "watch",
                    "at_risk",
                ]
                assert {c["id"] for c in result["components"]} >= {"champion_coverage", "p0_tickets", "nps"}

            def check_mail(out, err):
                assert out.startswith('{"items":') and len(out) <= 600
                mail = admin.get("/v1/dev/mail", params={"limit": 1000}).json()["items"]
                to = {m["to"] for m in mail}
                with session_factory() as s:
                    first = list(s.scalars(select(Message).where(Message.playbook_id == "win-back", Message.step_id == email)))
                    others = {  # what other playbooks sent (the usage-drop check-in writes to some of them)
                        (m.recipient, m.subject)
                        for m in s.scalars(select(Message).where(Message.playbook_id != "win-back", Message.state == "sent"))
                    }
                held = [m for m in first if m.account_id in cohorts["win_back_message_holdout"]]
                assert held and {(m.state, m.skip_reason) for m in held} == {("skipped", "held_out")}, {
                    (m.state, m.skip_reason) for m in held
                }
                first = [m for m in first if m not in held]
                # The champion of every reached account got the email (or it waits for their morning); held out: nothing.
                assert {m.account_id for m in first} == reached
                for account_id in reached:
                    assert {c["email"] for c in champions(account_id)} <= {m.recipient for m in first if m.account_id == account_id}
                for m in first:
                    assert (m.state == "sent" and m.recipient in to) or (m.state == "queued" and m.payload.get("deferred")), m.state
                for account_id in cohorts["win_back_message_holdout"]:
                    emails = {c["email"] for c in champions(account_id)}
                    assert all((m["to"], m["subject"]) in others for m in mail if m["to"] in emails), account_id

            def check_messages(out, err):
                page = j(out)
                assert set(page) >= {"items", "next_cursor"} and len(page["items"]) == 3
                assert {m["state"] for m in page["items"]} == {"sent"}

            def check_enrolments(out, err):
                page = j(out)
                assert set(page) >= {"items", "next_cursor"} and len(page["items"]) == 3
                assert all(e["history"] and e["playbook_id"] == "win-back" for e in page["items"])

            def check_report(out, err):
                r = j(out)
                assert r["enrolled"] == len(churning)
                assert {"treated", "holdout", "lift", "confidence_interval"} <= set(r), sorted(r)

            def check_cohorts(out, err):
                shown = ast.literal_eval(out)  # a dict's repr
                assert shown == {k: v for k, v in cohorts.items() if k.startswith(("win_back", "escalated"))}
                assert ran["acct"] in shown["escalated_unless_they_come_back"]

            def escalate() -> None:
                # "about five minutes after its signal": the clock runs on, to each next due time.
                run_outreach_until(outreach, session_factory, clock, escalated, churn_engagements)
                rows = churn_engagements()
                assert set(rows) <= reached and all((st == "held_out") == (a not in engaged) for a, st in rows.items()), rows
                with session_factory() as s:
                    win_back = {e.account_id: e for e in s.scalars(select(Enrollment).where(Enrollment.playbook_id == "win-back"))}
                    assigned = (Engagement.goal == "recover_usage", Engagement.status == "assigned", Engagement.playbook_id == "win-back")
                    for e in s.scalars(select(Engagement).where(*assigned)):
                        msgs = s.scalars(select(Message).where(Message.account_id == e.account_id, Message.playbook_id == "win-back"))
                        if not any((m.payload or {}).get("deferred") for m in msgs):  # nobody in quiet hours: minutes
                            assert e.opened_at - win_back[e.account_id].enrolled_at <= timedelta(minutes=6)

            def check_pool(out, err):
                pool = j(out)
                with session_factory() as s:
                    rows = list(s.scalars(select(Engagement)))
                assert {c["csm_id"] for c in pool["csms"]} == {"grace", "ken", "radia", "linus"}
                assert pool["by_status"] == {st: sum(1 for e in rows if e.status == st) for st in {e.status for e in rows}}
                # Expansion signals open a 30-day discovery engagement at once, assigned.
                discovery = [e for e in rows if e.goal == "discover_expansion"]
                assert {e.account_id for e in discovery} <= expanding and discovery
                assert all(e.status == "assigned" and e.time_box_days == 30 for e in discovery)
                assert pool["open"] == sum(1 for e in rows if e.status in ("assigned", "active"))

            def check_engagements(out, err):
                [e] = [x for x in j(out)["items"] if x["goal"] == "recover_usage"]
                assert e["status"] == "assigned" and e["csm_id"] and e["account_id"] == ran["acct"]
                ran["csm_id"] = e["csm_id"]

            def check_csm_id(out, err):
                assert shell.run('printf %s "$CSM_ID"')[0] == ran["csm_id"]

            def check_csm_key(out, err):
                key = shell.run('printf %s "$CSM"')[0]
                assert key == json.loads((settings.var_dir / "demo-csm-keys.json").read_text())[ran["csm_id"]]

            def check_inbox(out, err):
                [item] = [x for x in j(out)["items"] if x["account_id"] == ran["acct"]]
                assert item["reason"]["evidence"]["days_since(login)"]["value"] >= 14
                ignored = [m for m in item["reason"]["automation"]["messages"] if m["playbook_id"] == "win-back"]
                assert {m["step_id"] for m in ignored if m["state"] == "sent"} == {x["id"] for x in sends}
                due = [x["due_at"] for x in j(out)["items"]]
                assert due == sorted(due)  # by due date
                ran["eng"] = item["id"]

            def check_eng(out, err):
                assert shell.run('printf %s "$ENG"')[0] == ran["eng"]

            def check_resolve(out, err):
                r = j(out)
                assert (r["status"], r["outcome"], r["outcome_source"]) == ("resolved", "churned", "csm")
                # the measurement beside it: not recovered, so it agrees with the CSM's churned
                at_close = r["measured"]["at_close"]
                assert at_close["verdict"] != "recovered" and at_close["success"] is False and r["measured"]["csm_agrees"] is True, at_close

            def check_by_hand(out, err):
                r = j(out)
                assert (r["account_id"], r["goal"], r["opened_by"], r["signal_ids"]) == (
                    "acct-00001",
                    "recover_usage",
                    "admin:test admin",
                    [],
                )

            def check_forecast(out, err):
                f = j(out)
                assert f["csms_available"] == 4 and f["pool_capacity"] == 28
                assert {"engagements_per_week", "csms_needed"} <= set(f)

            # The content scenes (issue 22, item 11).
            library = starter_resources()

            def check_scene_var(name: str, index: int) -> Callable[[str, str], None]:
                def check(out, err):
                    value = shell.run(f'printf %s "${name}"')[0]
                    assert value == cohorts["resource_scene"][index] and value in reached, value
                    ran[name] = value

                return check

            def check_segments(out, err):
                sizes = {x["id"]: x["size"] for x in j(out)["items"]}
                use_case = cohorts["use_cases"]
                expected = {f"use-case-{uc}": sum(1 for u in use_case.values() if u == uc) for uc in set(use_case.values())}
                expected["new-customers"] = len(cohorts["onboarding"])  # signed up 3 to 20 days ago; the others 60 or more
                assert sizes == expected, sizes
                ran["segment_sizes"] = sizes

            def check_sizes(out, err):
                items = j(out)["items"]
                assert items and items[-1]["size"] == ran["segment_sizes"]["use-case-analytics"] > 0, items

            def check_why(name: str) -> Callable[[str, str], None]:
                def check(out, err):
                    use_case = cohorts["use_cases"][ran[name]]
                    lines = [line.split(" ", 2) for line in out.splitlines()]
                    assert lines, out
                    picked = {resource for _, resource, _ in lines}
                    for _, resource, why in lines:
                        assert use_case in library[resource]["use_cases"] and f"use case {use_case} (+3)" in why, (use_case, why)
                    ran[f"picked_{name}"] = ",".join(sorted(picked))
                    if name == "A2":  # different use cases, different resources
                        assert cohorts["use_cases"][ran["A1"]] != use_case and not set(ran["picked_A1"].split(",")) & picked

                return check

            def check_to(out, err):
                to = shell.run('printf %s "$TO"')[0]
                with session_factory() as s:
                    [m] = s.scalars(
                        select(Message).where(
                            Message.account_id == ran["A1"],
                            Message.recipient == to,
                            Message.state == "sent",
                            Message.resource_id.is_not(None),
                        )
                    )
                ran["message"], ran["resource"] = m.id, m.resource_id

            def check_link_var(out, err):
                assert re.fullmatch(r"/r/[\w-]+", shell.run('printf %s "$LINK"')[0])

            def check_click(out, err):
                assert out.strip() == f"302 {library[ran['resource']]['url']}", out

            def clicked_and_swept() -> None:
                # "within a minute (the conversion check)": the click reaches ingest, the clock moves a minute on.
                def stored() -> bool:
                    with session_factory() as s:
                        q = select(func.count()).select_from(RawEvent).where(RawEvent.name == "link_clicked")
                        return s.scalar(q.where(RawEvent.account_id == ran["A1"])) == 1

                drain(everything, stored, timeout=60)
                clock.advance(timedelta(seconds=settings.outreach_conversion_check_seconds + 1))
                drain(
                    everything,
                    lambda: (
                        admin.get("/v1/playbooks/win-back/enrollments", params={"account_id": ran["A1"]}).json()["items"][0]["status"]
                        == "converted"
                    ),
                    timeout=60,
                )

            def check_converted(out, err):
                [e] = j(out)["items"]
                assert e["account_id"] == ran["A1"] and e["status"] == "converted", e
                with session_factory() as s:
                    [ev] = s.scalars(select(RawEvent).where(RawEvent.name == "link_clicked", RawEvent.account_id == ran["A1"]))
                assert (ev.properties["message_id"], ev.properties["resource_id"]) == (ran["message"], ran["resource"])

            def check_res(out, err):
                assert shell.run('printf %s "$RES"')[0] == ran["resource"]

            def check_resource_report(out, err):
                r = j(out)
                sent = admin.get("/v1/messages", params={"state": "sent", "resource_id": ran["resource"], "limit": 1000}).json()
                assert r["resource_id"] == ran["resource"] and r["sent"] == len(sent["items"]) >= 1 and r["clicked"] == 1, r
                assert r["treated"]["converted"] >= 1 and {"holdout", "lift", "confidence_interval", "by_segment"} <= set(r), r

            def check_d(out, err):
                d = shell.run('printf %s "$D"')[0]
                assert [d] == cohorts["nps_detractor"] and d in cohorts["healthy"]
                ran["D"] = d

            def detractor_assigned() -> None:
                def assigned() -> bool:
                    with session_factory() as s:
                        e = s.scalar(select(Engagement).where(Engagement.account_id == cohorts["nps_detractor"][0]))
                        return e is not None and e.status == "assigned"

                drain(everything, assigned, timeout=60)

            def check_detractor(out, err):
                [e] = j(out)["items"]
                assert (e["account_id"], e["playbook_id"], e["goal"], e["title"]) == (
                    ran["D"],
                    "nps-detractor",
                    "recover_usage",
                    "NPS detractor",
                )
                assert e["status"] == "assigned" and e["csm_id"], e

            def check_link(out, err):
                assert re.search(r"http://\S+/console/\S+", out), out

            def check_produce(out, err):
                drain([ingest], dead_letter_stored)

            def check_dlq(out, err):
                assert "not json" in out and f"from {settings.topic_events}/" in out, out

            def check_key(out, err):
                [key] = re.findall(r"tl_\w+", out) or [None]
                assert key, out

            checks: list[tuple[str, Callable[[], None] | None, Callable[[str, str], None]]] = [
                ("ACCT=$(", None, check_account_var),
                ("/v1/accounts?segment=smb&limit=5", None, check_accounts),
                ("/usage?days=28", None, check_usage),
                ("/users?role=champion", None, check_champions),
                ("/v1/events", None, check_event),
                ("/v1/signals?kind=churn_risk&limit=3", None, check_signals),
                ("/v1/rules/no-login-14d/test", None, check_dry_run),
                ("JOB=$(", None, check_backtest_job),
                ('"$API$JOB"', None, check_poll),
                ("touchline rules backtest wau-down-40", None, check_cli_backtest),
                ("/v1/health/accounts?limit=5", None, check_health_list),
                ("/health?days=45", None, check_health_history),
                ("VAL=$(", None, check_validation_job),
                ('"$API$VAL"', None, check_validation),
                ('/v1/dev/mail" | head', lambda: drain([*outreach], emails_sent, timeout=60), check_mail),
                ("/v1/messages?state=sent&limit=3", None, check_messages),
                ("/v1/playbooks/win-back/enrollments?limit=3", None, check_enrolments),
                ("/v1/playbooks/win-back/report", None, check_report),
                ('demo-cohorts.json")); print', None, check_cohorts),
                ('"$API/v1/pool" ', escalate, check_pool),
                ('"$API/v1/engagements?account_id=$ACCT" ', None, check_engagements),
                ("CSM_ID=$(", None, check_csm_id),
                ("CSM=$(", None, check_csm_key),
                ('"$API/v1/me/engagements"   #', None, check_inbox),
                ("ENG=$(", None, check_eng),
                ("/resolve", None, check_resolve),
                ('"$API/v1/engagements" \\', None, check_by_hand),
                ("/v1/pool/forecast", None, check_forecast),
                ('["resource_scene"][0]', None, check_scene_var("A1", 0)),
                ('["resource_scene"][1]', None, check_scene_var("A2", 1)),
                ('"$API/v1/segments" ', None, check_segments),
                ("/v1/segments/use-case-analytics/sizes?days=7", None, check_sizes),
                ("$A1" + WHY, None, check_why("A1")),
                ("$A2" + WHY, None, check_why("A2")),
                ("TO=$(", None, check_to),
                ("LINK=$(", None, check_link_var),
                ("%{redirect_url}", None, check_click),
                ("/enrollments?account_id=$A1", clicked_and_swept, check_converted),
                ("RES=$(", None, check_res),
                ("/v1/resources/$RES/report", None, check_resource_report),
                ('["nps_detractor"][0]', None, check_d),
                ('"$API/v1/engagements?account_id=$D"', detractor_assigned, check_detractor),
                ("console-link --role ops", None, check_link),
                ("console-link --csm ken", None, check_link),
                ("KafkaProducer", None, check_produce),
                ("touchline dlq", None, check_dlq),
                ('keys create --role ops --name "CS Ops lead"', None, check_key),
                ('keys create --role ingest --name "product backend"', None, check_key),
            ]
            tour_commands = [c for block in blocks[2:] for c in block]
            for command in tour_commands:
                matching = [c for c in checks if c[0] in command]
                assert len(matching) == 1, f"a tour command with {len(matching)} checks, not 1: {command!r}"
            assert len(tour_commands) == len(checks), "a check for a command the tour no longer has"
            for command in tour_commands:
                [(_piece, before, check)] = [c for c in checks if c[0] in command]
                if before:
                    before()
                out, err = shell.run(localise(command))
                try:
                    check(out, err)
                except (AssertionError, KeyError, ValueError) as exc:
                    raise AssertionError(f"the tour's claim about {command!r} does not hold; it printed:\n{out[:3000]}") from exc

            # The world the tour made: every console, report and pool figure is the count of its list.
            async def counted() -> tuple[int, int]:
                async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                    await sign_in(client, keys["ops"])
                    figures = await console_figures_are_counts_of_lists(
                        client, ["win-back", "onboarding-nudge", "usage-drop-check-in", "expansion-congrats", "expansion-discovery"]
                    )
                    reported = await playbook_reports_are_counts_of_lists(client, auth(keys["ops"]))
                    await pool_figures_are_counts_of_lists(client, auth(keys["ops"]))
                    await arr_at_risk_is_sum_of_list(client)
                return figures, reported

            figures, reported = asyncio.run(counted())
            assert figures >= 10 and reported
        finally:
            admin.close()
            shell.close()
            for w in everything:
                w.close()
