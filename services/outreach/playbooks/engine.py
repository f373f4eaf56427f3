"""The playbook engine: compile a playbook version, enrol the accounts of a batch of
signals, run each enrolment's steps until a wait (a durable ``due_at`` on the
enrolment) or the end, and the conversion sweep. Step types live in the
:mod:`~services.outreach.playbooks.steps` package, which this module imports and which
never imports it.

A batch is enrolled set-based (:func:`enroll_batch`): one read of the enrolments
that exist already, the steps' reads and writes through one
:class:`~services.outreach.playbooks.batch.Batch`, and one keyed insert of the new
enrolments in their state after their first steps, so the statements a batch costs
do not grow with its signals (tests/integration/services/outreach/test_playbooks.py
counts them).

Everything here runs inside the caller's transaction (the consumer batch or the
timer tick) and only flushes: the messages a step writes and the enrolment's new
position commit together, so a crash redoes the step and its keyed messages dedupe.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session, configure_mappers, instrumentation

from services.ingest.interface import AccountInfo
from services.outreach.models import Enrollment
from services.outreach.playbooks import repository as repo
from services.outreach.playbooks.batch import Batch
from services.outreach.playbooks.conditions import accounts_meeting
from services.outreach.playbooks.holdouts import is_held_out
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.playbooks.steps import REGISTRY, ParsedSteps, StepContext
from services.outreach.policy import service as policy
from shared.ids import uuid5

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("0b6f0d64-8d0c-4c43-a7d4-6a2b1d6f3e90")
MAX_STEPS_PER_RUN = 50
MAX_HISTORY = 200
_ENROLLMENT = instrumentation.manager_of_class(Enrollment)


# ---- definitions ------------------------------------------------------------


@dataclass
class Compiled:
    playbook_id: str
    version: int
    definition: PlaybookDefinition
    steps: ParsedSteps
    caps: policy.Caps
    # Every step an enrolment can run before its first wait is batched (reads and writes
    # only through the batch): see enroll_batch.
    first_run_batched: bool = True


def _first_run_batched(steps: ParsedSteps) -> bool:
    """Over-approximated: from the first step, follow every step's successor and jump
    targets, stopping at waits."""
    seen: set[int] = set()
    todo = [0]
    while todo:
        i = todo.pop()
        if i in seen or i >= len(steps.steps):
            continue
        seen.add(i)
        step = steps.steps[i]
        if not REGISTRY[step.type].batched:
            return False
        if step.type != "wait":
            todo += [i + 1] + [steps.index[t] for t in step.targets() if t in steps.index]
    return True


@lru_cache(maxsize=256)
def _compile_cached(playbook_id: str, version: int, definition_json: str) -> Compiled:
    definition = PlaybookDefinition.model_validate(json.loads(definition_json))
    c = definition.caps
    caps = policy.Caps(
        contact=policy.Cap(c.contact.max, c.contact.days) if c.contact else None,
        account=policy.Cap(c.account.max, c.account.days) if c.account else None,
    )
    steps = definition.parsed_steps()
    return Compiled(playbook_id, version, definition, steps, caps, _first_run_batched(steps))


def compile_version(playbook_id: str, version: int, definition: dict[str, Any]) -> Compiled:
    # Versions are immutable, so (id, version) alone would do; the JSON guards tests that reuse ids.
    return _compile_cached(playbook_id, version, json.dumps(definition, sort_keys=True))


def load_compiled(session: Session, playbook_id: str, version: int) -> Compiled:
    row = repo.get_version(session, playbook_id, version)
    if row is None:
        raise LookupError(f"playbook {playbook_id} v{version} does not exist")
    return compile_version(playbook_id, version, row.definition)


# ---- enrolment --------------------------------------------------------------


def enrollment_id(playbook_id: str, account_id: str, signal_id: str) -> str:
    return uuid5(NAMESPACE, f"{playbook_id}\x1f{account_id}\x1f{signal_id}")


def _active_key(compiled: Compiled, signal: Any) -> str:
    return f"{compiled.playbook_id}\x1f{signal.account_id}"


def _new_enrollment(row: dict[str, Any]) -> Enrollment:
    """An :class:`Enrollment` holding ``row``, for the batch to insert: what the ORM
    does for a loaded row (no attribute events), a tenth of the cost of the constructor."""
    enrollment = _ENROLLMENT.new_instance()
    enrollment.__dict__.update(row)
    return enrollment


def _row(compiled: Compiled, signal: Any, now: datetime, eid: str, active_key: str) -> dict[str, Any]:
    return {
        "id": eid,
        "playbook_id": compiled.playbook_id,
        "playbook_version": compiled.version,
        "account_id": signal.account_id,
        "signal_id": signal.signal_id,
        "signal": signal.model_dump(mode="json"),
        "holdout": is_held_out(compiled.playbook_id, signal.account_id, compiled.definition.holdout_percent),
        "status": "active",
        "active_key": active_key,
        "step_index": 0,
        "due_at": now,
        "history": [],
        "outcome_detail": {},
        "enrolled_at": now,
    }


def enroll_batch(
    session: Session, pairs: Sequence[tuple[Compiled, Any]], accounts: Mapping[str, AccountInfo | None], now: datetime, settings: Any
) -> list[Enrollment | None]:
    """Enrol each (playbook, signal) pair's account unless it is already active in that
    playbook, and run each new enrolment's first steps, in the pairs' order, as if one
    pair were enrolled after the other. Returns per pair the enrolment, or None if the
    account was already active. ``accounts`` holds every pair's account (None if unknown).

    One read finds which of the pairs' enrolments exist and which (playbook, account)
    are active already; the pairs are then decided in order in memory (an enrolment
    whose first steps end it frees its ``active_key`` for the next pair of the same
    account), their first steps run through the batch, and the batch inserts each new
    enrolment once, in its state after those steps (:meth:`Batch.add_enrollment`): no
    second write. A pair whose first steps are not all batched (an ``open_engagement``
    step reads the account's enrolments) is inserted first, as it starts, and its run
    state stored after; what it may have changed is read again for the pairs after it."""
    configure_mappers()  # for _new_enrollment (a no-op once the models are configured)
    batch = Batch(session, settings, now, accounts)
    out: list[Enrollment | None] = [None] * len(pairs)
    wanted = [(enrollment_id(c.playbook_id, s.account_id, s.signal_id), _active_key(c, s)) for c, s in pairs]
    ids: set[str] = set()
    keys: set[str] = set()
    fresh = True  # ids and keys must be read for the pairs from here on
    for k, (compiled, signal) in enumerate(pairs):
        if fresh:
            ids, keys = repo.enrollment_conflicts(session, [i for i, _ in wanted[k:]], [a for _, a in wanted[k:]])
            fresh = False
        eid, key = wanted[k]
        if eid in ids or key in keys:
            continue
        ids.add(eid)
        row = _row(compiled, signal, now, eid, key)
        if compiled.first_run_batched:
            enrollment = _new_enrollment(row)
            _run(session, enrollment, compiled, now, settings, batch)
            batch.add_enrollment(enrollment)
        else:
            batch.flush()  # its steps read the account's enrolments through the session: insert the batch's first
            if eid not in repo.insert_enrollments(session, [row]):
                continue
            enrollment = Enrollment(**row)  # as inserted; the batch stores what its steps change
            batch.inserted(enrollment)
            advance(session, enrollment, compiled, now, settings, batch)
            batch.write_enrollments()
            fresh = True
        if enrollment.active_key is not None:
            keys.add(enrollment.active_key)
        out[k] = enrollment
    batch.flush()
    return out


def enroll(
    session: Session, compiled: Compiled, signal: Any, account: AccountInfo | None, now: datetime, settings: Any
) -> Enrollment | None:
    """:func:`enroll_batch` for one signal and one playbook."""
    return enroll_batch(session, [(compiled, signal)], {signal.account_id: account}, now, settings)[0]


def _end(enrollment: Enrollment, status: str, now: datetime, detail: dict[str, Any] | None = None) -> None:
    enrollment.status, enrollment.ended_at, enrollment.active_key, enrollment.due_at = status, now, None, None
    if status == "converted":
        enrollment.converted_at = now
    if detail:
        enrollment.outcome_detail = detail


def _log(enrollment: Enrollment, now: datetime, step: Any, result: str, **extra: Any) -> None:
    entry = {"at": now.isoformat(), "step": getattr(step, "id", step), "type": getattr(step, "type", None), "result": result}
    entry.update(extra)
    enrollment.history = (list(enrollment.history or []) + [entry])[-MAX_HISTORY:]


def advance(session: Session, enrollment: Enrollment, compiled: Compiled, now: datetime, settings: Any, batch: Batch | None = None) -> None:
    """Run due steps until a wait or the end. Reads and writes go through ``batch``
    (the caller flushes it); without one, the enrolment is a batch of one, flushed here."""
    if batch is None:
        own = Batch.of(session, settings, now, [enrollment.account_id])
        _run(session, enrollment, compiled, now, settings, own)
        own.flush()
    else:
        _run(session, enrollment, compiled, now, settings, batch)
        batch.changed(enrollment)


def _run(session: Session, enrollment: Enrollment, compiled: Compiled, now: datetime, settings: Any, batch: Batch) -> None:
    account = batch.accounts.get(enrollment.account_id)
    steps = compiled.steps.steps
    for _ in range(MAX_STEPS_PER_RUN):
        if enrollment.status != "active" or enrollment.due_at is None or enrollment.due_at > now:
            return
        if compiled.definition.exit_condition is not None:
            met, evidence = batch.condition(compiled.definition.exit_condition, enrollment.account_id)
            if met:
                _log(enrollment, now, "exit_condition", "converted")
                _end(enrollment, "converted", now, {"reason": "exit_condition", "evidence": evidence})
                return
        i = enrollment.step_index
        if i >= len(steps):
            _log(enrollment, now, "end", "completed")
            _end(enrollment, "completed", now, {"reason": "last_step"})
            return
        step = steps[i]
        kind = REGISTRY[step.type]
        ctx = StepContext(
            session,
            settings,
            now,
            enrollment,
            i,
            account,
            compiled.steps,
            compiled.caps,
            compiled.definition.name,
            batch,
            compiled.definition.operational,
        )
        if kind.batched:
            outcome = kind.run(ctx, step)
        else:
            batch.changed(enrollment)
            batch.flush()  # it reads through the session: let it see what the batch wrote
            outcome = kind.run(ctx, step)
            batch.forget()  # and what it changed is not in what the batch kept
        if outcome.end:
            _log(enrollment, now, step, outcome.end, **outcome.note)
            _end(enrollment, outcome.end, now, {"reason": f"step {step.id}", **outcome.note})
            return
        enrollment.step_index = outcome.next if outcome.next is not None else i + 1
        if outcome.wait_until is not None:
            enrollment.due_at = outcome.wait_until
            _log(enrollment, now, step, "waiting", until=outcome.wait_until.isoformat(), **outcome.note)
        else:
            _log(enrollment, now, step, "done", **outcome.note)
    _end(enrollment, "failed", now, {"reason": f"more than {MAX_STEPS_PER_RUN} steps without a wait: a branch loop?"})


def sweep_conversions(session: Session, now: datetime, limit: int) -> int:
    """End as converted every running enrolment whose playbook's exit condition holds
    now, one set-based evaluation per playbook version. Returns how many converted."""
    by_version: dict[tuple[str, int], list[Enrollment]] = {}
    for e in repo.active_enrollments(session, limit):
        by_version.setdefault((e.playbook_id, e.playbook_version), []).append(e)
    converted = 0
    for (playbook_id, version), enrollments in by_version.items():
        condition = load_compiled(session, playbook_id, version).definition.exit_condition
        if condition is None:
            continue
        met = accounts_meeting(session, condition, [e.account_id for e in enrollments], now)
        for e in enrollments:
            if e.account_id in met:
                _log(e, now, "exit_condition", "converted")
                _end(e, "converted", now, {"reason": "exit_condition", "checked_by": "conversion sweep"})
                converted += 1
    session.flush()
    return converted


def stop_on_segment_left(session: Session, signals: Sequence[Any], now: datetime) -> dict[str, list[tuple[str, int]]]:
    """End, as ``completed`` with reason ``segment_left``, every running enrolment
    (treated or held out) that entering the segment a ``segment_left`` signal of
    ``signals`` says its account left started, in a playbook version whose trigger
    names that segment (an enrolment started by entering again after the leaving stays,
    and one started by entering another segment of the trigger too).
    Returns per signal id the (playbook, version) pairs it stopped. Flushes."""
    if not signals:
        return {}
    stopped: dict[str, list[tuple[str, int]]] = {}
    running = repo.active_enrollments_of(session, [s.account_id for s in signals])
    for signal in sorted(signals, key=lambda s: s.fired_at):
        for e in running:
            if e.status != "active" or e.account_id != signal.account_id:
                continue
            started = e.signal or {}
            if started.get("rule_id") != signal.rule_id:  # entering another segment (or a rule) started it
                continue
            if started.get("fired_at") is None or datetime.fromisoformat(started["fired_at"]) > signal.fired_at:
                continue
            trigger = load_compiled(session, e.playbook_id, e.playbook_version).definition.trigger
            if signal.rule_id not in trigger.segment_rule_ids:
                continue
            segment = (signal.evidence.get("segment") or {}).get("id")
            _log(e, now, "segment_left", "completed", segment=segment)
            _end(e, "completed", now, {"reason": "segment_left", "segment": segment, "signal_id": signal.signal_id})
            stopped.setdefault(signal.signal_id, []).append((e.playbook_id, e.playbook_version))
    session.flush()
    return stopped


# ---- dry-run ------------------------------------------------------------------


class _DryRunBatch(Batch):
    """A batch that also keeps every message row its steps write, for :func:`dry_run`."""

    def __init__(self, session: Session, settings: Any, now: datetime, accounts: Mapping[str, AccountInfo | None]):
        super().__init__(session, settings, now, accounts)
        self.written: list[dict[str, Any]] = []

    def write_messages(self, rows: list[dict[str, Any]]) -> None:
        self.written.extend(rows)
        super().write_messages(rows)


@dataclass
class DryRun:
    """What one enrolment of ``account_id`` would do now: each step it ran (the
    enrolment's history, with each branch's condition and evidence), every message row
    a step wrote (sent/queued, or skipped with the contact gate's reason) and how it ended."""

    playbook_id: str
    version: int
    account_id: str
    history: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    status: str
    outcome: dict[str, Any]


def dry_run(session: Session, compiled: Compiled, account_id: str, now: datetime, settings: Any) -> DryRun:
    """Run a new, treated (never held out) enrolment of ``account_id`` through the
    engine's own step loop (:func:`_run`), every wait taken as elapsed (the conditions
    after it are read as of ``now``), inside a savepoint that is rolled back: what its
    steps write (a step such as ``open_engagement`` writes through the session, so the
    enrolment is inserted first, as :func:`enroll_batch` does for one) is never kept.
    The caller's transaction must be one that may write. The trigger signal is a
    stand-in naming the dry-run."""
    signal: dict[str, Any] = {"signal_id": "dry-run", "account_id": account_id, "kind": "dry_run", "rule_id": None, "evidence": {}}
    row = {
        "id": enrollment_id(compiled.playbook_id, account_id, f"dry-run:{uuid.uuid4()}"),
        "playbook_id": compiled.playbook_id,
        "playbook_version": compiled.version,
        "account_id": account_id,
        "signal_id": "dry-run",
        "signal": signal,
        "holdout": False,
        "status": "active",
        "active_key": None,  # never in the way of a real enrolment of the account
        "step_index": 0,
        "due_at": now,
        "history": [],
        "outcome_detail": {},
        "enrolled_at": now,
    }
    savepoint = session.begin_nested()
    try:
        batch = _DryRunBatch(session, settings, now, Batch.of(session, settings, now, [account_id]).accounts)
        repo.insert_enrollments_checked(session, [row])
        enrollment = Enrollment(**row)
        batch.inserted(enrollment)
        for _ in range(MAX_STEPS_PER_RUN):
            _run(session, enrollment, compiled, now, settings, batch)
            batch.changed(enrollment)
            if enrollment.status != "active":
                break
            enrollment.due_at = now  # the wait is taken as elapsed
        batch.flush()  # as a real run would, so that a write that fails here fails the dry-run too
        return DryRun(
            playbook_id=compiled.playbook_id,
            version=compiled.version,
            account_id=account_id,
            history=list(enrollment.history or []),
            messages=list(batch.written),
            status=enrollment.status,
            outcome=dict(enrollment.outcome_detail or {}),
        )
    finally:
        savepoint.rollback()
