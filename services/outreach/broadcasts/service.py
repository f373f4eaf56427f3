"""Create, cancel, preview, send and report broadcasts (docs/broadcasts.md).

A broadcast is sent the way a playbook's send step sends, through the same code
(:func:`services.outreach.playbooks.steps.send.send_rows`): each member account is a
one-step run of a ``send`` step with the broadcast's template and recipients, its
holdout the playbooks' hash (``holdout_bucket("broadcast:<id>", account)``), its
recipients decided by the send step's contact gate (suppressions, erasure, the global
contact and account caps, an open engagement), rendered, their links tracked, emails
deferred past the contact's quiet hours, and written to the message outbox through the
playbook batch's keyed insert. Nothing here decides who may be written to.

The members are read from the rules service's door a chunk of accounts at a time, in
account order, after the last account sent (``cursor``); each chunk is one transaction
that writes its messages and the progress together. A message's id is
``message_key(uuid5(broadcast, account), "broadcast", address)``: a chunk written twice
(a crash between the insert and the commit is rolled back whole; a second worker that
read the same cursor) inserts nothing the second time (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.ingest import interface as ingest
from services.outreach.broadcasts import repository as repo
from services.outreach.broadcasts.schemas import CODE, BroadcastIn, Group, Preview, Report
from services.outreach.delivery.service import NAMESPACE
from services.outreach.links.service import EVENT_NAME as CLICK_EVENT
from services.outreach.models import Broadcast, Enrollment
from services.outreach.playbooks.batch import Batch
from services.outreach.playbooks.holdouts import is_held_out
from services.outreach.playbooks.messages import MessageRows
from services.outreach.playbooks.steps.definitions import SendStep
from services.outreach.playbooks.steps.registry import ParsedSteps, StepContext
from services.outreach.playbooks.steps.send import internal, send_rows
from services.outreach.policy.service import Caps
from services.outreach.templates import repository as templates
from services.outreach.templates.context import sample_context
from services.outreach.templates.rendering import PARTS, TemplateProblem, render
from services.outreach.templates.sandbox import RenderBudget
from services.rules.interface import existing_segments, list_segment_members
from shared import audit
from shared.db import transaction
from shared.errors import Conflict, NotFound, Unprocessable
from shared.settings import Settings

STEP_ID = "broadcast"
AUDIT_TYPE = "broadcast"
# A send time this far in the past is a mistake (a wrong year), not "now".
PAST_TOLERANCE = timedelta(minutes=5)


def holdout_key(broadcast_id: str) -> str:
    """The salt of a broadcast's holdout hash (docs/broadcasts.md)."""
    return f"broadcast:{broadcast_id}"


def new_id() -> str:
    return str(uuid.uuid4())


def check(session: Session, settings: Settings, body: BroadcastIn, now: datetime) -> None:
    """What the definition's shape cannot say: the template is a customer template that
    renders without a signal, the segment exists, the send time is not past. A 422
    ``broadcast_invalid`` with a pointer per problem."""
    problems: list[dict[str, str]] = []
    template = templates.get(session, body.template)
    if template is None:
        problems.append({"pointer": "/template", "message": f"no template {body.template!r}; list them with GET /v1/templates"})
    elif template.audience != "customer":
        problems.append(
            {"pointer": "/template", "message": f"template {body.template!r} is written for the team (internal), not for customers"}
        )
    else:
        try:  # against the template's sample, less what a broadcast's message never has
            sample = {**sample_context(settings, template.sample_context), "signal": {}}
            for name in ("resource", "survey"):
                sample.pop(name, None)
            render({p: getattr(template, p) for p in PARTS}, sample, RenderBudget.from_settings(settings))
        except TemplateProblem as problem:
            problems.append(
                {
                    "pointer": "/template",
                    "message": f"template {body.template!r} cannot be sent in a broadcast, which has no signal, resource or survey: "
                    f"{problem.as_dict()['message']}",
                }
            )
    if body.segment_id not in existing_segments(session, [body.segment_id]):
        problems.append({"pointer": "/segment_id", "message": f"no segment {body.segment_id!r}; list them with GET /v1/segments"})
    if body.send_at is not None and body.send_at < now - PAST_TOLERANCE:
        problems.append({"pointer": "/send_at", "message": f"send_at {body.send_at.isoformat()} is in the past; leave it out to send now"})
    if problems:
        raise Unprocessable(problems, code=CODE)


