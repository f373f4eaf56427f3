"""A pooled CSM's day in the console (issue 23, item 3), over real HTTP through the app on
both databases, each test on an empty database of its own: signing in lands on the inbox;
the inbox's order (priority, then due time) with ARR, renewal and hours left; the contact
picker for touches (a bad pick is a readable error that keeps what was typed); emailing a
contact from a template or free text through the contact gate and the outbox to the real
SMTP sink, recorded as a touch; automation's emails readable as rendered, in a sandboxed
frame; and the census: every engagement route of the console refuses another CSM."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from html import unescape

from sqlalchemy import update

from services.ingest.models import Account
from services.outreach.models import Engagement, Message
from services.outreach.policy.tokens import email_hash
from shared.db import transaction
from tests.support.console import csrf_of, sign_in
from tests.support.engagements import add_csm, csm_key, engagement, open_engagement, timeline, worker
from tests.support.helpers import T0
from tests.support.outreach import WIN_BACK, add_account, messages, save_template

HOSTILE_HTML = '<p>Hi</p><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


async def _world(api, keys, session_factory, settings, clock, accounts: tuple[str, ...] = ("acme",)) -> tuple[dict[str, str], str]:
    """``accounts`` with an engagement each, assigned to the CSM "ann"; her key."""
    await add_csm(api, keys["ops"], "ann", capacity=10)
    out = {}
    for a in accounts:
        add_account(session_factory, a)
        out[a] = open_engagement(session_factory, settings, clock, a)
    worker(settings, session_factory, clock).poll_once()
    assert {engagement(session_factory, e).csm_id for e in out.values()} == {"ann"}
    return out, csm_key(session_factory, clock, "ann")


async def test_a_csm_signing_in_through_the_form_lands_on_the_inbox(api, keys, session_factory, settings, clock):
    _eids, key = await _world(api, keys, session_factory, settings, clock)
    # The form always posts next=/console/ (the root): for a CSM that is the inbox, not a 403.
    r = await sign_in(api, key, next_path="/console/")
    assert r.status_code == 303 and r.headers["location"] == "/console/inbox"
    root = await api.get("/console/")
    assert root.status_code == 303 and root.headers["location"] == "/console/inbox"
    assert (await api.get("/console/inbox")).status_code == 200
    api.cookies.clear()
    r = await sign_in(api, keys["ops"], next_path="/console/")
    assert r.headers["location"] == "/console/"
    assert (await api.get("/console/")).status_code == 200


async def test_the_inbox_sorts_by_priority_then_due_time_with_arr_renewal_and_hours(api, keys, session_factory, settings, clock):
    names = ("a-low-overdue", "b-mid-late", "c-mid-soon", "d-top")
    eids, key = await _world(api, keys, session_factory, settings, clock, names)
    now = clock.now()
    plan = {  # priority, due in hours, ARR, renewal
        "a-low-overdue": (10.0, -5, 1000.0, date(2026, 4, 1)),
        "b-mid-late": (50.0, 24 * 9, 25000.0, date(2026, 9, 30)),
        "c-mid-soon": (50.0, 30, 120000.0, date(2026, 3, 20)),
        "d-top": (80.0, 24 * 12, None, None),
    }
    with transaction(session_factory) as s:
        for a, (priority, hours, arr, renewal) in plan.items():
            s.execute(update(Engagement).where(Engagement.id == eids[a]).values(priority=priority, due_at=now + timedelta(hours=hours)))
            s.execute(update(Account).where(Account.id == a).values(arr=arr, renewal_date=renewal))
    await sign_in(api, key)
    html = (await api.get("/console/inbox")).text
    order = re.findall(r'<small class="muted">([a-z-]+)</small>', html)
    assert order == ["d-top", "c-mid-soon", "b-mid-late", "a-low-overdue"]  # priority first, then the sooner due
    row = {a: html[html.index(f'<small class="muted">{a}</small>') :].split("</tr>")[0] for a in names}
    assert '<td class="n arr">120,000</td>' in row["c-mid-soon"] and '<td class="date renewal">2026-03-20</td>' in row["c-mid-soon"]
    assert '<td class="n arr">—</td>' in row["d-top"] and '<td class="date renewal">—</td>' in row["d-top"]
    assert ">30 hours<" in row["c-mid-soon"]  # under two days: hours, not "1 day"
    assert ">9 days<" in row["b-mid-late"] and "overdue by 5 hours" in row["a-low-overdue"]


async def test_a_touch_names_its_contact_from_a_picker_and_a_bad_pick_keeps_what_was_typed(api, keys, session_factory, settings, clock):
    eids, key = await _world(api, keys, session_factory, settings, clock)
    eid = eids["acme"]
    await sign_in(api, key)
    page = (await api.get(f"/console/engagements/{eid}")).text
    picker = page[page.index('id="touch-contact"') :].split("</select>")[0]
    assert '<option value="ada">Ada Lovelace (champion), ada@acme.test</option>' in picker  # names, not typed ids
    assert "Contact (user id)" not in page
    r = await api.post(
        f"/console/engagements/{eid}/touch", data={"csrf": csrf_of(page), "kind": "meeting", "user_id": "Ada", "summary": "QBR booked"}
    )
    assert r.status_code == 422 and "no contact &#39;Ada&#39; in account &#39;acme&#39;" in r.text
    form = r.text[r.text.index('id="touch-form"') :].split("</form>")[0]
    assert 'name="summary" value="QBR booked"' in form and "<option selected>meeting</option>" in form  # kept as typed
    assert [t.kind for t in timeline(session_factory, eid)].count("touch") == 0
    r = await api.post(
        f"/console/engagements/{eid}/touch", data={"csrf": csrf_of(page), "kind": "meeting", "user_id": "ada", "summary": "QBR booked"}
    )
    assert r.status_code == 303
    touch = [t for t in timeline(session_factory, eid) if t.kind == "touch"]
    assert [(t.details["user_id"], t.details["summary"]) for t in touch] == [("ada", "QBR booked")]


async def test_a_csm_emails_a_contact_through_the_gate_and_the_outbox_to_the_sink(
    api, keys, session_factory, settings, clock, sink, workers
):
    eids, key = await _world(api, keys, session_factory, settings, clock)
    eid = eids["acme"]
    save_template(session_factory, settings)
    await sign_in(api, key)
    page = (await api.get(f"/console/engagements/{eid}")).text
    assert 'value="owner-brief"' not in page  # an internal template is not offered for a customer
    csrf = csrf_of(page)
    # A template that reads what this engagement lacks (a signal: it was opened by hand) is a readable refusal.
    r = await api.post(f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "ada", "template_id": "win-back"})
    assert r.status_code == 422 and "cannot be written for this contact" in r.text and "rule_name" in r.text
    assert messages(session_factory, step_id="engagement.email") == []
    save_template(session_factory, settings, "check-in", {**WIN_BACK, "html_body": "<p>Hi {{ recipient.first_name }}</p>"})
    # From a template, to Ada.
    r = await api.post(f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "ada", "template_id": "check-in"})
    assert r.status_code == 303, r.text
    sent = messages(session_factory, step_id="engagement.email")
    assert [(m.recipient, m.state, m.subject) for m in sent] == [("ada@acme.test", "queued", "Ada, Acme Inc misses you")]
    # The same contact again: the contact gate's cap (one message in three days) refuses it; nothing is stored.
    r = await api.post(
        f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "ada", "subject": "Again", "body": "Hello again"}
    )
    assert r.status_code == 409 and "The contact gate holds this email back" in r.text and "(contact_cap)." in r.text
    form = r.text[r.text.index('id="email-form"') :].split("</form>")[0]
    assert 'value="Again"' in form and ">Hello again</textarea>" in form
    # A suppressed address is refused with its reason.
    with transaction(session_factory) as s:
        from services.outreach.policy import repository as policy_repo

        policy_repo.add_suppression(s, email_hash=email_hash("cy@acme.test"), email=None, reason="unsubscribed", detail="", now=clock.now())
    r = await api.post(f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "cy", "subject": "Hi", "body": "Hello"})
    assert r.status_code == 409 and "address is suppressed" in r.text and "(suppressed)." in r.text
    # Free text to Bob; empty text is refused first.
    r = await api.post(f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "bob", "subject": "Hi", "body": " "})
    assert r.status_code == 422 and "needs a subject and a message" in r.text
    r = await api.post(
        f"/console/engagements/{eid}/email",
        data={"csrf": csrf, "user_id": "bob", "subject": "Your renewal", "body": "Shall we talk? https://cal.example/book"},
    )
    assert r.status_code == 303
    assert len(messages(session_factory, step_id="engagement.email")) == 2
    # The sender delivers both like automation's email, with the unsubscribe header.
    workers()["sender"].poll_once()
    got = {m["to"]: m for m in sink.messages if m["to"].endswith("@acme.test")}
    assert set(got) == {"ada@acme.test", "bob@acme.test"}
    bob = got["bob@acme.test"]
    text = bob.get_body(("plain",)).get_content()
    assert bob["Subject"] == "Your renewal" and "Shall we talk? http://touchline.test/r/" in text  # its link answers back
    assert "cal.example" not in text
    assert got["ada@acme.test"]["Subject"] == "Ada, Acme Inc misses you" and got["ada@acme.test"]["List-Unsubscribe"]
    assert {m.state for m in messages(session_factory, step_id="engagement.email")} == {"sent"}
    # Recorded as touches on the engagement, and they count against the account's touches.
    touches = [t.details for t in timeline(session_factory, eid) if t.kind == "touch"]
    assert [(t["touch"], t["user_id"]) for t in touches] == [("email", "ada"), ("email", "bob")]
    page = (await api.get(f"/console/engagements/{eid}")).text
    listed = page[page.index('id="touches"') :].split("</ul>")[0]
    assert "email to ada@acme.test" in listed and "Your renewal" in listed
    assert "Your renewal" not in page[page.index('id="automation-sent"') :].split("</ul>")[0]
    # A closed engagement sends nothing.
    await api.post(f"/console/engagements/{eid}/resolve", data={"csrf": csrf, "outcome": "recovered"})
    r = await api.post(f"/console/engagements/{eid}/email", data={"csrf": csrf, "user_id": "bob", "subject": "x", "body": "y"})
    assert r.status_code == 409 and len(messages(session_factory, step_id="engagement.email")) == 2


async def test_automations_email_reads_as_rendered_in_a_sandbox_never_in_the_page(api, keys, session_factory, settings, clock):
    eids, key = await _world(api, keys, session_factory, settings, clock, ("acme", "other"))
    eid = eids["acme"]
    rows = []
    for mid, account in (("m-acme", "acme"), ("m-other", "other")):
        rows.append(
            Message(
                id=mid,
                playbook_id="win-back",
                step_id="s1",
                touch_key=f"{mid}-t",
                account_id=account,
                user_id="ada",
                channel="email",
                recipient=f"ada@{account}.test",
                subject="We <b>miss</b> you",
                html_body=HOSTILE_HTML,
                text_body="Hi Ada\nCome back",
                payload={},
                state="sent",
                attempts=1,
                created_at=T0,
                updated_at=T0,
                sent_at=T0,
            )
        )
    with transaction(session_factory) as s:
        s.add_all(rows)
    await sign_in(api, key)
    page = (await api.get(f"/console/engagements/{eid}")).text
    assert f'href="/console/engagements/{eid}/messages/m-acme"' in page
    r = await api.get(f"/console/engagements/{eid}/messages/m-acme")
    assert r.status_code == 200
    assert "<script>window.__pwned" not in r.text and "<img src=x" not in r.text  # never spliced into the page
    frame = re.search(r'<iframe title="[^"]*" sandbox="" srcdoc="([^"]*)"></iframe>', r.text)
    assert frame and unescape(frame.group(1)) == HOSTILE_HTML  # the whole email, escaped into the sandbox
    assert "We &lt;b&gt;miss&lt;/b&gt; you" in r.text and "Hi Ada\nCome back" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self' 'unsafe-inline'" in csp
    # Another account's message is not this engagement's to show.
    assert (await api.get(f"/console/engagements/{eid}/messages/m-other")).status_code == 404
    assert (await api.get(f"/console/engagements/{eid}/messages/nope")).status_code == 404


async def test_the_api_emails_a_contact_the_same_way(api, keys, session_factory, settings, clock):
    """POST /v1/engagements/{id}/emails: the console's path, for API clients (one function)."""
    eids, key = await _world(api, keys, session_factory, settings, clock)
    eid, mine = eids["acme"], {"Authorization": f"Bearer {key}"}
    url = f"/v1/engagements/{eid}/emails"
    r = await api.post(url, json={"user_id": "ada", "subject": "Your renewal", "text": "Shall we talk?"}, headers=mine)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "queued" and datetime.fromisoformat(body["next_attempt_at"].replace("Z", "+00:00")) == clock.now()
    (m,) = messages(session_factory, step_id="engagement.email")
    assert (m.id, m.recipient, m.subject, m.state) == (body["message_id"], "ada@acme.test", "Your renewal", "queued")
    r = await api.post(url, json={"user_id": "ada", "subject": "Again", "text": "Hello"}, headers=mine)
    assert r.status_code == 409 and r.json()["error"] == "contact_policy" and r.json()["detail"]["reason"] == "contact_cap"
    r = await api.post(url, json={"user_id": "nobody", "subject": "Hi", "text": "Hello"}, headers=mine)
    assert r.status_code == 422 and r.json()["error"] == "unknown_contact"
    r = await api.post(url, json={"user_id": "bob", "subject": "Hi", "text": "Hello", "bcc": "x@evil.test"}, headers=mine)
    assert r.status_code == 422  # no field beyond the documented ones
    assert len(messages(session_factory, step_id="engagement.email")) == 1
    assert [t.details["touch"] for t in timeline(session_factory, eid) if t.kind == "touch"] == ["email"]


