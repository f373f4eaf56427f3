"""Erasing a contact leaves no trace of their email address or name in any table, on
both databases: users, raw events (identify traits and event properties), the account
row, signal evidence, the outbox, messages, enrolments, engagements and suppressions. Another
contact of the same account keeps their data."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import inspect, select, text, update

from services.ingest import interface
from services.ingest.models import User
from services.outreach.models import Enrollment, Message, Suppression
from services.outreach.playbooks import engine as playbook_engine
from services.outreach.policy.tokens import email_hash
from services.rules.evaluation.engine import EventSubject
from services.rules.evaluation.service import RuleIndex, evaluate_events
from shared.db import transaction
from tests.support.helpers import T0, auth, track
from tests.support.outreach import save_playbook, save_template
from tests.support.rules import group, identify, ingest, make_rule

EMAIL, NAME = "ada.erasable@acme.test", "Ada Erasable-Lovelace"
BOB = "bob.keeps@acme.test"


# Columns of random characters by construction (a key's public prefix, hex digests):
# a three-letter needle such as "ada" turns up in them by chance (about one run in seventy
# for a 64-character hex digest), and no contact's data is ever written there.
RANDOM_COLUMNS = {("api_keys", "prefix"), ("api_keys", "key_hash"), ("console_sessions", "id_hash")}


def traces(db, needles: list[str]) -> dict[str, set[str]]:
    """table -> columns whose stored value contains a needle (case-insensitive), over every
    column of every table the migrations built (JSON and bytes read as text), but the
    random ones above."""
    found: dict[str, set[str]] = {}
    low = [n.lower() for n in needles]
    with db.connect() as conn:
        for table in inspect(conn).get_table_names():
            if table == "alembic_version":
                continue
            for row in conn.execute(text(f'SELECT * FROM "{table}"')).mappings():
                for col, value in row.items():
                    if value is None or (table, col) in RANDOM_COLUMNS:
                        continue
                    if isinstance(value, memoryview):  # bytea on PostgreSQL
                        value = value.tobytes()
                    as_text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    if any(n in as_text.lower() for n in low):
                        found.setdefault(table, set()).add(col)
    return found


async def test_erasure_leaves_no_trace_in_any_table(settings, engine, session_factory, api, keys):
    now = T0
    # Ingest: traits by identify and group, and a track event that carries the address.
    ingest(
        session_factory,
        [
            group("acme", now - timedelta(days=30), name="Acme", owner_email=EMAIL),
            identify("acme", "ada", now - timedelta(days=30), email=EMAIL, name=NAME, role="champion"),
            identify("acme", "bob", now - timedelta(days=30), email=BOB, name="Bob Keeps", role="admin"),
            track("acme", "report_shared", now - timedelta(minutes=1), "ada", "share-1", shared_by=EMAIL),
        ],
        now,
    )
    # Rules: a rule whose evidence records the contact's address (signal row and outbox).
    make_rule(
        session_factory,
        {
            "id": "sharer",
            "name": "Champion shares a report",
            "kind": "expansion",
            "trigger": {"events": ["report_shared"]},
            "condition": {"all": [{"field": "user.email", "op": "exists"}, {"field": "event.properties.shared_by", "op": "exists"}]},
        },
        now,
    )
    index = RuleIndex(400)
    with transaction(session_factory) as s:
        index.refresh(s)
        report = evaluate_events(
            s, [EventSubject("share-1", "acme", "ada", "report_shared", now, {"shared_by": EMAIL})], index, now, settings
        )
    [signal] = report.signals
    # Outreach: an enrolment (a copy of the signal) and messages rendered with the name.
    save_template(session_factory, settings)
    save_playbook(
        session_factory,
        "thanks",
        {
            "name": "Thanks",
            "trigger": {"rules": ["sharer"]},
            "steps": [
                {"id": "email", "type": "send", "channel": "email", "template": "win-back", "to": ["champion", "admin"]},
                {"id": "brief", "type": "send", "channel": "email", "template": "owner-brief", "to": ["owner"]},
                {"id": "hook", "type": "send", "channel": "webhook", "url": "https://cs.example.test/hook"},
                {"id": "escalate", "type": "open_engagement", "goal": "recover_usage"},
            ],
        },
    )
    with transaction(session_factory) as s:
        compiled = playbook_engine.load_compiled(s, "thanks", 1)
        assert playbook_engine.enroll(s, compiled, signal, interface.account(s, "acme"), now, settings) is not None
    # The escalation waits until the enrolment's messages have left: they go, and it opens.
    later = now + timedelta(minutes=2)
    with transaction(session_factory) as s:
        s.execute(update(Message).values(state="sent", sent_at=now, next_attempt_at=None))
        [enrollment] = s.scalars(select(Enrollment))
        playbook_engine.advance(s, enrollment, compiled, later, settings)
    # A suppression that keeps the plain address (a manual one).
    ops = auth(keys["ops"])
    assert (await api.post("/v1/suppressions", json={"email": EMAIL.upper()}, headers=ops)).status_code == 201
    # A contract outcome whose free-text note names the contact (a CRM's "why").
    r = await api.post(
        "/v1/accounts/acme/contract-outcomes",
        json={"kind": "renewed", "arr_before": 1000, "arr_after": 1200, "effective_date": "2026-01-31", "note": f"renewed with {NAME}"},
        headers=ops,
    )
    assert r.status_code == 201, r.text

    before = traces(engine, [EMAIL, NAME])
    # The scan sees every copy (it can fail): ingest, rules and outreach tables alike.
    assert {
        "users",
        "events",
        "accounts",
        "signals",
        "outbox",
        "messages",
        "enrollments",
        "suppressions",
        "engagements",
        "contract_outcomes",
    } <= set(before)

    r = await api.post("/v1/accounts/acme/users/ada/erase", headers=ops)
    assert r.status_code == 200, r.text
    assert r.json()["suppressed"] is True and r.json()["messages_scrubbed"] >= 2

    assert traces(engine, [EMAIL, NAME]) == {}
    # Bob is untouched, and the address stays refused (by hash only).
    with session_factory() as s:
        bob = s.get(User, ("acme", "bob"))
        assert (bob.email, bob.name) == (BOB, "Bob Keeps")
        sup = s.get(Suppression, email_hash(EMAIL))
        assert sup is not None and sup.email is None
        assert s.scalar(select(Enrollment.status).where(Enrollment.account_id == "acme")) is not None
    assert traces(engine, [BOB]).keys() >= {"users", "events", "messages"}


async def test_a_three_letter_name_is_erased_and_a_two_letter_one_is_not_searched_for(engine, session_factory, api, keys):
    """Issue 25, gap 8: names of MIN_NEEDLE (3) characters are searched for and scrubbed
    wherever they were copied; shorter ones are not (a two-letter name would wipe
    unrelated values), though the contact's own row is cleared either way."""
    now = T0
    ingest(
        session_factory,
        [
            group("acme", now - timedelta(days=30), name="Acme", champion="Ada", motto="Join us"),
            identify("acme", "u1", now - timedelta(days=30), email="a1@acme.test", name="Ada", role="champion"),
            identify("acme", "u2", now - timedelta(days=30), email="j2@acme.test", name="Jo", role="admin"),
            track("acme", "report_shared", now - timedelta(minutes=1), "u1", "share-1", greeting="Hi Ada"),
        ],
        now,
    )
    assert set(traces(engine, ["Ada"])) == {"users", "events", "accounts"}
    ops = auth(keys["ops"])
    assert (await api.post("/v1/accounts/acme/users/u1/erase", headers=ops)).status_code == 200
    assert traces(engine, ["Ada"]) == {}
    assert (await api.post("/v1/accounts/acme/users/u2/erase", headers=ops)).status_code == 200
    with session_factory() as s:
        jo = s.get(User, ("acme", "u2"))
        assert (jo.email, jo.name) == (None, None)
    assert set(traces(engine, ["Join us"])) == {"events", "accounts"}  # "Jo" is too short to search for
