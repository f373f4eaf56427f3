"""Surveys (issue 22, item 5) on the real broker, the SMTP sink, the simulated clock and
both databases: a survey step mails NPS score links; a detractor's one-click answer is a
``survey_answered`` event that fires the starter rule and opens an engagement through
the starter playbook; a second answer from the same contact replaces the first (in the
results too), the same answer again writes nothing; forged and expired links record
nothing; the comment page escapes what it shows."""

from __future__ import annotations

import re
from datetime import timedelta

import yaml
from sqlalchemy import func, select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.outreach.links import tokens
from services.outreach.models import SurveyAnswer
from services.outreach.surveys.service import Answer, record_answer
from services.rules.evaluation.worker import RulesWorker
from services.rules.interface import STARTER_DIR as RULES_STARTER
from services.rules.models import SegmentMember
from shared.db import transaction
from shared.outbox import OutboxMessage
from shared.sealed import seal
from tests.support.engagements import add_csm, engagements
from tests.support.helpers import T0, auth, drain
from tests.support.outreach import add_account, messages, save_playbook, save_template, send_signals, signal, simple_playbook
from tests.support.rules import make_rule, signals

OUTREACH_STARTER = RULES_STARTER.parents[1] / "outreach" / "starter"
SURVEY = {"id": "ask", "type": "survey", "survey": "nps-q1", "scale": "nps", "template": "nps-survey", "to": ["champion"]}


def _starter(name: str) -> dict:
    return yaml.safe_load((OUTREACH_STARTER / name).read_text())


def _world(session_factory, settings, clock) -> None:
    add_account(session_factory, "acme")
    save_template(session_factory, settings, "nps-survey", _starter("templates.yaml")["nps-survey"])
    save_playbook(session_factory, "nps", simple_playbook(steps=[SURVEY]))
    save_playbook(session_factory, "nps-detractor", _starter("playbooks.yaml")["nps-detractor"])
    make_rule(session_factory, yaml.safe_load((RULES_STARTER / "nps-detractor.yaml").read_text()), clock.now())


def _answers(session_factory) -> list[tuple]:
    with session_factory() as s:
        return [(a.survey_id, a.account_id, a.user_id, a.score, a.comment, a.answers) for a in s.scalars(select(SurveyAnswer))]


def _outbox_events(session_factory, settings) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == settings.topic_events)) or 0


async def test_a_detractor_answer_opens_an_engagement_and_a_second_answer_replaces_the_first(
    topics, session_factory, workers, sink, api, keys, clock
):
    settings = topics
    _world(session_factory, settings, clock)
    await add_csm(api, keys["ops"], "grace")
    w = workers()
    send_signals(settings, [signal("acme")])
    drain(w["signals"], lambda: len(messages(session_factory, playbook_id="nps")) == 1)
    [m] = messages(session_factory, playbook_id="nps")
    assert m.state == "queued" and m.payload["survey"] == {"id": "nps-q1", "scale": "nps"}

    w["sender"].poll_once()
    [mail] = sink.messages
    text = mail.get_body(("plain",)).get_content()
    links = dict(re.findall(r"^(\d+): (http://touchline\.test/s/[A-Za-z0-9_-]+\?score=\d+)$", text, re.M))
    assert sorted(map(int, links)) == list(range(11))
    assert "How likely are you to recommend" in text and "/r/" not in text  # survey links are ours: not re-routed
    three = links["3"].removeprefix(settings.public_url)

    # One click on 3: recorded at once, its event in the outbox; a second click on 3 writes nothing.
    clock.advance(timedelta(hours=2))
    r = await api.get(three)
    assert r.status_code == 200 and "we recorded <b>3</b>" in r.text and "value='3' checked" in r.text
    assert (await api.get(three)).status_code == 200
    assert _answers(session_factory) == [("nps-q1", "acme", "ada", 3, "", 1)]
    assert _outbox_events(session_factory, settings) == 1

    # The relay publishes it to product.events; ingest stores it; the starter rule fires on it
    # and the starter playbook opens an engagement for the pool.
    ingest = IngestWorker(settings, session_factory, clock)
    rules = RulesWorker(settings, session_factory, clock, tick=False)
    try:
        drain([ingest, rules], lambda: _stored("survey_answered", session_factory) == 1)
        drain([ingest, rules], lambda: len(signals(session_factory, rule_id="nps-detractor")) == 1)
        drain(w["signals"], lambda: len(engagements(session_factory, account_id="acme")) == 1)
        with session_factory() as s:
            [event] = s.scalars(select(RawEvent).where(RawEvent.name == "survey_answered")).all()
        assert (event.account_id, event.user_id, event.timestamp) == ("acme", "ada", clock.now())
        assert event.properties == {
            "survey_id": "nps-q1",
            "scale": "nps",
            "score": 3,
            "comment": "",
            "message_id": m.id,
            "playbook_id": "nps",
        }
        [e] = engagements(session_factory, account_id="acme")
        assert e.goal == "recover_usage" and e.title == "NPS detractor"
        assert e.reason["signal"]["rule_id"] == "nps-detractor"

        # A day later the contact changes their mind, with a comment: it replaces the first answer.
        clock.advance(timedelta(days=1))
        comment = "<script>alert(1)</script> better now & fast"
        path = three.split("?")[0]
        r = await api.post(
            path, content=f"score=9&comment={comment.replace('&', '%26')}", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 200 and "we recorded <b>9</b> and your comment" in r.text and "<script>" not in r.text
        assert _answers(session_factory) == [("nps-q1", "acme", "ada", 9, comment, 2)]
        drain([ingest, rules], lambda: _stored("survey_answered", session_factory) == 2)
    finally:
        for worker in (ingest, rules):
            worker.close()
    assert len(engagements(session_factory, account_id="acme")) == 1  # a promoter opens nothing

    page = await api.get(path)  # the form alone records nothing and shows nobody's earlier answer
    assert page.status_code == 200 and "script" not in page.text and _answers(session_factory)[0][3] == 9

    # Results read each contact's latest answer: one promoter, on the day they gave it, in
    # the named segment the account is in now.
    with transaction(session_factory) as s:
        s.add(SegmentMember(segment_id="analytics-smb", account_id="acme", entered_at=T0, version=1))
    ops = auth(keys["ops"])
    r = await api.get("/v1/surveys/nps-q1/results", headers=ops)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["answered"], body["promoters"], body["passives"], body["detractors"], body["nps"]) == (1, 1, 0, 0, 100.0)
    assert body["scores"]["9"] == 1 and body["scores"]["3"] == 0
    assert body["by_day"] == [
        {"day": clock.now().date().isoformat(), "answered": 1, "promoters": 1, "passives": 0, "detractors": 0, "nps": 100.0}
    ]
    assert body["by_segment"] == [{"segment": "analytics-smb", "answered": 1, "promoters": 1, "passives": 0, "detractors": 0, "nps": 100.0}]
    r = await api.get("/v1/surveys/nps-q1/results", params={"segment": "enterprise"}, headers=ops)
    assert (r.json()["segment"], r.json()["answered"], r.json()["by_day"], r.json()["by_segment"]) == ("enterprise", 0, [], [])
    assert (await api.get("/v1/surveys/nobody-asked/results", headers=ops)).status_code == 404

    assert (await api.get("/v1/surveys/nps-q1/results", headers=auth(keys["csm"]))).status_code == 200


