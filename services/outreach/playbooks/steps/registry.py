"""The step type registry. A step type is a pydantic model for its definition plus a
function that runs it against an enrolment and says what happens next.

To add a step type: define its model (a :class:`StepBase` with ``type:
Literal["..."]``), write ``run(ctx, step) -> StepOutcome`` and register it, as the
built-ins in this package do (``open_engagement.py`` is one)::

    @register("open_engagement", OpenEngagementStep)
    def run_open_engagement(ctx: StepContext, step: OpenEngagementStep) -> StepOutcome: ...

and import its module from ``steps/__init__.py``. Nothing in the engine changes.

A step that reads and writes only through ``ctx.batch`` (the batch's set-based reads and
held message rows, :mod:`services.outreach.playbooks.batch`) registers with
``batched=True``: then a whole signal batch's first steps cost a fixed number of
statements. Any other step may use ``ctx.session`` freely; the engine flushes the batch
before it runs and drops what the batch kept after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from services.ingest.interface import AccountInfo
from services.outreach.models import Enrollment
from services.outreach.playbooks.batch import Batch
from services.outreach.playbooks.terms import TERMINALS
from services.outreach.policy.service import Caps


class StepBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    id: str = Field("", max_length=128)
    type: str

    def targets(self) -> list[str]:
        """Step ids (or terminals) this step may jump to; checked when a playbook is saved."""
        return []

    def describe(self) -> str:
        """The step in a few words, as an internal brief's "what happens next" says it."""
        return f"{self.type} ({self.id})"


@dataclass
class StepOutcome:
    """What the engine does next: go to ``next`` (an index; None = the following
    step), wait until ``wait_until`` first, or end with ``end`` (completed, converted)."""

    next: int | None = None
    wait_until: datetime | None = None
    end: str | None = None
    note: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def go_to(cls, target: int | str, note: dict[str, Any]) -> StepOutcome:
        """Go on at ``target`` (from :meth:`ParsedSteps.target`): a step's index, or a
        terminal, "convert" (end converted) or "end" (end completed)."""
        if target == "convert":
            return cls(end="converted", note=note)
        if target == "end":
            return cls(end="completed", note=note)
        assert isinstance(target, int)
        return cls(next=target, note=note)


@dataclass
class ParsedSteps:
    steps: list[StepBase]
    index: dict[str, int]

    def target(self, name: str | None, current: int) -> int | str:
        if name is None:
            return current + 1
        if name in TERMINALS:
            return name
        return self.index[name]


@dataclass
class StepContext:
    """What a running step may use. It runs inside the caller's transaction: flush only."""

    session: Session
    settings: Any
    now: datetime
    enrollment: Enrollment
    index: int  # this step's position
    account: AccountInfo | None
    steps: ParsedSteps  # the playbook version's steps (branch targets)
    caps: Caps  # the playbook's own frequency caps
    playbook_name: str
    batch: Batch  # the set-based reads and the held message rows (see the module docstring)
    operational: bool = False  # the playbook's messages go out even during an open engagement
    broadcast_id: str | None = None  # a broadcast's send (services/outreach/broadcasts), not a playbook's


Runner = Callable[[StepContext, Any], StepOutcome]


@dataclass
class StepType:
    model: type[StepBase]
    run: Runner
    batched: bool = False  # reads and writes only through ctx.batch


REGISTRY: dict[str, StepType] = {}


def register(name: str, model: type[StepBase], run: Runner | None = None, *, batched: bool = False) -> Callable[[Runner], Runner]:
    """Register a step type: ``register(name, Model, run)``, or as a decorator on ``run``."""

    def add(fn: Runner) -> Runner:
        REGISTRY[name] = StepType(model, fn, batched)
        return fn

    if run is not None:
        add(run)
    return add


def parse_steps(raw: list[dict[str, Any]]) -> ParsedSteps:
    """Validate a definition's steps; raises ValueError naming the step and the problem."""
    steps: list[StepBase] = []
    for i, obj in enumerate(raw):
        where = f"step {i + 1}"
        if not isinstance(obj, dict) or obj.get("type") not in REGISTRY:
            kind = obj.get("type") if isinstance(obj, dict) else None
            raise ValueError(f"/steps/{i}/type: {where}: unknown step type {kind!r}; use one of {', '.join(sorted(REGISTRY))}")
        try:
            step = REGISTRY[obj["type"]].model.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = [str(p) for p in first.get("loc", ())]
            pointer = "/".join([f"/steps/{i}", *loc])  # the JSON pointer of the offending field
            field = ".".join(loc)
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"{pointer}: {where} ({obj.get('id') or obj['type']}): {field + ': ' if field else ''}{message}") from None
        if not step.id:
            step.id = f"step-{i + 1}"
        steps.append(step)
    index: dict[str, int] = {}
    for i, s in enumerate(steps):
        if s.id in index or s.id in TERMINALS:
            raise ValueError(f"step {i + 1}: id {s.id!r} is used twice or is reserved")
        index[s.id] = i
    for s in steps:
        for target in s.targets():
            if target not in index and target not in TERMINALS:
                raise ValueError(f"step {s.id!r}: branch target {target!r} is not a step id, 'convert' or 'end'")
    return ParsedSteps(steps, index)
