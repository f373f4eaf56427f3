"""Every link answers back (issue 22, item 4) on the real broker, the SMTP sink, the
simulated clock and both databases: the links of a routed resource's email go through
the signed redirect, a click becomes a ``link_clicked`` event in ingest that converts the
enrolment, and forged, altered, expired and replayed tokens record nothing and never
send the reader off-site. (Tokens and rewriting case by case:
tests/unit/services/outreach/test_links.py.)"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta

from kafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.ingest.events.worker import IngestWorker
from services.ingest.models import RawEvent
from services.outreach.content.schemas import ResourceIn
from services.outreach.content.service import save as save_resource
from services.outreach.links import tokens
from services.outreach.links.service import PUBLISHING
from services.outreach.models import Enrollment
from shared import b64url
from shared.api import SendQueue
from shared.db import transaction
from shared.sealed import seal
from tests.support.helpers import T0, committed_offsets, drain
from tests.support.outreach import add_account, messages, save_playbook, save_template, send_signals, signal, simple_playbook

PICK = {
    "name": "A resource for you",
    "subject": "{{ resource.title }}",
    "html_body": '<p><a href="{{ resource.url }}?utm_source=mail&amp;x=1">{{ resource.title }}</a></p>'
    '<p><a href="{{ resource.url }}?utm_source=mail&x=1">again</a></p><a href="{{ unsubscribe_url }}">Unsubscribe</a>',
    "text_body": "{{ resource.title }}: {{ resource.url }}?utm_source=mail&x=1.\nUnsubscribe: {{ unsubscribe_url }}",
}
TARGET = "https://help.example.com/reports?utm_source=mail&x=1"
CLICKED = {"metric": "count", "event": "link_clicked", "window": "7d", "op": ">=", "value": 1}


def _world(session_factory, settings) -> None:
    add_account(session_factory, "analytics-co", traits={"use_case": "analytics"})
    with transaction(session_factory) as s:
        save_resource(
            s,
            "first-reports",
            ResourceIn(kind="article", title="Your first reports", url="https://help.example.com/reports", goals=["win-back"]),
            actor="test",
            now=T0,
        )
    save_template(session_factory, settings, "resource-pick", PICK)
    steps = [
        {"id": "recommend", "type": "recommend", "channel": "email", "template": "resource-pick", "to": ["champion"]},
        {"id": "wait-1w", "type": "wait", "duration": "1w"},
    ]
    save_playbook(session_factory, "route", simple_playbook(steps=steps, exit_condition=CLICKED))


def _link_path(text: str, settings) -> str:
    [url] = set(re.findall(re.escape(settings.public_url) + r"/r/[A-Za-z0-9_-]+", text))
    return url.removeprefix(settings.public_url)


def _clicks(session_factory) -> list[RawEvent]:
    with session_factory() as s:
        return list(s.scalars(select(RawEvent).where(RawEvent.name == "link_clicked").order_by(RawEvent.timestamp)))


def _published(settings, worker) -> int:
    return sum(committed_offsets(settings, worker.group_id, settings.topic_events).values())


async def test_a_click_on_a_routed_link_is_an_event_that_converts_the_enrolment(topics, session_factory, workers, sink, api, clock):
    _world(session_factory, topics)
    w = workers()
    send_signals(topics, [signal("analytics-co")])
    drain(w["signals"], lambda: len(messages(session_factory)) == 1)
    [m] = messages(session_factory)
    assert (m.resource_id, m.state) == ("first-reports", "queued")

    # The mail carries no address of ours to leave by but the redirect and the unsubscribe link.
    w["sender"].poll_once()
    [mail] = sink.messages
    html_part = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert "help.example.com" not in html_part + text
    path = _link_path(html_part, topics)
    assert _link_path(text, topics) == path  # one link, one token, in both parts
    assert f"{topics.public_url}/unsubscribe/" in text
    assert text.count(path) == 1 and re.search(re.escape(path) + r"\.\n", text)  # the sentence's full stop is not part of it
    token = path.removeprefix("/r/")
    assert not {"analytics-co", "ada", "help.example.com", m.id} & set(re.findall(r"[\w.-]+", b64url.decode(token).decode("latin-1")))

    clock.advance(timedelta(hours=3))
    r = await api.get(path)
    assert r.status_code == 302 and r.headers["location"] == TARGET
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"

    ingest = IngestWorker(topics, session_factory, clock)
    try:
        drain(ingest, lambda: len(_clicks(session_factory)) == 1)
    finally:
        ingest.close()
    [click] = _clicks(session_factory)
    assert (click.account_id, click.user_id, click.timestamp) == ("analytics-co", "ada", clock.now())
    assert click.properties == {"message_id": m.id, "url": TARGET, "playbook_id": "route", "resource_id": "first-reports"}

    w["timers"].poll_once()  # the conversion sweep: the exit condition counts the click like any event
    with session_factory() as s:
        [e] = s.scalars(select(Enrollment)).all()
    assert e.status == "converted" and e.converted_at == clock.now()


async def test_forged_expired_and_replayed_links_change_nothing_and_never_leave_for_another_site(topics, session_factory, api, clock):
    settings = topics
    add_account(session_factory, "acme")
    link = {"m": "msg-1", "a": "acme", "u": "ada", "t": "https://help.example.com/a"}
    good = tokens.mint(settings.secret, tokens.LINK, link, now=clock.now(), valid_for=timedelta(days=180))
    evil = {**link, "t": "https://evil.example/phish", "x": 2**40}
    raw = b64url.decode(good)
    flipped = b64url.encode(raw[:20] + bytes([raw[20] ^ 1]) + raw[21:])
    # The same bytes in another text: the last character's unused bits set (base64 ignores them).
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants = [v for v in (good[:-1] + c for c in alphabet) if v != good and b64url.decode(v) == raw]
    assert variants  # this payload's token has unused bits in its last character
    forged = [
        "AAAA",
        flipped,
        good[:-4],
        *variants,
        "A" * 3000,
        seal("another-secret-" + "x" * 40, tokens.LINK, evil),  # sealed, but not with our secret
        seal(settings.secret, "unsubscribe", evil),  # ours, for another purpose
        seal(settings.secret, tokens.LINK, {**evil, "t": "javascript:alert(1)"}),  # ours, but not a web address
        "evil.example",
    ]
    for token in forged:
        r = await api.get(f"/r/{token}")
        assert r.status_code == 302 and r.headers["location"] == settings.product_url, token

    old = {**link, "t": "https://help.example.com/old"}
    expired = tokens.mint(settings.secret, tokens.LINK, old, now=clock.now() - timedelta(days=181), valid_for=timedelta(days=180))
    r = await api.get(f"/r/{expired}")
    assert r.status_code == 302 and r.headers["location"] == "https://help.example.com/old"  # where it led, recording nothing

    # Replayed: the same request, many times at once from hostile callers, is one click.
    # (More at once than the API lets in: the rest are refused as overloaded, never sent elsewhere.)
    replies = await asyncio.gather(*[api.get(f"/r/{good}") for _ in range(60)])
    assert {r.headers.get("location") for r in replies if r.status_code == 302} == {"https://help.example.com/a"}
    assert {r.status_code for r in replies} <= {302, 503} and sum(r.status_code == 302 for r in replies) >= 30
    ingest = IngestWorker(settings, session_factory, clock)
    try:
        drain(ingest, lambda: len(_clicks(session_factory)) == 1)
        assert _published(settings, ingest) == 1  # neither a forged, an expired nor a replayed link reached the broker
        # A re-click later is another click (the replay window has passed).
        clock.advance(timedelta(seconds=settings.link_click_dedupe_seconds))
        assert (await api.get(f"/r/{good}")).status_code == 302
        drain(ingest, lambda: len(_clicks(session_factory)) == 2)
    finally:
        ingest.close()
    first, second = _clicks(session_factory)
    assert first.event_id != second.event_id and second.timestamp == clock.now()
    assert {(c.account_id, c.user_id, c.properties["url"]) for c in (first, second)} == {("acme", "ada", "https://help.example.com/a")}


def _lost_clicks() -> float:
    return REGISTRY.get_sample_value("touchline_link_clicks_total", {"outcome": "unpublished"}) or 0.0


async def test_a_reader_never_waits_for_the_producer_and_a_click_it_cannot_take_is_counted_lost(topics, api, clock):
    """The redirect is answered on the event loop (services/outreach/links/router.py): a
    producer that is stuck (the broker's metadata not coming) holds no reader, and no
    other request either; the clicks it never takes are lost and counted."""
    inside, release = threading.Event(), threading.Event()

    def stuck():
        inside.set()
        release.wait(60)  # bounded: a redirect that waited on it would fail the test, not hang it
        raise KafkaTimeoutError("Failed to update metadata after 10.0 secs.")

    api.app.state.ctx.send_queue = queued = SendQueue(stuck, limit=1)
    link = {"m": "msg-1", "a": "acme", "u": "ada", "t": "https://help.example.com/a"}
    first, second, third = (tokens.mint(topics.secret, tokens.LINK, link, now=clock.now(), valid_for=timedelta(days=1)) for _ in range(3))
    lost = _lost_clicks()
    try:
        # (A bound, not a timing claim: a redirect that waited on the producer would wait here for ever.)
        r = await asyncio.wait_for(api.get(f"/r/{first}"), 30)
        assert r.status_code == 302 and r.headers["location"] == "https://help.example.com/a"
        assert inside.wait(10)  # the queue's thread is the one waiting
        assert (await asyncio.wait_for(api.get("/healthz"), 30)).status_code == 200
        r = await asyncio.wait_for(api.get(f"/r/{second}"), 30)  # queued behind it: the queue's limit
        assert r.status_code == 302 and r.headers["location"] == "https://help.example.com/a"
        assert not PUBLISHING.is_open() and _lost_clicks() == lost
        r = await asyncio.wait_for(api.get(f"/r/{third}"), 30)  # past the limit: lost at once, and clicks rest a while
        assert r.status_code == 302 and r.headers["location"] == "https://help.example.com/a"
        assert PUBLISHING.is_open() and _lost_clicks() == lost + 1
        release.set()
        queued.close(timeout=10)  # the producer gave up on the first two: each is lost, counted
        assert _lost_clicks() == lost + 3
    finally:
        release.set()
        PUBLISHING.reset()