def create(
    session: Session, settings: Settings, body: BroadcastIn, *, actor: str, now: datetime, broadcast_id: str | None = None
) -> Broadcast:
    """Schedule a broadcast (at ``send_at``, or now). ``broadcast_id`` is the id its
    preview was made with (so the holdout is the one previewed); a new one if None.
    Audited; flushes only."""
    check(session, settings, body, now)
    bid = broadcast_id or new_id()
    if repo.get(session, bid) is not None:
        raise Conflict(f"broadcast {bid} exists already")
    b = Broadcast(
        id=bid,
        name=body.name,
        template_id=body.template,
        segment_id=body.segment_id,
        channel=body.channel,
        to=list(body.to),
        holdout_percent=body.holdout_percent,
        send_at=max(body.send_at, now) if body.send_at else now,
        status="scheduled",
        cursor=None,
        accounts_done=0,
        chunks_done=0,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(b)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        object_type=AUDIT_TYPE,
        object_id=bid,
        now=now,
        details={"name": b.name, "template": b.template_id, "segment_id": b.segment_id, "send_at": b.send_at.isoformat()},
    )
    return b


def get_or_404(session: Session, broadcast_id: str) -> Broadcast:
    b = repo.get(session, broadcast_id)
    if b is None:
        raise NotFound(f"no broadcast {broadcast_id!r}; list them with GET /v1/broadcasts")
    return b


def cancel(session: Session, broadcast_id: str, *, actor: str, now: datetime) -> Broadcast:
    """Cancel a broadcast: a scheduled one sends nothing; one being sent stops before its
    next chunk. Whatever its status, its messages still queued are withdrawn (``skipped``,
    reason ``cancelled``); those a sender has already taken go. A 409 once cancelled, or
    once sent with no message left queued (nothing would change). Audited, with the
    status it had and how many messages it withdrew."""
    b = repo.lock(session, broadcast_id)
    if b is None:
        raise NotFound(f"no broadcast {broadcast_id!r}; list them with GET /v1/broadcasts")
    if b.status == "cancelled":
        raise Conflict(f"broadcast {broadcast_id} is cancelled already")
    was = b.status
    withdrawn = repo.withdraw_queued(session, broadcast_id, now)
    if was == "sent" and not withdrawn:
        raise Conflict(f"broadcast {broadcast_id} is sent and none of its messages is still queued: nothing is left to cancel")
    b.status, b.cancelled_at, b.cancelled_by, b.updated_at = "cancelled", now, actor, now
    session.flush()
    details = {"status": was, "withdrawn": withdrawn}
    audit.record(session, actor=actor, action="cancel", object_type=AUDIT_TYPE, object_id=broadcast_id, now=now, details=details)
    return b


# ---- the send, shared by the preview ----------------------------------------------


def _rows(session: Session, settings: Settings, b: Broadcast, account_ids: list[str], now: datetime, *, render: bool = True) -> Batch:
    """A playbook batch holding the message rows of ``b`` for ``account_ids`` (not
    inserted: the caller flushes it to send, or drops it to preview, whose rows need no
    content: ``render=False``)."""
    batch = Batch.of(session, settings, now, account_ids)
    step = SendStep(type="send", id=STEP_ID, channel=b.channel, template=b.template_id, to=list(b.to or []))
    template = batch.template(b.template_id)
    steps = ParsedSteps([step], {STEP_ID: 0})
    audience = "internal" if internal(step, template) else "customer"
    for account_id in account_ids:
        # A transient enrolment: the send step's decisions read its account and holdout; nothing stores it.
        e = Enrollment(
            id=str(uuid.uuid5(NAMESPACE, f"broadcast\x1f{b.id}\x1f{account_id}")),
            playbook_id="",
            playbook_version=0,
            account_id=account_id,
            signal_id="",
            signal={},
            holdout=is_held_out(holdout_key(b.id), account_id, b.holdout_percent),
        )
        ctx = StepContext(
            session=session,
            settings=settings,
            now=now,
            enrollment=e,
            index=0,
            account=batch.accounts.get(account_id),
            steps=steps,
            caps=Caps(),
            playbook_name=b.name,
            batch=batch,
            broadcast_id=b.id,
        )
        out = MessageRows(e, STEP_ID, b.channel, b.template_id, now, audience=audience)
        out.base.update(enrollment_id=None, playbook_id=None, broadcast_id=b.id)
        batch.write_messages(send_rows(ctx, step, out, template, render=render))
    return batch


def preview(session: Session, settings: Settings, body: BroadcastIn, *, now: datetime, broadcast_id: str | None = None) -> Preview:
    """What sending ``body`` would do to the segment's members now (a chunk of accounts
    at a time, through the send's own code), the gate asked as of its send time (or now):
    nothing is written."""
    check(session, settings, body, now)
    at = max(body.send_at or now, now)
    b = Broadcast(
        id=broadcast_id or "preview",
        name=body.name,
        template_id=body.template,
        segment_id=body.segment_id,
        channel=body.channel,
        to=list(body.to),
        holdout_percent=body.holdout_percent,
    )
    return _preview(session, settings, b, at)