# Every console route under an engagement, with the form it takes: a new one must be added
# here (the census below compares this list with the app's routes).
CONSOLE_ENGAGEMENT_ROUTES = [
    ("get", "/console/engagements/{id}", None),
    ("get", "/console/engagements/{id}/messages/{message_id}", None),
    ("post", "/console/engagements/{id}/accept", {}),
    ("post", "/console/engagements/{id}/touch", {"kind": "call", "summary": "x"}),
    ("post", "/console/engagements/{id}/email", {"user_id": "bob", "subject": "x", "body": "y"}),
    ("post", "/console/engagements/{id}/note", {"text": "x"}),
    ("post", "/console/engagements/{id}/extend", {"days": "1"}),
    ("post", "/console/engagements/{id}/resolve", {"outcome": "other"}),
    ("post", "/console/engagements/{id}/reassign", {"csm_id": ""}),
    ("post", "/console/engagements/{id}/cancel", {"reason": "x"}),
]


async def test_census_every_console_engagement_route_refuses_another_csm(api, keys, session_factory, settings, clock):
    eids, _key = await _world(api, keys, session_factory, settings, clock)
    eid = eids["acme"]
    await add_csm(api, keys["ops"], "ben", capacity=10)
    with transaction(session_factory) as s:
        s.add(
            Message(
                id="m-acme", playbook_id="p", step_id="s", touch_key="t", account_id="acme", user_id="ada", channel="email",
                recipient="ada@acme.test", subject="s", html_body="<p>x</p>", text_body="x", payload={}, state="sent", attempts=1,
                created_at=T0, updated_at=T0, sent_at=T0,
            )
        )  # fmt: skip
    from services.console.router import build_router
    from services.console.views.engagements import ACTIONS

    app_routes = {  # every console module's routes: a new one cannot hide
        (m.lower(), "/console" + route.path.replace("{engagement_id}", "{id}"))
        for included in build_router().routes
        for route in getattr(included, "original_router", included).routes
        if getattr(route, "path", "").startswith("/engagements/")
        for m in getattr(route, "methods", ())
    }
    assert len(app_routes) >= 3
    documented = {(m, p if m == "get" else "/console/engagements/{id}/{action}") for m, p, _b in CONSOLE_ENGAGEMENT_ROUTES}
    assert app_routes == documented  # a new route must be added to CONSOLE_ENGAGEMENT_ROUTES
    assert {p.rsplit("/", 1)[1] for m, p, _b in CONSOLE_ENGAGEMENT_ROUTES if m == "post"} == set(ACTIONS)  # and a new action
    before = (len(timeline(session_factory, eid)), len(messages(session_factory, account_id="acme")))
    for who in (csm_key(session_factory, clock, "ben"), keys["csm"]):  # another CSM; a CSM key bound to nobody's engagement
        api.cookies.clear()
        await sign_in(api, who)
        csrf = csrf_of((await api.get("/console/inbox")).text)
        for method, path, body in CONSOLE_ENGAGEMENT_ROUTES:
            url = path.format(id=eid, message_id="m-acme")
            r = await (api.get(url) if method == "get" else api.post(url, data={"csrf": csrf, **body}))
            assert r.status_code == 403, (who, method, path, r.status_code)
            assert "m-acme" not in r.text and "ada@acme.test" not in r.text
    assert (len(timeline(session_factory, eid)), len(messages(session_factory, account_id="acme"))) == before
    e = engagement(session_factory, eid)
    assert e.status == "assigned" and e.csm_id == "ann"


