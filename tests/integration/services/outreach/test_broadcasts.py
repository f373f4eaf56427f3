"""Broadcasts end to end (issue 22, item 6; docs/broadcasts.md), on both databases with
the simulated clock, the real SMTP sink and the real broker: a webinar invitation to a
named segment's members goes through the contact gate (caps, unsubscribes), quiet hours
(deferred, not dropped) and its holdout (the documented hash), as its preview said; its
report is the count of its message lists, clicks included; a scheduled broadcast waits
for its time; a cancelled one sends nothing; sending again, from another session or
after lost progress, sends nobody twice; a bad definition is a 422 naming the path."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

from services.ingest.events.worker import IngestWorker
from services.ingest.models import Account, RawEvent
from services.outreach.broadcasts import service as broadcasts
from services.outreach.broadcasts.schemas import parse_broadcast
from services.outreach.models import Broadcast, Message, Suppression
from services.outreach.policy.tokens import email_hash
from services.rules.evaluation.segments import run_segments
from services.rules.segments import service as segments
from shared import audit
from shared.db import transaction
from tests.support.helpers import auth, drain, expected_held_out, walk
from tests.support.outreach import add_account, messages, save_template

FINTECH = {"id": "fintech", "name": "Fintech", "condition": {"field": "account.traits.industry", "op": "==", "value": "fintech"}}
WEBINAR = {
    "name": "Webinar invitation",
    "subject": "{{ recipient.first_name }}, join our reporting webinar",
    "html_body": '<p>Hi {{ recipient.first_name }}, <a href="https://events.example.com/webinar">save your seat</a>'
    ' along with all the other new customers.</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text_body": "Hi {{ recipient.first_name }}, save your seat: https://events.example.com/webinar\nUnsubscribe: {{ unsubscribe_url }}",
}
FINTECH_ACCOUNTS = [f"fin{i}" for i in range(1, 9)]
# A fixed id (as a preview answers one) so the holdout is known in advance: 30% of these
# accounts by the documented hash, and a set the complement (>= 70) would not pick.
BID = "0b7d4c4e-5f3a-4c1e-9a57-2f0d6d1c9b05"


def _world(session_factory, topics, clock) -> None:
    for a in FINTECH_ACCOUNTS:
        users = {
            "ada": {"email": f"ada@{a}.test", "name": "Ada", "role": "champion", "timezone": "Europe/London"},
            "bob": {"email": f"bob@{a}.test", "name": "Bob", "role": "admin"},
        }
        if a == "fin3":  # 21:00 in Tokyo at T0 (12:00 UTC): inside the default quiet hours
            users["kei"] = {"email": "kei@fin3.test", "name": "Kei", "role": "member", "timezone": "Asia/Tokyo"}
        add_account(session_factory, a, users=users, traits={"industry": "fintech"})
    add_account(session_factory, "retail1", traits={"industry": "retail"})
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(FINTECH, 400), "ops:test", clock.now())
    run_segments(session_factory, topics, clock.now())
    save_template(session_factory, topics, "webinar", WEBINAR)


def _prior(account: str, user: str | None, n: int, now: datetime) -> list[Message]:
    """Customer emails sent before the broadcast, which the caps count."""
    return [
        Message(
            id=f"prior-{account}-{user}-{i}",
            step_id="earlier",
            touch_key=f"earlier-{account}-{i}",
            account_id=account,
            user_id=user,
            channel="email",
            audience="customer",
            recipient=f"{user or 'owner'}@{account}.test",
            payload={},
            state="sent",
            created_at=now - timedelta(days=1),
            updated_at=now - timedelta(days=1),
            sent_at=now - timedelta(days=1),
        )
        for i in range(n)
    ]


def _gate_world(session_factory, now: datetime) -> None:
    with transaction(session_factory) as s:
        s.add_all(_prior("fin1", "ada", 1, now))  # ada@fin1 had her one message of 3 days: contact_cap
        s.add_all(_prior("fin4", None, 3, now))  # fin4 had its 3 touches of 7 days: account_cap for both
        s.add(Suppression(email_hash=email_hash("bob@fin2.test"), email="bob@fin2.test", reason="unsubscribed", created_at=now))


def _held(percent: float) -> set[str]:
    return {a for a in FINTECH_ACCOUNTS if expected_held_out(f"broadcast:{BID}", a, percent)}


def _bcast(session_factory) -> list[Message]:
    return messages(session_factory, broadcast_id=BID)


async def test_a_broadcast_goes_through_the_gate_quiet_hours_and_its_holdout_as_previewed_and_reports_true_counts(
    topics, session_factory, workers, sink, api, keys, clock
):
    _world(session_factory, topics, clock)
    _gate_world(session_factory, clock.now())
    held = _held(30)
    # The holdout picks the accounts the hash puts below 30, not those at 70 or above (its complement).
    assert held == {"fin5", "fin6"} and not held & (set(FINTECH_ACCOUNTS) - _held(70))
    assert not held & {"fin1", "fin2", "fin3", "fin4"}, "the gate's cases must be among the treated accounts"
    ops = auth(keys["ops"])
    body = {"id": BID, "name": "Reporting webinar", "template": "webinar", "segment_id": "fintech", "holdout_percent": 30}

    r = await api.post("/v1/broadcasts/preview", json=body, headers=ops)
    assert r.status_code == 200, r.text
    preview = r.json()
    contacts = 2 * len(FINTECH_ACCOUNTS) + 1
    held_messages = 2 * len(held)
    assert preview["id"] == BID and preview["accounts"] == len(FINTECH_ACCOUNTS) and preview["contacts"] == contacts
    assert preview["held_out"] == {"accounts": len(held), "messages": held_messages}
    assert preview["skipped"] == {"account_cap": 2, "contact_cap": 1, "suppressed": 1}
    assert preview["deferred"] == 1 and preview["would_send"] == contacts - held_messages - 4
    assert not _bcast(session_factory), "a preview writes nothing"

    r = await api.post("/v1/broadcasts", json=body, headers=ops)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "scheduled" and r.json()["send_at"].startswith("2026-03-02T12:00:00")
    w = workers()
    w["timers"].poll_once()

    got = {(m.account_id, m.user_id): (m.state, m.skip_reason) for m in _bcast(session_factory)}
    assert len(got) == contacts and "retail1" not in {a for a, _ in got}  # the segment's members only
    for a in FINTECH_ACCOUNTS:
        if a in held:
            assert got[(a, "ada")] == got[(a, "bob")] == ("skipped", "held_out")
    assert got[("fin1", "ada")] == ("skipped", "contact_cap") and got[("fin1", "bob")] == ("queued", None)
    assert got[("fin2", "bob")] == ("skipped", "suppressed") and got[("fin2", "ada")] == ("queued", None)
    assert got[("fin4", "ada")] == got[("fin4", "bob")] == ("skipped", "account_cap")
    [kei] = messages(session_factory, broadcast_id=BID, user_id="kei")
    assert kei.state == "queued" and kei.payload["deferred"] == "quiet_hours"
    assert kei.next_attempt_at == datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    assert all(m.enrollment_id is None and m.playbook_id is None for m in _bcast(session_factory))
    queued = [m for m in _bcast(session_factory) if m.state == "queued"]
    assert len(queued) == preview["would_send"]
    b = (await api.get(f"/v1/broadcasts/{BID}", headers=ops)).json()
    assert b["status"] == "sent" and b["progress"]["accounts_done"] == len(FINTECH_ACCOUNTS)

    # The sender delivers all but the one in quiet hours, each once; it goes in the morning.
    w["sender"].poll_once()
    to = sorted(str(m["To"]) for m in sink.messages)
    assert to == sorted(m.recipient for m in queued if m.user_id != "kei")
    clock.advance(timedelta(hours=11, minutes=1))
    w["sender"].poll_once()
    assert sorted(str(m["To"]) for m in sink.messages) == sorted(m.recipient for m in queued)

    # A click on the invitation's link comes back as an event carrying the broadcast.
    mail = next(m for m in sink.messages if str(m["To"]) == "ada@fin2.test")
    path = re.search(r"http://touchline\.test(/r/[A-Za-z0-9_-]+)", mail.get_body(("plain",)).get_content())
    assert path and (await api.get(path[1])).headers["location"] == "https://events.example.com/webinar"
    ingest = IngestWorker(topics, session_factory, clock)
    try:
        drain(ingest, lambda: bool(_clicks(session_factory)))
    finally:
        ingest.close()
    [click] = _clicks(session_factory)
    assert click.properties["broadcast_id"] == BID and (click.account_id, click.user_id) == ("fin2", "ada")

    # The report: each figure is the count of the message list it names.
    report = (await api.get(f"/v1/broadcasts/{BID}/report", headers=ops)).json()
    assert report["clicked"] == 1 and report["status"] == "sent"

    async def listed(**more: str) -> list[dict]:
        query = "&".join(f"{k}={v}" for k, v in {"broadcast_id": BID, **more}.items())
        return await walk(api, f"/v1/messages?{query}", ops)

    every = await listed()
    assert report["targeted"] == {"accounts": len({m["account_id"] for m in every}), "messages": len(every)}
    assert report["sent"] == len(await listed(state="sent")) == len(queued)
    assert report["queued"] == len(await listed(state="queued")) == 0 and report["sending"] == len(await listed(state="sending")) == 0
    held_list = await listed(state="skipped", skip_reason="held_out")
    assert report["held_out"] == {"accounts": len({m["account_id"] for m in held_list}), "messages": len(held_list)}
    for reason, n in report["skipped"].items():
        assert n == len(await listed(state="skipped", skip_reason=reason)), reason
    assert sum(report["skipped"].values()) == len(await listed(state="skipped"))
    assert report["skipped"] == {"account_cap": 2, "contact_cap": 1, "held_out": held_messages, "suppressed": 1}


def _clicks(session_factory) -> list[RawEvent]:
    with session_factory() as s:
        return list(s.scalars(select(RawEvent).where(RawEvent.name == "link_clicked")))


async def test_a_scheduled_broadcast_waits_for_send_at_and_a_cancelled_one_sends_nothing(
    topics, session_factory, workers, sink, api, keys, clock
):
    _world(session_factory, topics, clock)
    ops = auth(keys["ops"])
    at = (clock.now() + timedelta(hours=2)).isoformat()
    base = {"name": "Later", "template": "webinar", "segment_id": "fintech", "to": ["champion"]}
    later = (await api.post("/v1/broadcasts", json={**base, "send_at": at}, headers=ops)).json()
    cancelled = (await api.post("/v1/broadcasts", json={**base, "send_at": at}, headers=ops)).json()
    r = await api.post(f"/v1/broadcasts/{cancelled['id']}/cancel", headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    w = workers()

    clock.advance(timedelta(hours=1, minutes=59))
    w["timers"].poll_once()
    assert not messages(session_factory) and (await api.get(f"/v1/broadcasts/{later['id']}", headers=ops)).json()["status"] == "scheduled"
    preview = (await api.get(f"/v1/broadcasts/{later['id']}/preview", headers=ops)).json()
    assert preview["accounts"] == len(FINTECH_ACCOUNTS) and preview["would_send"] == len(FINTECH_ACCOUNTS)  # one champion each

    clock.advance(timedelta(minutes=1))
    w["timers"].poll_once()
    sent = messages(session_factory, broadcast_id=later["id"])
    assert sorted(m.recipient for m in sent) == sorted(f"ada@{a}.test" for a in FINTECH_ACCOUNTS)
    assert all(m.created_at == clock.now() for m in sent)
    assert not messages(session_factory, broadcast_id=cancelled["id"])
    # Once sent and delivered it can no longer be cancelled (nor previewed: its report says what it did).
    w["sender"].poll_once()
    assert len(sink.messages) == len(FINTECH_ACCOUNTS)
    r = await api.post(f"/v1/broadcasts/{later['id']}/cancel", headers=ops)
    assert r.status_code == 409 and "none of its messages is still queued" in r.json()["detail"]
    assert (await api.get(f"/v1/broadcasts/{later['id']}/preview", headers=ops)).status_code == 409
    assert (await api.post(f"/v1/broadcasts/{cancelled['id']}/cancel", headers=ops)).status_code == 409
    listed = (await api.get("/v1/broadcasts?status=cancelled", headers=ops)).json()["items"]
    assert [b["id"] for b in listed] == [cancelled["id"]]
    with session_factory() as s:  # audited like every authored object
        trail = [(a.action, a.actor) for a in audit.history(s, "broadcast", cancelled["id"])]
    assert [action for action, _ in trail] == ["create", "cancel"] and all(actor.startswith("ops") for _, actor in trail)


def test_sending_again_sends_nobody_twice_in_chunks_from_two_sessions(topics, session_factory, workers, sink, clock):
    _world(session_factory, topics, clock)
    settings = topics.model_copy(update={"broadcast_chunk_accounts": 3})
    with transaction(session_factory) as s:
        body = parse_broadcast({"name": "Webinar", "template": "webinar", "segment_id": "fintech"})
        bid = broadcasts.create(s, topics, body, actor="ops:test", now=clock.now()).id
    total = 2 * len(FINTECH_ACCOUNTS) + 1

    # Chunks of 3 accounts, each its own transaction with its progress.
    with transaction(session_factory) as s:
        assert broadcasts.send_chunk(s, settings, bid, clock.now()) is False
    with session_factory() as s:
        b = s.get(Broadcast, bid)
        assert (b.status, b.cursor, b.accounts_done, b.chunks_done) == ("sending", "fin3", 3, 1)
    assert len(messages(session_factory, broadcast_id=bid)) == 7

    # Progress lost (as if a worker had sent a chunk and another read the old cursor):
    # the chunk is written again and inserts nothing new.
    with transaction(session_factory) as s:
        s.execute(update(Broadcast).where(Broadcast.id == bid).values(cursor=None, accounts_done=0, chunks_done=0))
    # Two sessions send at once (PostgreSQL: the row lock; SQLite: the writer lock; both: the keyed insert).
    errors: list[BaseException] = []

    def run() -> None:
        try:
            broadcasts.send_due(session_factory, settings, clock.now(), max_chunks=100)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    sent = messages(session_factory, broadcast_id=bid)
    assert len(sent) == total and len({m.id for m in sent}) == total
    assert all(m.state == "queued" for m in sent), {m.state for m in sent}
    with session_factory() as s:
        assert s.get(Broadcast, bid).status == "sent"

    # Everything again, from scratch: the same ids, nothing new; the sender mails each contact once.
    with transaction(session_factory) as s:
        s.execute(update(Broadcast).where(Broadcast.id == bid).values(status="scheduled", cursor=None))
    broadcasts.send_due(session_factory, settings, clock.now(), max_chunks=100)
    assert len(messages(session_factory, broadcast_id=bid)) == total
    w = workers()
    clock.advance(timedelta(hours=12))  # past kei's quiet hours
    drain(w["sender"], lambda: len(sink.messages) >= total)
    w["sender"].poll_once()
    to = [str(m["To"]) for m in sink.messages]
    assert len(to) == len(set(to)) == total


async def test_a_bad_broadcast_is_a_422_naming_the_path(topics, session_factory, api, keys, clock):
    _world(session_factory, topics, clock)
    save_template(session_factory, topics, "brief", {"name": "Brief", "audience": "internal", "subject": "x", "text_body": "y"})
    save_template(session_factory, topics)  # the win-back names its signal: a broadcast has none
    ops = auth(keys["ops"])
    good = {"name": "Webinar", "template": "webinar", "segment_id": "fintech"}
    cases = [
        ({**good, "template": "nope"}, "/template"),
        ({**good, "template": "brief"}, "/template"),
        ({**good, "template": "win-back"}, "/template"),
        ({**good, "segment_id": "nope"}, "/segment_id"),
        ({**good, "holdout_percent": 101}, "/holdout_percent"),
        ({**good, "to": ["owner"]}, "/to"),
        ({**good, "to": ["everyone"]}, "/to"),
        ({**good, "to": ["active_users:99999999d"]}, "/to"),
        ({**good, "send_at": "2026-03-01T00:00:00Z"}, "/send_at"),
        ({**good, "send_at": "2026-04-01T00:00:00"}, "/send_at"),
        ({**good, "channel": "sms"}, "/channel"),
        ({**good, "tier": 1}, "/tier"),
        ({k: v for k, v in good.items() if k != "name"}, "/name"),
        ({**good, "id": "not-a-uuid"}, "/id"),
    ]
    for body, pointer in cases:
        for path in ("/v1/broadcasts", "/v1/broadcasts/preview"):
            r = await api.post(path, json=body, headers=ops)
            assert r.status_code == 422, (path, body, r.text)
            assert r.json()["error"] == "broadcast_invalid"
            assert pointer in [d["pointer"] for d in r.json()["detail"]], (path, body, r.json())
    with session_factory() as s:
        assert not s.scalars(select(Broadcast)).all()
    assert (await api.post("/v1/broadcasts", json=good, headers=auth(keys["csm"]))).status_code == 403


async def test_the_documented_example_runs_on_the_starter_template_and_segment(topics, session_factory, workers, sink, api, keys, clock):
    """docs/broadcasts.md's example names the starter template `webinar-invite` and the
    starter segment `new-customers` (the accounts in their first 30 days): it previews
    as written, and sent now, the new account's champion and admin get the invitation
    with its link tracked; the account of 200 days gets nothing."""
    from services.outreach.starter import seed_starter_content
    from services.rules.segments.service import install_starter

    docs = (Path(__file__).resolve().parents[4] / "docs" / "broadcasts.md").read_text()
    example = json.loads(re.search(r"```json\n(\{\"name\".*?)```", docs, re.S).group(1))
    assert (example["template"], example["segment_id"]) == ("webinar-invite", "new-customers")
    add_account(session_factory, "fresh")
    add_account(session_factory, "veteran")
    with transaction(session_factory) as s:
        for account, days in (("fresh", 10), ("veteran", 200)):
            s.execute(update(Account).where(Account.id == account).values(signup_date=(clock.now() - timedelta(days=days)).date()))
        seed_starter_content(s, topics, clock.now())
        assert "new-customers" in install_starter(s, "ops:test", clock.now(), 400)
    run_segments(session_factory, topics, clock.now())
    ops = auth(keys["ops"])

    preview = await api.post("/v1/broadcasts/preview", json=example, headers=ops)
    assert preview.status_code == 200, preview.text
    assert (preview.json()["accounts"], preview.json()["contacts"]) == (1, 2)  # fresh's champion and admin

    now = {k: v for k, v in example.items() if k not in ("send_at", "holdout_percent")}
    created = await api.post("/v1/broadcasts", json=now, headers=ops)
    assert created.status_code == 201, created.text
    w = workers()
    w["timers"].poll_once()
    sent = messages(session_factory, broadcast_id=created.json()["id"])
    assert sorted(m.recipient for m in sent) == ["ada@fresh.test", "bob@fresh.test"]
    w["sender"].poll_once()
    assert sorted(str(m["To"]) for m in sink.messages) == ["ada@fresh.test", "bob@fresh.test"]
    for mail in sink.messages:
        assert "webinar" in str(mail["Subject"])
        text = mail.get_body(("plain",)).get_content()
        assert "along with all the other new customers" in text and re.search(r"http://touchline\.test/r/[A-Za-z0-9_-]+", text), text


def _first_chunk_sent(session_factory, topics, clock) -> tuple:
    """A broadcast to the fintech champions in chunks of 3 accounts, its first chunk
    (fin1, fin2, fin3) sent: the chunk settings and its id."""
    settings = topics.model_copy(update={"broadcast_chunk_accounts": 3})
    with transaction(session_factory) as s:
        body = parse_broadcast({"name": "Webinar", "template": "webinar", "segment_id": "fintech", "to": ["champion"]})
        bid = broadcasts.create(s, topics, body, actor="ops:test", now=clock.now()).id
    with transaction(session_factory) as s:
        assert broadcasts.send_chunk(s, settings, bid, clock.now()) is False
    return settings, bid


async def test_cancelling_a_broadcast_being_sent_stops_its_chunks_and_withdraws_what_is_queued(
    topics, session_factory, workers, sink, api, keys, clock
):
    """A broadcast cancelled between two chunks sends no more; its messages still queued
    are withdrawn (skipped: cancelled, counted in the report as in their list); those the
    sender took already went. Audited with what it withdrew."""
    _world(session_factory, topics, clock)
    ops = auth(keys["ops"])
    settings, bid = _first_chunk_sent(session_factory, topics, clock)
    w = workers()
    with transaction(session_factory) as s:  # the sender takes fin1's before the cancel
        s.execute(update(Message).where(Message.broadcast_id == bid, Message.account_id == "fin1").values(state="sending"))

    r = await api.post(f"/v1/broadcasts/{bid}/cancel", headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert broadcasts.send_due(session_factory, settings, clock.now(), max_chunks=100) == 0  # no more chunks
    states = {m.account_id: (m.state, m.skip_reason) for m in messages(session_factory, broadcast_id=bid)}
    assert states == {"fin1": ("sending", None), "fin2": ("skipped", "cancelled"), "fin3": ("skipped", "cancelled")}
    w["sender"].poll_once()
    assert not sink.messages  # nothing withdrawn leaves

    report = (await api.get(f"/v1/broadcasts/{bid}/report", headers=ops)).json()
    listed = await walk(api, f"/v1/messages?broadcast_id={bid}&state=skipped&skip_reason=cancelled", ops)
    assert report["status"] == "cancelled" and report["skipped"] == {"cancelled": 2} == {"cancelled": len(listed)}
    with session_factory() as s:
        (entry,) = [a for a in audit.history(s, "broadcast", bid) if a.action == "cancel"]
    assert entry.details == {"status": "sending", "withdrawn": 2}
    r = await api.post(f"/v1/broadcasts/{bid}/cancel", headers=ops)
    assert r.status_code == 409 and "cancelled already" in r.json()["detail"]


async def test_a_cancelled_broadcasts_message_put_back_by_its_sender_does_not_leave_later(
    topics, session_factory, workers, sink, api, keys, clock
):
    """A sender took the broadcast's messages, then the broadcast was cancelled, then the
    sender gave them back unattempted (it stopped early) or a transient failure queued one
    for a retry: the message is queued again after the cancel withdrew what was queued.
    The sender checks at send time, as it does for unsubscribes: such a message is
    skipped (cancelled), never sent; the report's skipped equals its list."""
    from services.outreach.delivery import repository as delivery

    _world(session_factory, topics, clock)
    ops = auth(keys["ops"])
    settings, bid = _first_chunk_sent(session_factory, topics, clock)
    w = workers()
    with transaction(session_factory) as s:  # a sender claims all three
        taken = delivery.claim_due(s, now=clock.now(), limit=10, owner="other", lease_until=clock.now() + timedelta(minutes=5), token="t1")
        assert sorted(m.account_id for m in taken) == ["fin1", "fin2", "fin3"]
    r = await api.post(f"/v1/broadcasts/{bid}/cancel", headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    with transaction(session_factory) as s:  # ... and puts them back, never attempted
        assert delivery.release(s, [m.id for m in taken], clock.now(), "t1") == 3
    w["sender"].poll_once()
    assert not sink.messages  # cancelled before they left: none goes
    states = {m.account_id: (m.state, m.skip_reason) for m in messages(session_factory, broadcast_id=bid)}
    assert states == {a: ("skipped", "cancelled") for a in ("fin1", "fin2", "fin3")}, states
    report = (await api.get(f"/v1/broadcasts/{bid}/report", headers=ops)).json()
    listed = await walk(api, f"/v1/messages?broadcast_id={bid}&state=skipped&skip_reason=cancelled", ops)
    assert report["queued"] == 0 and report["skipped"] == {"cancelled": 3} == {"cancelled": len(listed)}, report
