"""The playbook engine: compile a playbook version, enrol an account on a signal, run
its steps until a wait (a durable ``due_at`` on the enrolment) or the end, and the
conversion sweep. Step types live in the :mod:`~services.outreach.playbooks.steps`
package, which this module imports and which never imports it.

Everything here runs inside the caller's transaction (the consumer batch or the
timer tick) and only flushes: the messages a step writes and the enrolment's new
position commit together, so a crash redoes the step and its keyed messages dedupe.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import usage
from services.ingest.usage import AccountInfo
from services.outreach.models import Enrollment
from services.outreach.playbooks import repository as repo
from services.outreach.playbooks.conditions import accounts_meeting, evaluate_exit_condition
from services.outreach.playbooks.holdouts import is_held_out
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.playbooks.steps import REGISTRY, ParsedSteps, StepContext
from services.outreach.policy import service as policy

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("0b6f0d64-8d0c-4c43-a7d4-6a2b1d6f3e90")
MAX_STEPS_PER_RUN = 50
MAX_HISTORY = 200


# ---- definitions ------------------------------------------------------------

@dataclass
class Compiled:
    playbook_id: str
    version: int
    definition: PlaybookDefinition
    steps: ParsedSteps
    caps: policy.Caps


@lru_cache(maxsize=256)
def _compile_cached(playbook_id: str, version: int, definition_json: str) -> Compiled:
    definition = PlaybookDefinition.model_validate(json.loads(definition_json))
    c = definition.caps
    caps = policy.Caps(contact=policy.Cap(c.contact.max, c.contact.days) if c.contact else None,
                       account=policy.Cap(c.account.max, c.account.days) if c.account else None)
    return Compiled(playbook_id, version, definition, definition.parsed_steps(), caps)


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
    return str(uuid.uuid5(NAMESPACE, f"{playbook_id}\x1f{account_id}\x1f{signal_id}"))


def enroll(session: Session, compiled: Compiled, signal: Any, account: AccountInfo | None, now: datetime,
           settings: Any) -> Enrollment | None:
    """Enrol the signal's account unless it is already active in this playbook; run
    the first steps at once. Returns the enrolment, or None if it was already active."""
    eid = enrollment_id(compiled.playbook_id, signal.account_id, signal.signal_id)
    held_out = is_held_out(compiled.playbook_id, signal.account_id, compiled.definition.holdout_percent)
    inserted = repo.insert_enrollment(session, {
        "id": eid, "playbook_id": compiled.playbook_id, "playbook_version": compiled.version,
        "account_id": signal.account_id, "signal_id": signal.signal_id, "signal": signal.model_dump(mode="json"),
        "holdout": held_out, "status": "active", "active_key": f"{compiled.playbook_id}\x1f{signal.account_id}",
        "step_index": 0, "due_at": now, "history": [], "outcome_detail": {}, "enrolled_at": now,
    })
    if not inserted:
        return None
    enrollment = repo.get_enrollment(session, eid)
    assert enrollment is not None  # inserted just above, in this transaction
    advance(session, enrollment, compiled, now, settings, account=account)
    return enrollment


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


def advance(session: Session, enrollment: Enrollment, compiled: Compiled, now: datetime, settings: Any,
            account: AccountInfo | None = None) -> None:
    """Run due steps until a wait or the end."""
    if account is None:
        account = usage.account(session, enrollment.account_id)
    steps = compiled.steps.steps
    for _ in range(MAX_STEPS_PER_RUN):
        if enrollment.status != "active" or enrollment.due_at is None or enrollment.due_at > now:
            return
        if compiled.definition.exit_condition is not None:
            met, evidence = evaluate_exit_condition(session, compiled.definition.exit_condition, enrollment.account_id, now)
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
        ctx = StepContext(session, settings, now, enrollment, i, account, compiled.steps, compiled.caps, compiled.definition.name,
                          compiled.definition.operational)
        outcome = REGISTRY[step.type].run(ctx, step)
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
