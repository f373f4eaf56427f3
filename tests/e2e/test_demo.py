"""`touchline demo` run as the README says, in its own process, against the real workers:
the starter rules fire on exactly the churning and expanding accounts, and the churning
accounts that ignore the win-back emails are escalated to a pooled CSM minutes later."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from services.demo import KNOWN_WITHIN_DAYS, build_accounts


def first_firings(session, rule_id: str, today: date) -> dict[str, date]:
    """Each account's first day ``rule_id`` would have fired on over the demo's 60 days (a replay)."""
    from services.rules.interface import replay_firings

    replay = replay_firings(session, rule_id, today - timedelta(days=59), today, lookback_days=400)
    first: dict[str, date] = {}
    for day, account in replay.firings:
        first.setdefault(account, day)
    return first


async def test_the_demo_run_as_the_readme_says_fires_on_its_cohorts_and_escalates_within_minutes(
    topics, session_factory, clock, sink, api, keys
):
    """`make run` (workers up, starter outreach seeded), then `touchline demo` in its own
    process: history, wait for ingest, demo-paced win-back, enable the starter rules. The
    real workers run in-process on a simulated clock that keeps moving (an hour per round)
    while the history loads, so any tick that ran on half-loaded data would leave a wrong
    signal. Then the outreach workers run on while the clock moves to each next due time:
    the churning accounts that ignore both win-back emails are escalated to a pooled CSM
    minutes later, and the Done-when of the engagements issue holds through the API."""
    import json
    import subprocess
    import sys
    import time

    from sqlalchemy import select

    from services.demo import DEMO_PACED_WIN_BACK
    from services.ingest.events.worker import IngestWorker
    from services.outreach.delivery.worker import SenderWorker
    from services.outreach.engagements.worker import EngagementWorker
    from services.outreach.models import Engagement, Enrollment, Message
    from services.outreach.playbooks.worker import SignalWorker
    from services.outreach.starter import seed_starter_content
    from services.outreach.timers import TimerWorker
    from services.rules.evaluation.worker import RulesWorker
    from services.rules.interface import health_history
    from services.rules.models import SignalRecord
    from shared.db import transaction
    from tests.support.demo import run_outreach_until, settled
    from tests.support.helpers import auth, cli_env, drain, expected_held_out, run_jobs

    # Quiet hours off: whether a contact's evening falls in the run depends on the hour CI
    # starts, and a deferred escalation lets the others' one-hour time-boxes expire first
    # (docs/engagements.md). Quiet hours have their own tests; this one is the demo's story.
    settings = topics.model_copy(update={"quiet_hours_start": 0, "quiet_hours_end": 0})
    started = datetime.now(UTC)
    clock.set(started - timedelta(hours=6))
    with transaction(session_factory) as s:
        seed_starter_content(s, settings, clock.now(), enable_playbooks=True)
    signals = SignalWorker(settings, session_factory, clock)
    workers = [IngestWorker(settings, session_factory, clock), RulesWorker(settings, session_factory, clock), signals]

    proc = subprocess.Popen(
        [sys.executable, "-m", "services.wiring.cli", "demo", "--accounts", "20", "--days", "60"],
        env=cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # bounds a failing test only
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the demo did not finish"
            for w in workers:
                w.poll_once(100)
            if clock.now() < started:
                clock.advance(timedelta(hours=1))
        output = proc.stdout.read()
        assert proc.returncode == 0, output[-3000:]
        assert "waiting for ingest" in output and output.index("whole history") < output.index("starter rules enabled")
        assert output.index("demo pace") < output.index("starter rules enabled")
        clock.set(datetime.now(UTC) + timedelta(seconds=settings.rules_tick_seconds))
        drain(workers, lambda: settled(session_factory), timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers[:2]:
            w.close()

    cohorts = {a.id: a.cohort for a in build_accounts(20, 7, started.date(), 60)}
    # The health story: the demo scored every account as of each day of its history, then today.
    assert "health of the churning accounts" in output
    today = started.date()
    with session_factory() as s:
        first_signal = first_firings(s, "no-login-14d", today)
        usage_down = first_firings(s, "wau-down-40", today)
        history = {a: sorted(health_history(s, a, today - timedelta(days=59), today), key=lambda r: r.day) for a in cohorts}
    churning = {a for a, c in cohorts.items() if c == "churning"}
    assert set(first_signal) == set(usage_down) == churning
    for account, rows in history.items():
        assert [r.day for r in rows] == [today - timedelta(days=59 - i) for i in range(60)], account  # one score a day
        if cohorts[account] in ("healthy", "expanding"):
            assert {r.label for r in rows[-30:]} == {"healthy"}, (account, [(r.day, r.score) for r in rows[-30:]])
        elif cohorts[account] == "churning":
            # Healthy, then it slides and is never healthy again: on watch (its champion quiet,
            # P0 tickets, a detractor's answer) before wau-down-40 would first have fired on it,
            # and at risk before no-login-14d would have.
            scores = [(str(r.day)[5:], r.score) for r in rows]
            healthy = [r.day for r in rows if r.label == "healthy"]
            assert healthy and healthy[-1] < today, (account, scores)
            slide = [r for r in rows if r.day > healthy[-1]]
            at_risk = [r.day for r in slide if r.label == "at_risk"]
            assert slide[0].day < usage_down[account], (account, usage_down[account], str(scores))
            assert at_risk and at_risk[0] < first_signal[account], (account, first_signal[account], scores)
            assert rows[-1].label == "at_risk", (account, scores)

    with session_factory() as s:
        fired = list(s.scalars(select(SignalRecord)))
    by_kind = defaultdict(set)
    for sig in fired:
        if sig.rule_id != "nps-detractor":  # the detractor's answer (its scene: content_scenes)
            by_kind[sig.kind].add(sig.account_id)
    assert by_kind["churn_risk"] == {a for a, c in cohorts.items() if c == "churning"}
    assert by_kind["expansion"] == {a for a, c in cohorts.items() if c == "expanding"}
    # The starter rule on health_change fires too, on churning accounts only (those whose score
    # fell 20 points in the last 14 days).
    fell = {sig.account_id for sig in fired if sig.rule_id == "health-fell-20"}
    assert fell and fell <= churning, fell

    # What the demo said it made (var/demo-cohorts.json, which the README's tour reads) is what happened.
    said = json.loads((settings.var_dir / "demo-cohorts.json").read_text())
    assert set(said["churning"]) == by_kind["churn_risk"] and set(said["expanding"]) == by_kind["expansion"]
    # The demo pace: the outreach workers run on, the clock jumping to each next due time.
    reached = by_kind["churn_risk"] - set(said["win_back_message_holdout"])
    engaged = set(said["escalated_unless_they_come_back"])
    assert reached == engaged | set(said["win_back_escalation_holdout"])
    assert reached == {a for a in by_kind["churn_risk"] if not expected_held_out("win-back", a, 20)}  # the engine's hash
    assert engaged, "the demo's 20 accounts should have a churning account the holdouts leave to a CSM"
    outreach = [
        signals,
        TimerWorker(settings, session_factory, clock),
        SenderWorker(settings, session_factory, clock, worker_id="demo-test"),
        EngagementWorker(settings, session_factory, clock),
    ]

    def churn_engagements() -> dict[str, Engagement]:  # win-back's (a detractor's engagement has the same goal)
        with session_factory() as s:
            rows = s.scalars(select(Engagement).where(Engagement.goal == "recover_usage", Engagement.playbook_id == "win-back"))
            return {e.account_id: e for e in rows}

    def escalated() -> bool:
        rows = churn_engagements()
        # An engaged account was assigned to a CSM (by now its one-hour time-box may have run
        # out while quiet hours held another account's escalation to the contact's morning).
        return set(rows) == reached and all(
            (rows[a].assigned_at is not None and rows[a].csm_id is not None) if a in engaged else rows[a].status == "held_out"
            for a in reached
        )

    try:
        run_outreach_until(outreach, session_factory, clock, escalated, churn_engagements)
        clicked = await content_scenes(settings, session_factory, clock, api, keys, outreach, said, cohorts)
    finally:
        for w in outreach:
            w.close()

    with session_factory() as s:
        msgs = list(s.scalars(select(Message).where(Message.account_id.is_not(None))))
        enrolled = {x.account_id: x for x in s.scalars(select(Enrollment).where(Enrollment.playbook_id == "win-back"))}
    assert enrolled[clicked].status == "converted"  # the click (content_scenes) converted its enrolment
    # No customer of a healthy account is written to (the detractor's CSM is sent the assignment notice).
    assert msgs and not [m for m in msgs if m.account_id and cohorts[m.account_id] == "healthy" and m.audience == "customer"]
    assert {m.account_id for m in msgs if m.playbook_id == "win-back"} <= by_kind["churn_risk"]
    steps = [s["id"] for s in DEMO_PACED_WIN_BACK["steps"] if s["type"] in ("send", "recommend")]
    for account_id, e in churn_engagements().items():
        sent = [m for m in msgs if m.account_id == account_id and m.playbook_id == "win-back" and m.state == "sent"]
        assert sorted({m.step_id for m in sent}) == sorted(steps) and all(m.sent_at <= e.opened_at for m in sent)
        if not any((m.payload or {}).get("deferred") for m in sent):  # nobody in quiet hours: minutes, not days
            assert e.opened_at - enrolled[account_id].enrolled_at <= timedelta(minutes=6)

    # The CRM's contract outcomes the demo sent: churning accounts renewing within 90 days churn at their
    # renewal, expanding ones expand, healthy ones renewing soon renew (what validation measures).
    ops = auth(keys["ops"])
    kinds: dict[str, set[str]] = defaultdict(set)
    for a in cohorts:
        page = (await api.get(f"/v1/accounts/{a}/contract-outcomes", headers=ops)).json()
        for o in page["items"]:
            kinds[o["kind"]].add(a)
    accts = {a.id: a for a in build_accounts(20, 7, started.date(), 60)}
    soon = {a for a, x in accts.items() if (x.renewal - started.date()).days <= KNOWN_WITHIN_DAYS}
    assert kinds["churned"] == {a for a in soon if cohorts[a] == "churning"} and kinds["churned"]
    assert kinds["expanded"] == {a for a, c in cohorts.items() if c == "expanding"}
    assert kinds["renewed"] == {a for a in soon if cohorts[a] == "healthy"} and set(kinds) <= {"churned", "expanded", "renewed"}

    # Validation at its default horizon (90 days) over the demo's history: every outcome is
    # scored, the score separates the churned accounts from those that stayed (AUC), and the
    # churn rate falls band by band as the score rises.
    r = await api.post("/v1/health/validation", json={}, headers=ops)
    assert r.status_code == 202, r.text
    run_jobs(settings, session_factory, clock)
    job = (await api.get(r.headers["location"], headers=ops)).json()
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["horizon_days"] == 90 and result["unscored"] == 0
    assert result["churned"] == len(kinds["churned"]) and result["stayed"] == len(kinds["expanded"] | kinds["renewed"])
    assert result["auc"] >= 0.8, result
    rates = [b["churn_rate"] for b in result["by_band"] if b["outcomes"]]
    assert len(rates) >= 2 and rates == sorted(rates, reverse=True) and rates[0] > rates[-1], result["by_band"]

    # A CSM's key lists the engagement with the evidence and the ignored emails in one response.
    rows = churn_engagements()
    engaged -= {clicked}
    # One still open (earlier ones may have expired while quiet hours held a later one).
    account_id = sorted(a for a in engaged if rows[a].status in ("assigned", "active"))[0]
    e = rows[account_id]
    csm = auth(json.loads((settings.var_dir / "demo-csm-keys.json").read_text())[e.csm_id])
    mine = (await api.get("/v1/me/engagements", headers=csm)).json()
    [item] = [x for x in mine["items"] if x["id"] == e.id]
    assert item["reason"]["evidence"]["days_since(login)"]["value"] >= 14
    ignored = [m for m in item["reason"]["automation"]["messages"] if m["playbook_id"] == "win-back"]
    assert sorted({m["step_id"] for m in ignored if m["state"] == "sent"}) == sorted(steps)
    r = await api.post(f"/v1/engagements/{e.id}/resolve", json={"outcome": "churned", "note": "moved to a competitor"}, headers=csm)
    assert r.status_code == 200 and (r.json()["status"], r.json()["outcome"]) == ("resolved", "churned")
    pool = (await api.get("/v1/pool", headers=ops)).json()
    assert pool["by_outcome"].get("churned") == 1 and pool["by_status"]["resolved"] == 1
    forecast = await api.get("/v1/pool/forecast", headers=ops)
    assert forecast.status_code == 200 and forecast.json()["csms_available"] == 4


async def content_scenes(settings, session_factory, clock, api, keys, outreach, said, cohorts) -> str:
    """The demo's content scenes (issue 22, item 11), once the escalations are done: its
    accounts carry use cases (the starter segments hold them, sized per day); every churning
    account the win-back reaches gets the resource for its use case, explained; a click on
    the first scene account's link comes back as a link_clicked event and converts its
    enrolment; the detractor's NPS answer opened an engagement; the resource's report shows
    the click and the groups against the holdout. Returns the account that clicked."""
    import re

    from sqlalchemy import select

    from services.demo import USE_CASES
    from services.ingest.events.worker import IngestWorker
    from services.ingest.models import RawEvent
    from services.outreach.models import Engagement, Enrollment, Message
    from services.outreach.starter import starter_resources
    from tests.support.helpers import auth, drain

    ops = auth(keys["ops"])
    use_case = said["use_cases"]
    assert set(use_case) == set(cohorts) and set(use_case.values()) == set(USE_CASES)
    # The starter segments by use case: their members are the accounts with that use case, sized today.
    for uc in USE_CASES:
        members = (await api.get(f"/v1/segments/use-case-{uc}/members", params={"limit": 100}, headers=ops)).json()["items"]
        assert {m["account_id"] for m in members} == {a for a, u in use_case.items() if u == uc}, uc
        sizes = (await api.get(f"/v1/segments/use-case-{uc}/sizes", params={"days": 7}, headers=ops)).json()
        assert sizes["items"] and sizes["items"][-1]["size"] == len(members), sizes  # the last tick's
    # The new customers, a webinar's audience (docs/broadcasts.md): the onboarding cohort,
    # signed up 3 to 20 days ago (every other account 60 or more).
    members = (await api.get("/v1/segments/new-customers/members", params={"limit": 100}, headers=ops)).json()["items"]
    assert said["onboarding"] and {m["account_id"] for m in members} == set(said["onboarding"]), members

    # Every reached churning account's win-back email carries the resource for its use case, and why.
    reached = set(said["churning"]) - set(said["win_back_message_holdout"])
    with session_factory() as s:
        first = list(s.scalars(select(Message).where(Message.playbook_id == "win-back", Message.step_id == "win-back-email")))
    library = starter_resources()
    picked: dict[str, set[str]] = {}
    for m in first:
        if m.account_id not in reached:
            assert m.state == "skipped" and m.skip_reason == "held_out"
            continue
        if m.state == "skipped":  # the contact gate (another playbook wrote to them first): no resource spent
            assert m.skip_reason != "no_resource" and not m.resource_id, m.skip_reason
            continue
        why = m.payload["recommendation"]
        assert m.state == "sent" and m.resource_id == why["resource_id"] and why["score"] > 0 and why["why"], why
        assert why["matched"]["use_case"] == use_case[m.account_id] and why["matched"]["goal"] == "win-back", why
        assert use_case[m.account_id] in library[m.resource_id]["use_cases"]
        picked.setdefault(m.account_id, set()).add(m.resource_id)
    assert set(picked) == reached
    a1, a2 = said["resource_scene"]
    assert {a1, a2} <= reached and use_case[a1] != use_case[a2] and not picked[a1] & picked[a2]

    # A click on a1's tracked link: a 302 to the resource, a link_clicked event, the enrolment converted.
    m = next(x for x in first if x.account_id == a1 and x.state == "sent")
    token = re.findall(r"/r/([A-Za-z0-9_-]+)", m.text_body)[0]  # the resource's link comes first (win-back-pick)
    r = await api.get(f"/r/{token}")
    assert r.status_code == 302 and r.headers["location"] == library[m.resource_id]["url"], r.headers
    ingest = IngestWorker(settings, session_factory, clock)

    def converted() -> bool:
        with session_factory() as s:
            e = s.scalar(select(Enrollment).where(Enrollment.playbook_id == "win-back", Enrollment.account_id == a1))
            return e.status == "converted"

    def click_stored() -> bool:
        with session_factory() as s:
            return s.scalar(select(RawEvent).where(RawEvent.name == "link_clicked", RawEvent.account_id == a1)) is not None

    try:
        drain([ingest], click_stored, timeout=60)
        clock.advance(timedelta(seconds=settings.outreach_conversion_check_seconds + 1))
        drain([ingest, *outreach], converted, timeout=60)
    finally:
        ingest.close()
    with session_factory() as s:
        [ev] = s.scalars(select(RawEvent).where(RawEvent.name == "link_clicked", RawEvent.account_id == a1))
        assert (ev.user_id, ev.properties["resource_id"], ev.properties["message_id"]) == (m.user_id, m.resource_id, m.id)
        # The detractor's answer (today, from the demo) opened an NPS-detractor engagement for a pooled CSM.
        [detractor] = said["nps_detractor"]
        [e] = s.scalars(select(Engagement).where(Engagement.account_id == detractor))
        assert (e.playbook_id, e.goal, e.title, e.status) == ("nps-detractor", "recover_usage", "NPS detractor", "assigned"), e
        assert e.csm_id and cohorts[detractor] == "healthy"

    # The resource's report: sent, the click, treated against held out, with the lift.
    report = (await api.get(f"/v1/resources/{m.resource_id}/report", headers=ops)).json()
    sent = (await api.get("/v1/messages", params={"state": "sent", "resource_id": m.resource_id}, headers=ops)).json()["items"]
    assert report["sent"] == len(sent) >= 1 and report["clicked"] == 1, report
    assert report["treated"]["converted"] >= 1 and {"holdout", "lift", "confidence_interval"} <= set(report), report
    return a1
