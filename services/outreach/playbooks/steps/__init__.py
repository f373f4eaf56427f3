"""Playbook steps: the registry (:mod:`.registry`), the built-in definitions
(:mod:`.definitions`) and their runners (:mod:`.flow`, :mod:`.send`,
:mod:`.open_engagement`), which register themselves when this package is imported. The engine imports this package; nothing
here imports the engine."""

from __future__ import annotations

from services.outreach.playbooks.steps import flow, open_engagement, send
from services.outreach.playbooks.steps.definitions import BranchStep, EndStep, SendStep, WaitStep
from services.outreach.playbooks.steps.registry import (
    REGISTRY,
    ParsedSteps,
    StepBase,
    StepContext,
    StepOutcome,
    StepType,
    parse_steps,
    register,
)

BUILTIN_RUNNERS = (flow, send, open_engagement)  # imported for their registrations

__all__ = [
    "REGISTRY",
    "BranchStep",
    "EndStep",
    "ParsedSteps",
    "SendStep",
    "StepBase",
    "StepContext",
    "StepOutcome",
    "StepType",
    "WaitStep",
    "parse_steps",
    "register",
]
