"""The per-resource and per-survey reports (issue 22, item 7) on both databases with the
simulated clock: a constructed world of enrolments, the messages a recommend step and a
survey step wrote for them (sent, or skipped as held out with what they would have been
sent), clicks and answers, whose sent, clicked, answered, treated, held-out and
converted counts, lift and interval are counted by hand below and asserted by value,
overall, per step and per named segment (membership as of the enrolment)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from html import unescape

import pytest
from sqlalchemy import select

from services.ingest.models import Account, RawEvent
from services.outreach.content import service as content
from services.outreach.content.schemas import parse_resource
from services.outreach.delivery import repository as delivery_repo
from services.outreach.models import Enrollment, SurveyAnswer
from services.rules.evaluation.segments import run_segments
from services.rules.segments import service as segments
from shared.db import transaction
from tests.support.console import sign_in
from tests.support.helpers import auth
from tests.support.outreach import add_account, days, save_playbook, save_template, simple_playbook

GUIDE = {
    "kind": "article",
    "title": "Five reports <every> team starts with",
    "url": "https://help.example.com/guides/first-reports",
    "summary": "Step by step.",
    "goals": ["adoption", "win-back"],
    "use_cases": ["analytics"],
}
FINTECH = {"id": "fintech", "name": "Fintech", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}
RETAIL = {"id": "retail", "name": "Retail", "condition": {"field": "account.traits.industry", "op": "==", "value": "retail"}}

# a00..a04 fintech, a05..a09 retail. Held out: a03, a04, a08, a09. Converted: a00, a01, a03, a05.
ACCOUNTS = [f"a{i:02d}" for i in range(10)]
HELD = {"a03", "a04", "a08", "a09"}
CONVERTED = {"a00", "a01", "a03", "a05"}
NPS = {"survey": {"id": "nps-q1", "scale": "nps"}}


def _message(enrollment_id, account, user, step, now: datetime, *, state="sent", reason=None, resource=None, payload=None) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "enrollment_id": enrollment_id,
        "playbook_id": "wb",
        "step_id": step,
        "touch_key": f"{enrollment_id}/{step}/{user}",
        "account_id": account,
        "user_id": user,
        "channel": "email",
        "recipient": f"{user}@{account}.test",
        "template_id": "t",
        "resource_id": resource,
        "subject": "s",
        "html_body": "",
        "text_body": "b",
        "payload": dict(payload or {}),
        "state": state,
        "skip_reason": reason,
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_until": None,
        "created_at": now,
        "updated_at": now,
        "sent_at": now if state == "sent" else None,
        "read_at": None,
    }


def _click(account, user, resource, now: datetime, message: dict | None = None) -> RawEvent:
    props = {"url": "https://help.example.com/x", **({"resource_id": resource} if resource else {})}
    if message is not None:
        props["message_id"] = message["id"]
    return RawEvent(
        event_id=str(uuid.uuid4()),
        account_id=account,
        user_id=user,
        type="track",
        name="link_clicked",
        timestamp=now,
        properties=props,
        received_at=now,
    )


def build_world(session_factory, topics, clock) -> None:
    for i, a in enumerate(ACCOUNTS):
        add_account(session_factory, a, traits={"industry": "fintech" if i < 5 else "retail"})
    with transaction(session_factory) as s:
        for rid in ("guide", "other"):
            content.save(s, rid, parse_resource(GUIDE), actor="ops:test", now=clock.now())
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", clock.now())
        segments.create(s, segments.parse(RETAIL, 400), "ops:test", clock.now())
    run_segments(session_factory, topics, clock.now())
    save_template(session_factory, topics)
    save_playbook(session_factory, "wb", simple_playbook(holdout_percent=40))  # the playbook the messages below name
    clock.advance(days(1))
    now = clock.now()
    rows, ids = [], {}
    with transaction(session_factory) as s:
        for a in [*ACCOUNTS, "late"]:
            ids[a] = str(uuid.uuid4())
            s.add(
                Enrollment(
                    id=ids[a],
                    playbook_id="wb",
                    playbook_version=1,
                    account_id=a if a != "late" else "a00",
                    signal_id=f"sig-{a}",
                    signal={},
                    holdout=a in HELD,
                    status="converted" if a in CONVERTED else "completed",
                    active_key=None,
                    history=[],
                    enrolled_at=now,
                )
            )
    sent: dict[tuple[str, str], dict] = {}  # (account, user) -> its message carrying the guide
    for a in ACCOUNTS:
        if a in HELD:  # the recommend step records what they would have received
            rows.append(_message(ids[a], a, "ada", "rec", now, state="skipped", reason="held_out", resource="guide"))
        elif a in {"a00", "a01", "a02", "a05", "a06", "a07"}:
            rows.append(sent.setdefault((a, "ada"), _message(ids[a], a, "ada", "rec", now, resource="guide")))
    rows.append(sent.setdefault(("a00", "bob"), _message(ids["a00"], "a00", "bob", "rec", now, resource="guide")))  # 7 sent, one enrolment
    rows.append(_message(ids["late"], "a00", "ada", "rec", now, state="queued", resource="guide"))  # not sent: not treated
    rows.append(_message(ids["a02"], "a02", "bob", "rec", now, state="skipped", reason="contact_cap", resource="guide"))
    rows.append(_message(ids["a04"], "a04", "bob", "rec2", now, state="skipped", reason="held_out", resource="other"))
    # the survey step of the same playbook: sent to a00, a05, a06; held out a03, a08.
    asked = {a: _message(ids[a], a, "ada", "ask", now, payload=NPS) for a in ("a00", "a05", "a06")}
    rows.extend(asked.values())
    for a in ("a03", "a08"):
        rows.append(_message(ids[a], a, "ada", "ask", now, state="skipped", reason="held_out", payload=NPS))
    rows.append(_message(ids["a01"], "a01", "ada", "ask", now, payload={"survey": {"id": "csat-q1", "scale": "csat"}}))
    with transaction(session_factory) as s:
        delivery_repo.insert_messages(s, rows)
        # clicks: a00's ada twice and bob once, a05's ada; one on another resource, one with no contact
        s.add_all(
            [
                _click("a00", "ada", "guide", now, sent["a00", "ada"]),
                _click("a00", "ada", "guide", now + days(0.1), sent["a00", "ada"]),
                _click("a00", "bob", "guide", now, sent["a00", "bob"]),
                _click("a05", "ada", "guide", now, sent["a05", "ada"]),
                _click("a06", "ada", "other", now),
                _click("a07", None, "guide", now),
                _click("a01", "cy", "guide", now - days(3)),  # received before any message carried it: not read
            ]
        )
        for a, score in (("a00", 9), ("a05", 3)):
            s.add(
                SurveyAnswer(
                    survey_id="nps-q1",
                    account_id=a,
                    user_id="ada",
                    scale="nps",
                    score=score,
                    comment="",
                    message_id=asked[a]["id"],
                    first_answered_at=now,
                    answered_at=now,
                )
            )
        s.add(
            SurveyAnswer(
                survey_id="csat-q1",
                account_id="a01",
                user_id="ada",
                scale="csat",
                score=5,
                comment="",
                first_answered_at=now,
                answered_at=now,
            )
        )
    # a00 turns retail after its enrolment: it still counts as fintech
    clock.advance(days(1))
    with transaction(session_factory) as s:
        s.get(Account, "a00").traits = {"industry": "retail"}
    run_segments(session_factory, topics, clock.now())


def _group(g: dict) -> tuple[int, int]:
    return g["enrolled"], g["converted"]


async def test_the_resource_report_counts_sent_clicked_and_lift_by_hand(api, keys, session_factory, topics, clock):
    ops, csm = auth(keys["ops"]), auth(keys["csm"])
    build_world(session_factory, topics, clock)
    r = await api.get("/v1/resources/guide/report", headers=csm)
    assert r.status_code == 200, r.text
    got = r.json()
    # sent: a00 (ada, bob), a01, a02, a05, a06, a07; the queued and skipped ones are not
    assert got["sent"] == 7
    # clicked: a00/ada, a00/bob, a05/ada (a repeat counts once; another resource's, a contactless one and one
    # received days before the first message carrying the resource do not)
    assert got["clicked"] == 3
    # treated a00 a01 a02 a05 a06 a07 (3 converted), held out a03 a04 a08 a09 (1 converted; a04's "other" does not count)
    assert _group(got["treated"]) == (6, 3) and _group(got["holdout"]) == (4, 1)
    assert got["lift"] == pytest.approx(0.5 - 0.25)
    assert got["relative_lift"] == pytest.approx(1.0)
    # Newcombe by hand: Wilson(3/6) = (0.18761, 0.81239), Wilson(1/4) = (0.04558, 0.69936);
    # 0.25 -/+ sqrt((0.5-0.18761)^2 + (0.69936-0.25)^2), sqrt((0.81239-0.5)^2 + (0.25-0.04558)^2)
    assert got["confidence_interval"] == pytest.approx([-0.29727, 0.62332], abs=1e-4)
    assert [(s["playbook_id"], s["step_id"]) for s in got["by_step"]] == [("wb", "rec")]
    # per segment as of enrolment: fintech a00 a01 a02 (2 conv) vs a03 a04 (1); retail a05 a06 a07 (1) vs a08 a09 (0)
    seg = {s["segment_id"]: s for s in got["by_segment"]}
    assert list(seg) == ["fintech", "retail"] and got["enrolments"] == 10
    assert _group(seg["fintech"]["treated"]) == (3, 2) and _group(seg["fintech"]["holdout"]) == (2, 1)
    assert seg["fintech"]["lift"] == pytest.approx(2 / 3 - 1 / 2)
    assert _group(seg["retail"]["treated"]) == (3, 1) and _group(seg["retail"]["holdout"]) == (2, 0)
    assert seg["retail"]["lift"] == pytest.approx(1 / 3)
    assert seg["retail"]["relative_lift"] is None  # nothing to divide by
    # sent and clicked per segment, as of the enrolment: fintech a00 (ada, bob), a01, a02; retail a05, a06, a07;
    # clicked: a00's ada and bob (fintech, though a00 is retail now), a05's ada (retail)
    assert [(seg[k]["sent"], seg[k]["clicked"]) for k in ("fintech", "retail")] == [(4, 2), (3, 1)]
    # the sent figure is the count of the message list it summarises
    listed = (await api.get("/v1/messages?state=sent&resource_id=guide&limit=1000", headers=ops)).json()["items"]
    assert len(listed) == got["sent"]
    # one segment asked; segments in pages; unknown ones and resources
    r = await api.get("/v1/resources/guide/report?segment=retail", headers=ops)
    assert [s["segment_id"] for s in r.json()["by_segment"]] == ["retail"]
    r = await api.get("/v1/resources/guide/report?segment=nope", headers=ops)
    assert r.status_code == 422 and "nope" in r.text
    assert (await api.get("/v1/resources/missing/report", headers=ops)).status_code == 404
    other = (await api.get("/v1/resources/other/report", headers=ops)).json()
    assert (other["sent"], other["clicked"], _group(other["treated"]), _group(other["holdout"])) == (0, 1, (0, 0), (1, 0))
    assert other["lift"] is None and other["confidence_interval"] is None


async def test_the_survey_report_counts_sent_answered_and_lift_by_hand(api, keys, session_factory, topics, clock):
    ops = auth(keys["ops"])
    build_world(session_factory, topics, clock)
    r = await api.get("/v1/surveys/nps-q1/report", headers=auth(keys["csm"]))
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["sent"], got["answered"]) == (3, 2)
    # treated a00 a05 a06 (a00 and a05 converted) vs held out a03 a08 (a03 converted)
    assert _group(got["treated"]) == (3, 2) and _group(got["holdout"]) == (2, 1)
    assert got["lift"] == pytest.approx(2 / 3 - 1 / 2)
    assert got["confidence_interval"] == pytest.approx([-0.44578, 0.65483], abs=1e-4)
    seg = {s["segment_id"]: s for s in got["by_segment"]}
    assert _group(seg["fintech"]["treated"]) == (1, 1) and _group(seg["fintech"]["holdout"]) == (1, 1)
    assert _group(seg["retail"]["treated"]) == (2, 1) and _group(seg["retail"]["holdout"]) == (1, 0)
    # sent a00 (fintech as of its enrolment), a05 a06 (retail); answered a00 and a05 through those messages
    assert [(seg[k]["sent"], seg[k]["answered"]) for k in ("fintech", "retail")] == [(1, 1), (2, 1)]
    assert [(s["step_id"], _group(s["treated"])) for s in got["by_step"]] == [("ask", (3, 2))]
    listed = (await api.get("/v1/messages?state=sent&survey_id=nps-q1&limit=1000", headers=ops)).json()["items"]
    assert len(listed) == got["sent"]
    csat = (await api.get("/v1/surveys/csat-q1/report", headers=ops)).json()
    assert (csat["sent"], csat["answered"], _group(csat["treated"])) == (1, 1, (1, 1))
    assert (await api.get("/v1/surveys/never-sent/report", headers=ops)).status_code == 404
    with session_factory() as s:
        assert len(s.scalars(select(SurveyAnswer).where(SurveyAnswer.survey_id == "nps-q1")).all()) == got["answered"]


async def test_the_console_pages_show_the_reports_figures_escaped(api, keys, session_factory, topics, clock):
    """The resource page's sent figure is the API's and the count of the message list it
    links to; its clicked figure and the survey page's answered figure are the API's; a
    CSM reads both pages (no message list link: that list is CS Ops'); the title is text."""
    build_world(session_factory, topics, clock)
    ops = auth(keys["ops"])
    api_report = (await api.get("/v1/resources/guide/report", headers=ops)).json()
    assert (await sign_in(api, keys["ops"])).status_code == 303
    page = await api.get("/console/resources/guide")
    assert page.status_code == 200, page.text
    assert "Five reports &lt;every&gt; team" in page.text and "<every>" not in page.text
    sent = re.search(r'id="sent" data-count="(\d+)" href="([^"]+)"', page.text)
    assert sent and int(sent.group(1)) == api_report["sent"] == 7
    listed = await api.get(unescape(sent.group(2)))
    assert int(re.search(r'id="count">([\d,]+)', listed.text).group(1)) == 7
    assert f'data-clicked="{api_report["clicked"]}"' in page.text and api_report["clicked"] == 3
    assert re.search(r'id="treated">6<', page.text) and re.search(r'id="held-out">4<', page.text)
    assert 'id="lift">Lift: <strong>25.0%</strong>' in page.text
    assert 'data-segment="fintech"' in page.text and 'data-segment="retail"' in page.text
    for row in api_report["by_segment"]:  # per segment, the API's sent and clicked
        assert f'data-segment="{row["segment_id"]}" data-sent="{row["sent"]}" data-clicked="{row["clicked"]}"' in page.text
    library = await api.get("/console/resources?tag=analytics")
    assert library.status_code == 200 and 'href="/console/resources/guide"' in library.text

    survey_api = (await api.get("/v1/surveys/nps-q1/report", headers=ops)).json()
    results_api = (await api.get("/v1/surveys/nps-q1/results", headers=ops)).json()
    page = await api.get("/console/surveys/nps-q1")
    assert page.status_code == 200, page.text
    assert f'data-answered="{survey_api["answered"]}"' in page.text and survey_api["answered"] == 2
    sent = re.search(r'id="sent" data-count="(\d+)" href="([^"]+)"', page.text)
    assert sent and int(sent.group(1)) == survey_api["sent"] == 3
    listed = await api.get(unescape(sent.group(2)))
    assert int(re.search(r'id="count">([\d,]+)', listed.text).group(1)) == 3
    assert re.search(r'id="score" data-answered="2"><span class="figure">0.0</span> NPS', page.text)  # one promoter, one detractor
    assert results_api["nps"] == 0.0
    for row in survey_api["by_segment"]:
        assert f'data-segment="{row["segment_id"]}" data-sent="{row["sent"]}" data-answered="{row["answered"]}"' in page.text
    assert page.text.count('<tr><th scope="row">') >= 1 and 'id="by-day"' in page.text
    listing = await api.get("/console/surveys")
    assert 'data-survey="nps-q1"' in listing.text and 'data-survey="csat-q1"' in listing.text
    assert (await api.get("/console/surveys/never-sent")).status_code == 404
    assert (await api.get("/console/surveys/nps-q1?end=0001-01-02")).status_code == 422  # not a 500

    api.cookies.clear()
    assert (await sign_in(api, keys["csm"])).status_code == 303
    page = await api.get("/console/resources/guide")
    assert page.status_code == 200 and 'data-sent="7"' in page.text and "/console/messages" not in page.text
    page = await api.get("/console/surveys/nps-q1")
    assert page.status_code == 200 and 'data-sent="3"' in page.text and "/console/messages" not in page.text


async def test_the_recommend_steps_own_rows_feed_the_report(api, keys, topics, session_factory, workers, sink, clock):
    """End to end through the real recommend step, the broker, the sender and the SMTP
    sink: twelve analytics accounts, half held out by the documented hash; the treated
    ones are mailed the guide, the held-out ones recorded as held out with it; the first
    four accounts convert. The report's groups are those the hash says."""
    from tests.integration.services.outreach.test_recommend import LIBRARY, PICK, RECOMMEND
    from tests.support.helpers import T0, drain, expected_held_out
    from tests.support.outreach import messages, send_signals, signal

    accounts = [f"an{i:02d}" for i in range(12)]
    for a in accounts:
        add_account(session_factory, a, traits={"use_case": "analytics"})
    with transaction(session_factory) as s:
        for rid, body in LIBRARY.items():
            content.save(s, rid, parse_resource(body), actor="test", now=T0)
    save_template(session_factory, topics, "resource-pick", PICK)
    save_playbook(session_factory, "route", simple_playbook(steps=[RECOMMEND], holdout_percent=50))
    w = workers()
    send_signals(topics, [signal(a) for a in accounts])
    drain(w["signals"], lambda: len(messages(session_factory, playbook_id="route")) == 12)
    w["sender"].poll_once()
    with transaction(session_factory) as s:
        for e in s.scalars(select(Enrollment).where(Enrollment.account_id.in_(accounts[:4]))):
            e.status = "converted"

    held = [a for a in accounts if expected_held_out("route", a, 50)]
    treated = [a for a in accounts if a not in held]
    assert held and treated  # the hash splits these twelve (else the test says nothing)
    got = (await api.get("/v1/resources/first-reports/report", headers=auth(keys["ops"]))).json()
    t_conv, h_conv = sum(a in accounts[:4] for a in treated), sum(a in accounts[:4] for a in held)
    assert got["sent"] == len(treated) == len(sink.messages)
    assert _group(got["treated"]) == (len(treated), t_conv) and _group(got["holdout"]) == (len(held), h_conv)
    assert got["lift"] == pytest.approx(t_conv / len(treated) - h_conv / len(held))
    assert got["clicked"] == 0
