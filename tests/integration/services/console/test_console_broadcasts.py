"""Broadcasts in the console (issue 22, item 6; both databases, the simulated clock):
CS Ops preview a broadcast (audience, holdout, the gate's skips) before sending it,
a bad field is a 422 beside it, the previewed broadcast is created with the previewed
id, its page's figures are the counts of the message lists they link to, a scheduled
one is cancelled from its page; CSRF is required and CSMs cannot see it."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import delete

from services.ingest.models import Account, User
from services.outreach.broadcasts.service import send_due
from services.outreach.models import Broadcast, Suppression
from services.outreach.policy.tokens import email_hash
from services.rules.models import SegmentMember
from services.rules.segments import service as segments
from shared import audit
from shared.db import transaction
from tests.support.console import csrf_of, sign_in
from tests.support.outreach import add_account, messages, save_template

WEBINAR = {
    "name": "Webinar invitation",
    "subject": "{{ recipient.first_name }}, join our webinar",
    "text_body": "Save your seat: https://events.example.com/webinar\nUnsubscribe: {{ unsubscribe_url }}",
}
# The console tests share one seeded world: this test's accounts, segment and template
# have names of their own, and an industry no other account has.
P = f"bc{uuid.uuid4().hex[:6]}"
SEGMENT = {"id": P, "name": "Webinar audience", "condition": {"field": "account.traits.industry", "op": "==", "value": P}}


@pytest.fixture(autouse=True)
def _leave_the_world_as_found(session_factory):
    """Its accounts leave the shared world after each test: other console tests count the
    world's accounts (the health list scores every one of them)."""
    yield
    with transaction(session_factory) as s:
        s.execute(delete(SegmentMember).where(SegmentMember.account_id.startswith(P)))
        s.execute(delete(User).where(User.account_id.startswith(P)))
        s.execute(delete(Account).where(Account.id.startswith(P)))


def _world(session_factory, settings, clock) -> None:
    for a in ("1", "2", "3"):
        add_account(session_factory, f"{P}-{a}", traits={"industry": P})
    add_account(session_factory, f"{P}-shop", traits={"industry": "retail"})
    with transaction(session_factory) as s:
        segments.create(s, segments.parse(SEGMENT, 400), "ops:test", clock.now())
        s.add(Suppression(email_hash=email_hash(f"bob@{P}-2.test"), reason="unsubscribed", created_at=clock.now()))
        s.flush()
        # Its members as the refresh would write them (running the refresh here would refresh
        # every segment of the shared world and signal what it changed).
        s.add_all(SegmentMember(segment_id=P, account_id=f"{P}-{a}", entered_at=clock.now(), version=1) for a in ("1", "2", "3"))
    save_template(session_factory, settings, P, WEBINAR)


