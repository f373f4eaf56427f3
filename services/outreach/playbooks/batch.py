"""What the steps of a batch of enrolments read and write, set-based.

The signal consumer enrols a whole Kafka batch at once, and the first steps of every
new enrolment run inside it (docs/playbooks.md, "A batch of signals, set-based").
Asked one account at a time, a send step's reads (contacts, open engagements,
frequency-cap counts, suppressions, exit and branch conditions, the template) cost a
dozen statements per signal. A :class:`Batch` answers each kind of read for *every*
account of the batch with one statement, the first time any enrolment asks, and keeps
the answer; it holds the new enrolments (in their state after their first steps) and
the message rows the steps write until :meth:`Batch.flush` inserts them, one statement
each. The frequency caps count the held rows too
(:class:`~services.outreach.policy.service.TouchCounts`), so a later enrolment of the
same account in the batch is capped exactly as if each row had been inserted at once.

What is kept stays true for the whole batch: the consumer writes no contacts, usage,
engagements or suppressions. A step type that reads or writes through the session
itself (``open_engagement``, or a custom one) is registered without ``batched``: the
engine flushes the held rows before it runs, so it sees them, and drops everything
kept after it, so nothing it changed is missed.

The timer worker advances one enrolment at a time, and gives each a batch of one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from services.ingest import interface as ingest
from services.ingest.interface import AccountInfo, Contact
from services.outreach.content import repository as content_repo
from services.outreach.content import routing
from services.outreach.delivery import repository as delivery_repo
from services.outreach.engagements import repository as engagement_repo
from services.outreach.models import Enrollment, Template
from services.outreach.playbooks import repository as playbook_repo
from services.outreach.playbooks.conditions import parse_exit_condition
from services.outreach.policy import repository as policy_repo
from services.outreach.policy.service import TouchCounts
from services.outreach.policy.tokens import email_hash
from services.outreach.surveys import repository as survey_repo
from services.outreach.templates import repository as template_repo
from services.rules.interface import Condition, evaluator
from shared.metrics import MESSAGES_ENQUEUED

_ENROLLMENT_COLUMNS = tuple(c.key for c in Enrollment.__table__.columns)


class Batch:
    """The reads and writes of the steps of the enrolments of ``accounts`` at ``now``.
    Every enrolment advanced through it must belong to one of ``accounts``."""

    def __init__(self, session: Session, settings: Any, now: datetime, accounts: Mapping[str, AccountInfo | None]):
        self.session, self.settings, self.now = session, settings, now
        self.accounts = dict(accounts)
        self._held: list[dict[str, Any]] = []
        self._held_resources: dict[tuple[str, str], set[str]] = {}  # (account, recipient) -> what held rows send
        self._pending: list[Enrollment] = []  # new enrolments after their first steps, not inserted yet
        self._new: set[str] = set()  # enrolments this batch inserted: not tracked by the session
        self._changed: dict[str, Enrollment] = {}  # of those, the ones whose run state is not stored yet
        self._parsed: dict[str, Condition] = {}  # condition JSON -> parsed: pure, kept across forget()
        self.forget()

    @classmethod
    def of(cls, session: Session, settings: Any, now: datetime, account_ids: Iterable[str]) -> Batch:
        ids = set(account_ids)
        found = ingest.accounts(session, ids)
        return cls(session, settings, now, {a: found.get(a) for a in ids})

    def forget(self) -> None:
        """Drop every kept answer; the next read of each kind queries again."""
        self.counts = TouchCounts(self.session, self.accounts, self.now)
        self._contacts: dict[tuple[str, ...] | None, dict[str, list[Contact]]] = {}
        self._active: dict[tuple[date, date], dict[str, list[Contact]]] = {}
        self._open: set[str] | None = None
        self._checked: set[str] = set()
        self._suppressed: set[str] = set()
        self._templates: dict[str, Template | None] = {}
        self._sent: dict[str, list[dict[str, Any]]] | None = None
        self._evaluate: Callable[[Condition, str], tuple[bool, dict[str, Any]]] | None = None
        self._library: list[routing.Entry] | None = None
        self._received: dict[str, dict[str, set[str]]] | None = None
        self._seen: dict[str, set[str]] | None = None
        self._answered: dict[str, set[tuple[str, str]]] = {}  # survey id -> (account, contact) who answered it

    # ---- reads ------------------------------------------------------------------

    def contacts(self, account_id: str, roles: Iterable[str] | None) -> list[Contact]:
        """The account's contacts with one of ``roles`` (all when None), by id."""
        key = None if roles is None else tuple(sorted(set(roles)))
        if key not in self._contacts:
            self._contacts[key] = ingest.users_by_role_of(self.session, self.accounts, key)
        return self._contacts[key].get(account_id, [])

    def active_users(self, account_id: str, since: date, until: date) -> list[Contact]:
        """The account's contacts active on any UTC day in [since, until], by id."""
        if (since, until) not in self._active:
            self._active[(since, until)] = ingest.active_users_of(self.session, self.accounts, since, until)
        return self._active[(since, until)].get(account_id, [])

    def has_open_engagement(self, account_id: str) -> bool:
        if self._open is None:
            self._open = engagement_repo.accounts_with_open(self.session, self.accounts)
        return account_id in self._open

    def suppressed(self, hashes: Iterable[str]) -> set[str]:
        """The suppressed ones among ``hashes``. The first miss looks up every address the
        batch knows of (its contacts read so far and its accounts' owners) in one statement."""
        wanted = set(hashes)
        if wanted - self._checked:
            known = wanted | {
                email_hash(c.email)
                for by_account in (*self._contacts.values(), *self._active.values())
                for contacts in by_account.values()
                for c in contacts
                if c.email
            }
            known |= {email_hash(a.owner_email) for a in self.accounts.values() if a is not None and a.owner_email}
            known -= self._checked
            self._suppressed |= policy_repo.suppressed(self.session, known)
            self._checked |= known
        return wanted & self._suppressed

    def sent(self, enrollment_id: str) -> list[dict[str, Any]]:
        """What automation sent (or queued) for an enrolment, oldest first, including the
        rows this batch holds: an internal brief's "what was already tried". The first
        call reads every enrolment message of the batch's accounts in one statement."""
        if self._sent is None:
            self._sent = playbook_repo.enrollment_messages_of(self.session, self.accounts)
        stored = self._sent.get(enrollment_id, [])
        held = [
            {"at": r["created_at"], "channel": r["channel"], "to": r["recipient"], "subject": r["subject"], "state": r["state"]}
            for r in self._held
            if r.get("enrollment_id") == enrollment_id and r["state"] in ("queued", "sending", "sent")
        ]
        return [*stored, *held]

    def resources(self) -> list[routing.Entry]:
        """The enabled resources of the content library, by id, ready for scoring (one
        statement per batch)."""
        if self._library is None:
            self._library = routing.library(content_repo.enabled_resources(self.session))
        return self._library

    def received(self, account_id: str, recipient: str) -> set[str]:
        """The resources already queued or sent to a recipient (user id, else address),
        including the rows this batch holds. The first call reads every resource message
        of the batch's accounts in one statement."""
        if self._received is None:
            self._received = content_repo.received_of(self.session, self.accounts)
        stored = self._received.get(account_id, {}).get(recipient, set())
        return stored | self._held_resources.get((account_id, recipient), set())

    def features_seen(self, account_id: str) -> set[str]:
        """Which of the library's feature events the account ever sent: one statement
        for the batch's accounts and every feature the library tags."""
        if self._seen is None:
            names = {f for e in self.resources() for f in e.features}
            self._seen = ingest.events_seen_of(self.session, names, list(self.accounts))
        return self._seen.get(account_id, set())

    def answered(self, survey_id: str, account_id: str, user_id: str) -> bool:
        """Has the contact answered this survey already? One statement per survey for the
        batch's accounts."""
        if survey_id not in self._answered:
            self._answered[survey_id] = survey_repo.answered_of(self.session, survey_id, list(self.accounts))
        return (account_id, user_id) in self._answered[survey_id]

    def template(self, template_id: str) -> Template | None:
        if template_id not in self._templates:
            self._templates[template_id] = template_repo.get(self.session, template_id)
        return self._templates[template_id]

    def condition(self, condition: dict[str, Any], account_id: str) -> tuple[bool, dict[str, Any]]:
        """An exit or branch condition (stored JSON) for one of the batch's accounts: the
        answer and its explanation, as the rule language gives them; each metric is
        queried once for all the accounts."""
        key = json.dumps(condition, sort_keys=True)
        if key not in self._parsed:
            self._parsed[key] = parse_exit_condition(condition)
        if self._evaluate is None:
            self._evaluate = evaluator(self.session, list(self.accounts), self.now)
        return self._evaluate(self._parsed[key], account_id)

    # ---- writes -----------------------------------------------------------------

    def write_messages(self, rows: list[dict[str, Any]]) -> None:
        """Hold message rows for :meth:`flush`; the frequency caps count them from now on.
        A row's id must derive from its enrolment's (``message_key``): the flush relies on
        it to copy the rows of enrolments it inserts without a keyed insert."""
        self._held.extend(rows)
        self.counts.add(rows)
        for r in rows:
            if r.get("resource_id") and r["state"] in content_repo.RECEIVED_STATES:
                self._held_resources.setdefault((r["account_id"], r["user_id"] or r["recipient"]), set()).add(r["resource_id"])

    def held(self) -> list[dict[str, Any]]:
        """The message rows held for :meth:`flush` (a preview reads them and never flushes)."""
        return list(self._held)

    def add_enrollment(self, enrollment: Enrollment) -> None:
        """Hold a new enrolment (a plain object, not in the session), its first steps run,
        for :meth:`flush` to insert as it is now: one write, in its final state."""
        self._pending.append(enrollment)

    def inserted(self, enrollment: Enrollment) -> None:
        """``enrollment`` was inserted by the batch (a plain object, not in the session):
        the batch stores its run state (:meth:`changed`)."""
        self._new.add(enrollment.id)

    def changed(self, enrollment: Enrollment) -> None:
        """Steps ran on ``enrollment``: store its run state at the next write."""
        if enrollment.id in self._new:
            self._changed[enrollment.id] = enrollment

    def write_enrollments(self) -> None:
        """Store the run state of the batch's new enrolments that changed, in one statement."""
        changed, self._changed = self._changed, {}
        playbook_repo.write_run_state(self.session, changed.values())
        for e in changed.values():
            # A step that read the account's enrolments through the session loaded its own copy: now stale.
            copy = self.session.identity_map.get(identity_key(Enrollment, e.id))
            if copy is not None and copy is not e:
                self.session.expire(copy)

    def flush(self) -> set[str]:
        """Insert the held enrolments, then the held message rows (keyed: a row whose id
        exists is left alone), store the run state of the enrolments inserted before
        their steps ran, and flush the session; then drop what was kept, since the held
        rows are now in the table. Returns the message ids that were new."""
        pending, self._pending = self._pending, []
        if pending:
            playbook_repo.insert_enrollments_checked(self.session, [{c: e.__dict__.get(c) for c in _ENROLLMENT_COLUMNS} for e in pending])
        inserted_now = {e.id for e in pending}  # all inserted, or the transaction failed
        self.write_enrollments()
        rows, self._held = self._held, []
        self._held_resources = {}
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:  # one statement per set of columns (the built-in steps write one)
            shapes.setdefault(tuple(sorted(row)), []).append(row)
        new: set[str] = set()
        for same in shapes.values():
            if all(row["enrollment_id"] in inserted_now for row in same):
                # Messages of enrolments inserted just now: none of their ids can exist yet.
                new |= delivery_repo.insert_messages_of_new(self.session, same)
            else:
                new |= delivery_repo.insert_messages(self.session, same)
        for (channel, state), n in Counter((row["channel"], row["state"]) for row in rows if row["id"] in new).items():
            MESSAGES_ENQUEUED.labels(channel, state).inc(n)
        self.session.flush()
        self.forget()
        return new
