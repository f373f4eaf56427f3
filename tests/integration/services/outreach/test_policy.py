"""The contact policy's frequency caps just inside and just outside their window, global
and per playbook, on both databases (quiet hours: tests/unit/services/outreach/test_policy.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.outreach.models import Message
from services.outreach.policy.service import Cap, Caps, TouchCounts, check_account, check_contact
from shared.db import transaction
from tests.support.helpers import T0

# ---- frequency caps: 1 message per contact in 3 days (the default) ---------------------


def _sent(
    session_factory,
    *,
    ago: timedelta,
    playbook_id: str = "pb-a",
    user_id: str | None = "ada",
    state: str = "sent",
    channel: str = "email",
    account_id: str = "acme",
) -> None:
    at = T0 - ago
    with transaction(session_factory) as s:
        s.add(
            Message(
                id=str(uuid.uuid4()),
                playbook_id=playbook_id,
                step_id="s1",
                touch_key=str(uuid.uuid4()),
                account_id=account_id,
                user_id=user_id,
                channel=channel,
                recipient=f"{user_id}@{account_id}.test",
                state=state,
                created_at=at,
                updated_at=at,
            )
        )


def test_contact_counts_are_per_account_and_contact_in_every_chunk(session_factory):
    """The cap's counts, read for a whole batch: one count per (account, contact), never
    merged across accounts that share a user id or across an account's contacts, and
    none for a message without a contact; accounts past the first chunks are counted too."""
    from services.outreach.policy import repository as repo

    for account_id, user_id, n in [("acme", "u1", 2), ("acme", "u2", 1), ("globex", "u1", 3), ("acme", None, 1)]:
        for _ in range(n):
            _sent(session_factory, ago=timedelta(hours=1), account_id=account_id, user_id=user_id)
    last = f"zz-{2 * repo._CHUNK:05d}"  # sorts after the others: in the third chunk of ids
    _sent(session_factory, ago=timedelta(hours=1), account_id=last, user_id="u9")
    ids = ["acme", "globex", *(f"zz-{i:05d}" for i in range(2 * repo._CHUNK + 1))]
    with session_factory() as s:
        counts = repo.contact_messages(s, ids, T0 - timedelta(days=1))
    assert counts == {("acme", "u1"): 2, ("acme", "u2"): 1, ("globex", "u1"): 3, (last, "u9"): 1}


def _contact(session_factory, settings, playbook_id="pb-a", caps=Caps(), user_id="ada"):
    with session_factory() as s:
        return check_contact(
            TouchCounts(s, ["acme"], T0),
            account_id="acme",
            user_id=user_id,
            playbook_id=playbook_id,
            playbook_caps=caps,
            settings=settings,
            now=T0,
        )


def _account(session_factory, settings, playbook_id="pb-a", caps=Caps()):
    with session_factory() as s:
        return check_account(
            TouchCounts(s, ["acme"], T0), account_id="acme", playbook_id=playbook_id, playbook_caps=caps, settings=settings, now=T0
        )


# A message exactly at the window's start still counts: the window is [now - days, now].
@pytest.mark.parametrize("days_ago, reason", [(2.9, "contact_cap"), (3, "contact_cap"), (3.1, None)])
def test_global_contact_cap_window(session_factory, settings, days_ago, reason):
    settings = settings.model_copy(update={"contact_cap_messages": 1, "contact_cap_days": 3})
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="another-playbook")
    assert _contact(session_factory, settings) == reason
    assert _contact(session_factory, settings, user_id="bob") is None  # per contact, not per account


@pytest.mark.parametrize("days_ago, reason", [(2.9, "playbook_contact_cap"), (3, "playbook_contact_cap"), (3.1, None)])
def test_per_playbook_contact_cap_window(session_factory, settings, days_ago, reason):
    settings = settings.model_copy(update={"contact_cap_messages": 0})  # the playbook's own cap alone
    caps = Caps(contact=Cap(limit=1, days=3))
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="pb-a")
    assert _contact(session_factory, settings, "pb-a", caps) == reason
    assert _contact(session_factory, settings, "pb-b", caps) is None  # another playbook's messages do not count


def test_contact_cap_counts_only_messages_that_went_or_will_go(session_factory, settings):
    settings = settings.model_copy(update={"contact_cap_messages": 2, "contact_cap_days": 3})
    for state in ("skipped", "failed"):
        _sent(session_factory, ago=timedelta(days=1), state=state)
    _sent(session_factory, ago=timedelta(days=1), channel="webhook")  # to the CS team, not the contact
    _sent(session_factory, ago=timedelta(days=1), state="queued")
    assert _contact(session_factory, settings) is None  # one counted message of two allowed
    _sent(session_factory, ago=timedelta(days=1), channel="inapp")
    assert _contact(session_factory, settings) == "contact_cap"


@pytest.mark.parametrize("days_ago, global_reason, playbook_reason", [(6.9, "account_cap", "playbook_account_cap"), (7.1, None, None)])
def test_account_caps_window_global_and_per_playbook(session_factory, settings, days_ago, global_reason, playbook_reason):
    only_global = settings.model_copy(update={"account_cap_touches": 1, "account_cap_days": 7})
    _sent(session_factory, ago=timedelta(days=days_ago), playbook_id="pb-a")
    assert _account(session_factory, only_global, "pb-b") == global_reason
    only_playbook = settings.model_copy(update={"account_cap_touches": 0})
    caps = Caps(account=Cap(limit=1, days=7))
    assert _account(session_factory, only_playbook, "pb-a", caps) == playbook_reason
    assert _account(session_factory, only_playbook, "pb-b", caps) is None
