"""Playbook steps: the registry (:mod:`.registry`), the built-in definitions
(:mod:`.definitions`) and their runners (:mod:`.flow`, :mod:`.send`, :mod:`.recommend`,
:mod:`.survey`, :mod:`.open_engagement`), which register themselves when this package is imported. The engine imports this package; nothing
here imports the engine."""

from __future__ import annotations

from services.outreach.playbooks.steps import flow, open_engagement, recommend, send, survey
from services.outreach.playbooks.steps.definitions import BranchStep, EndStep, RecommendStep, SendStep, WaitStep
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

BUILTIN_RUNNERS = (flow, send, recommend, survey, open_engagement)  # imported for their registrations

__all__ = [
    "REGISTRY",
    "BranchStep",
    "EndStep",
    "ParsedSteps",
    "RecommendStep",
    "SendStep",
    "StepBase",
    "StepContext",
    "StepOutcome",
    "StepType",
    "WaitStep",
    "parse_steps",
    "register",
]