def _stored(name: str, session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(RawEvent).where(RawEvent.name == name)) or 0


async def test_forged_expired_and_off_scale_answers_record_nothing(topics, session_factory, api, clock):
    settings = topics
    data = {"s": "csat-1", "k": "csat", "a": "acme", "u": "ada", "m": "m-1"}
    good = tokens.mint(settings.secret, tokens.SURVEY, data, now=clock.now(), valid_for=timedelta(days=180))
    expired = tokens.mint(settings.secret, tokens.SURVEY, data, now=clock.now() - timedelta(days=200), valid_for=timedelta(days=180))
    link = tokens.mint(settings.secret, tokens.LINK, {**data, "t": "https://x.example"}, now=clock.now(), valid_for=timedelta(days=1))
    for token in ("AAAA", good[:-3], link, seal(settings.secret, "unsubscribe", data)):
        r = await api.get(f"/s/{token}", params={"score": 5})
        assert r.status_code == 400 and "not valid" in r.text and "location" not in r.headers
        r = await api.post(f"/s/{token}", content="score=5", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 400
    assert (await api.get(f"/s/{expired}", params={"score": 5})).status_code == 410
    # CSAT is 1 to 5: a 0 or a 7 is asked again, not recorded.
    r = await api.get(f"/s/{good}", params={"score": 7})
    assert r.status_code == 400 and "from 1 to 5" in r.text
    form = "score=0&comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E"  # shown back escaped, never as markup
    r = await api.post(f"/s/{good}", content=form, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and ">&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in r.text and "<script>" not in r.text
    assert (await api.get(f"/s/{good}")).status_code == 200  # the form alone records nothing
    assert _answers(session_factory) == [] and _outbox_events(session_factory, settings) == 0
    r = await api.get(f"/s/{good}", params={"score": 4})
    assert r.status_code == 200 and _answers(session_factory) == [("csat-1", "acme", "ada", 4, "", 1)]


def test_a_contact_who_answered_is_not_asked_the_same_survey_again(topics, session_factory, workers, clock):
    settings = topics
    add_account(session_factory, "acme")
    save_template(session_factory, settings, "nps-survey", _starter("templates.yaml")["nps-survey"])
    save_playbook(session_factory, "nps", simple_playbook(steps=[{**SURVEY, "to": ["champion", "admin"]}]))
    with transaction(session_factory) as s:
        record_answer(s, settings, Answer({"s": "nps-q1", "k": "nps", "a": "acme", "u": "ada"}, 8, ""), now=clock.now())
        record_answer(s, settings, Answer({"s": "nps-q0", "k": "nps", "a": "acme", "u": "bob"}, 8, ""), now=clock.now())  # another survey
    send_signals(settings, [signal("acme")])
    drain(workers()["signals"], lambda: len(messages(session_factory, playbook_id="nps")) == 2)
    got = {m.recipient: (m.state, m.skip_reason) for m in messages(session_factory, playbook_id="nps")}
    assert got == {"ada@acme.test": ("skipped", "already_answered"), "bob@acme.test": ("queued", None)}