async def test_the_inbox_shows_every_open_engagement_and_the_newest_closed_whatever_came_after(api, keys, session_factory, settings, clock):
    """The inbox asks for the open ones and the closed ones each in SQL: 25 newer closed
    engagements do not push an older open one off, and a newer open one does not take a
    place of the 20 newest closed (planted: the old filter of the 20 newest of any status
    showed 19)."""
    eids, key = await _world(api, keys, session_factory, settings, clock, ("old-open",))
    from services.outreach.engagements import service

    closed = []
    for i in range(25):
        clock.advance(timedelta(minutes=1))
        add_account(session_factory, f"gone-{i:02d}")
        eid = open_engagement(session_factory, settings, clock, f"gone-{i:02d}")
        worker(settings, session_factory, clock).poll_once()
        with transaction(session_factory) as s:
            e = s.get(Engagement, eid)
            assert e.csm_id == "ann"
            service.cancel(s, e, reason="test", actor="test", now=clock.now(), settings=settings)
        closed.append(eid)
    clock.advance(timedelta(minutes=1))
    add_account(session_factory, "new-open")
    newest = open_engagement(session_factory, settings, clock, "new-open")  # the newest of all: one of the 20 newest
    worker(settings, session_factory, clock).poll_once()
    await sign_in(api, key)
    html = (await api.get("/console/inbox")).text
    assert f'href="/console/engagements/{eids["old-open"]}"' in html and f'href="/console/engagements/{newest}"' in html
    recent = html[html.index("Recently closed") :]
    assert [e for e in closed if f"/console/engagements/{e}" in recent] == closed[-20:]