def preview_of(session: Session, settings: Settings, broadcast_id: str, *, now: datetime) -> Preview:
    """The preview of a scheduled broadcast, as of its send time (or now); a 409 once
    it is sending (its report says what it did)."""
    b = get_or_404(session, broadcast_id)
    if b.status != "scheduled":
        raise Conflict(f"broadcast {broadcast_id} is {b.status}: its report says what it did")
    return _preview(session, settings, b, max(b.send_at, now))


def _preview(session: Session, settings: Settings, b: Broadcast, at: datetime) -> Preview:
    accounts = held_accounts = held_messages = would = deferred = 0
    contacts: set[tuple[str, str]] = set()
    skipped: Counter[str] = Counter()
    after: str | None = None
    size = settings.broadcast_chunk_accounts
    while True:
        members = [m.account_id for m in list_segment_members(session, b.segment_id, after=after, limit=size)]
        if not members:
            break
        batch = _rows(session, settings, b, members, at, render=False)
        for row in batch.held():
            if row["recipient"] or row["user_id"]:
                contacts.add((row["account_id"], row["user_id"] or row["recipient"]))
            if row["skip_reason"] == "held_out":
                held_messages += 1
            elif row["state"] == "skipped":
                skipped[row["skip_reason"]] += 1
            else:
                would += 1
                deferred += bool((row.get("payload") or {}).get("deferred"))
        accounts += len(members)
        held_accounts += sum(1 for a in members if is_held_out(holdout_key(b.id), a, b.holdout_percent))
        after = members[-1]
        if len(members) < size:
            break
    return Preview(
        segment_id=b.segment_id,
        at=at,
        accounts=accounts,
        contacts=len(contacts),
        held_out=Group(accounts=held_accounts, messages=held_messages),
        would_send=would,
        deferred=deferred,
        skipped=dict(sorted(skipped.items())),
    )


def send_chunk(session: Session, settings: Settings, broadcast_id: str, now: datetime) -> bool:
    """Send the next chunk of a due broadcast's members, with its progress, in the
    caller's transaction. True when nothing is left (sent, not due, or being sent by
    another worker right now)."""
    b = repo.claim(session, broadcast_id, now)
    if b is None:
        return True
    size = settings.broadcast_chunk_accounts
    members = [m.account_id for m in list_segment_members(session, b.segment_id, after=b.cursor, limit=size)]
    if b.status == "scheduled":
        b.status, b.started_at = "sending", now
    if members:
        _rows(session, settings, b, members, now).flush()
        b.cursor, b.accounts_done, b.chunks_done = members[-1], b.accounts_done + len(members), b.chunks_done + 1
    done = len(members) < size
    if done:
        b.status, b.finished_at = "sent", now
    b.updated_at = now
    session.flush()
    return done


def send_due(session_factory: sessionmaker[Session], settings: Settings, now: datetime, max_chunks: int = 10) -> int:
    """Send the due broadcasts, a chunk per transaction, at most ``max_chunks`` chunks
    (the outreach timer worker's tick calls this; a full tick ticks again at once).
    Returns the chunks sent."""
    with transaction(session_factory) as session:
        due = repo.due_ids(session, now)
    chunks = 0
    for broadcast_id in due:
        done = False
        while not done and chunks < max_chunks:
            with transaction(session_factory) as session:
                done = send_chunk(session, settings, broadcast_id, now)
            chunks += 1
    return chunks


# ---- the report -------------------------------------------------------------------


def report(session: Session, broadcast_id: str) -> Report:
    """Its messages by state and skip reason, the accounts they reached, and the
    contacts who clicked (ingest's stored link_clicked events carrying the broadcast,
    received since a day before its first message: the clocks of two machines)."""
    b = get_or_404(session, broadcast_id)
    by: dict[str, int] = Counter()
    skipped: Counter[str] = Counter()
    held = Group(accounts=0, messages=0)
    total = 0
    for state, reason, n, accounts in repo.counts(session, broadcast_id):
        by[state] += n
        total += n
        if state == "skipped":
            skipped[reason or ""] += n
            if reason == "held_out":
                held = Group(accounts=accounts, messages=n)
    first = repo.first_message_at(session, broadcast_id)
    return Report(
        broadcast_id=broadcast_id,
        status=b.status,
        targeted=Group(accounts=repo.accounts_reached(session, broadcast_id), messages=total),
        held_out=held,
        queued=by["queued"],
        sending=by["sending"],
        sent=by["sent"],
        failed=by["failed"],
        uncertain=by["uncertain"],
        skipped=dict(sorted(skipped.items())),
        clicked=ingest.contacts_where(session, CLICK_EVENT, [(("broadcast_id",), [broadcast_id])], first - timedelta(days=1))
        if first
        else 0,
    )
