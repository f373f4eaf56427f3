"""The starter content (``services/outreach/starter/templates.yaml``,
``playbooks.yaml`` and the content library's ``resources.yaml``) as data. It imports nothing of outreach: the engagement notices
render starter templates, while seeding (:mod:`services.outreach.starter`) imports the
playbooks package, which imports engagements for the ``open_engagement`` step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

STARTER_DIR = Path(__file__).parent / "starter"


def starter_templates() -> dict[str, dict[str, Any]]:
    templates: dict[str, dict[str, Any]] = yaml.safe_load((STARTER_DIR / "templates.yaml").read_text())
    return templates


def starter_playbooks() -> dict[str, dict[str, Any]]:
    playbooks: dict[str, dict[str, Any]] = yaml.safe_load((STARTER_DIR / "playbooks.yaml").read_text())
    return playbooks


def starter_resources() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = yaml.safe_load((STARTER_DIR / "resources.yaml").read_text())
    return resources