async def test_ops_preview_then_send_a_broadcast_and_read_its_report(api, keys, session_factory, settings, clock):
    _world(session_factory, settings, clock)
    await sign_in(api, keys["ops"])
    page = await api.get("/console/broadcasts")
    assert page.status_code == 200 and 'href="/console/broadcasts"' in page.text and "No broadcast yet" in page.text
    csrf = csrf_of(page.text)
    form = {"csrf": csrf, "name": "Webinar", "template": P, "segment_id": "", "channel": "email", "to": "champion, admin",
            "send_at": "", "holdout_percent": "0", "action": "preview"}  # fmt: skip

    # A problem is shown beside its field, the values kept; nothing is stored.
    r = await api.post("/console/broadcasts", data=form)
    assert r.status_code == 422 and 'id="e-segment_id"' in r.text and "at least 1 character" in r.text
    assert 'aria-invalid="true" aria-describedby="e-segment_id"' in r.text and 'value="champion, admin"' in r.text
    r = await api.post("/console/broadcasts", data={**form, "segment_id": P, "to": "owner", "holdout_percent": "150"})
    assert r.status_code == 422 and 'id="e-to"' in r.text and 'id="e-holdout_percent"' in r.text

    # The preview: three member accounts, two contacts each (champion, admin), one admin unsubscribed.
    r = await api.post("/console/broadcasts", data={**form, "segment_id": P})
    assert r.status_code == 200, r.text
    assert re.search(r'id="p-accounts">3<', r.text) and re.search(r'id="p-contacts">6<', r.text)
    assert re.search(r'id="p-send">5<', r.text) and "<td>suppressed</td><td>1</td>" in r.text
    preview_id = re.search(r'name="preview_id" value="([0-9a-f-]+)"', r.text).group(1)
    assert 'id="send-button"' in r.text and not messages(session_factory, broadcast_id=preview_id)
    with session_factory() as s:
        assert s.get(Broadcast, preview_id) is None

    # Send: created with the previewed id, audited, sent by the timer worker's tick.
    r = await api.post("/console/broadcasts", data={**form, "segment_id": P, "action": "create", "preview_id": preview_id})
    assert r.status_code == 303 and r.headers["location"] == f"/console/broadcasts/{preview_id}?created=1"
    send_due(session_factory, settings, clock.now())  # what the timer worker's tick does (test_broadcasts.py runs the worker)
    page = await api.get(f"/console/broadcasts/{preview_id}")
    assert page.status_code == 200 and 'id="status">sent<' in page.text
    # Sent, its 5 emails still in the outbox: it can still be stopped, the button says how many it withdraws.
    assert re.search(r'id="cancel">Stop it: send no more and withdraw the 5 messages still queued<', page.text)
    figures = re.findall(r'data-count="(\d+)" href="([^"]+)"', page.text)
    assert ("5", f"/console/messages?broadcast_id={preview_id}&state=queued") in [(n, unescape(h)) for n, h in figures]
    for n, href in figures:
        target = await api.get(unescape(href))
        shown = re.search(r'id="count">([\d,]+)[< ]', target.text)
        assert shown and int(shown.group(1).replace(",", "")) == int(n), (href, n)
    assert len(messages(session_factory, broadcast_id=preview_id)) == 6
    listed = await api.get("/console/broadcasts")
    assert f'data-broadcast="{preview_id}"' in listed.text

    # A scheduled one is cancelled from its page (with CSRF) and sends nothing.
    later = (clock.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    r = await api.post("/console/broadcasts", data={**form, "segment_id": P, "send_at": later})
    scheduled_id = re.search(r'name="preview_id" value="([0-9a-f-]+)"', r.text).group(1)
    assert 'id="send-button">Schedule<' in r.text
    r = await api.post(
        "/console/broadcasts", data={**form, "segment_id": P, "send_at": later, "action": "create", "preview_id": scheduled_id}
    )
    assert r.status_code == 303
    page = await api.get(f"/console/broadcasts/{scheduled_id}")
    assert 'id="cancel"' in page.text and 'id="status">scheduled<' in page.text
    assert (await api.post(f"/console/broadcasts/{scheduled_id}/cancel", data={})).status_code == 403  # no CSRF
    r = await api.post(f"/console/broadcasts/{scheduled_id}/cancel", data={"csrf": csrf})
    assert r.status_code == 303
    assert 'id="status">cancelled<' in (await api.get(f"/console/broadcasts/{scheduled_id}")).text
    clock.advance(timedelta(days=2))
    send_due(session_factory, settings, clock.now())
    assert not messages(session_factory, broadcast_id=scheduled_id)
    with session_factory() as s:
        assert s.get(Broadcast, scheduled_id).status == "cancelled"
        assert [a.action for a in audit.history(s, "broadcast", scheduled_id)] == ["create", "cancel"]

    # CSMs have no broadcasts.
    api.cookies.clear()
    await sign_in(api, keys["csm"])
    assert (await api.get("/console/broadcasts")).status_code == 403