async def test_the_inbox_lists_the_reminders_that_have_come_due(api, keys, session_factory, settings, clock):
    """Issue 23 item 3: the engagement timers' reminders (TOUCHLINE_ENGAGEMENT_REMINDER_DAYS,
    7 and 1 days before the due time) show in the inbox once their time has come on the
    simulated clock, before the worker sent them and after; a closed engagement leaves."""
    eids, key = await _world(api, keys, session_factory, settings, clock, ("soon", "later"))
    now = clock.now()
    with transaction(session_factory) as s:  # due in 3 days (its 1-day reminder is 2 days away) and in 30 days
        for a, days in (("soon", 3), ("later", 30)):
            s.execute(update(Engagement).where(Engagement.id == eids[a]).values(due_at=now + timedelta(days=days), reminders_sent=[]))
            s.execute(
                update(Engagement)
                .where(Engagement.id == eids[a])
                .values(next_reminder_at=now + timedelta(days=days - (1 if days < 7 else 7)))
            )
    await sign_in(api, key)

    def reminded(html: str) -> list[str]:
        section = html.split('id="reminders"', 1)[1].split("</section>", 1)[0]
        return re.findall(r'data-reminder="([^"]+)"', section)

    r = await api.get("/console/inbox")
    assert r.status_code == 200, r.text[-3000:]
    html = r.text
    assert reminded(html) == [] and "reminded 7 days and 1 day before" in html
    clock.advance(timedelta(days=2, minutes=1))  # the 1-day reminder of "soon" has come; the worker has not run
    api.cookies.clear()
    await sign_in(api, key)  # the session ended with the days that passed
    html = (await api.get("/console/inbox")).text
    assert reminded(html) == [eids["soon"]]
    assert "23 hours left" in html.split(f'data-reminder="{eids["soon"]}"', 1)[1].split("</li>", 1)[0]
    worker(settings, session_factory, clock).poll_once()  # sends it: still listed, now from reminders_sent
    assert 1.0 in engagement(session_factory, eids["soon"]).reminders_sent
    assert reminded((await api.get("/console/inbox")).text) == [eids["soon"]]
    clock.advance(timedelta(days=21))  # "later"'s 7-day reminder too; "soon" is overdue (still open until it expires)
    worker(settings, session_factory, clock).poll_once()
    api.cookies.clear()
    await sign_in(api, key)
    listed = reminded((await api.get("/console/inbox")).text)
    assert eids["later"] in listed and listed == [
        e for e in (eids["soon"], eids["later"]) if engagement(session_factory, e).status in ("assigned", "active")
    ]
