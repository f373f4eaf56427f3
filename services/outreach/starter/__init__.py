"""Starter templates, playbooks and content library (``templates.yaml``,
``playbooks.yaml``, ``resources.yaml``), added by ``touchline run`` and ``touchline
seed-outreach`` when missing; never overwritten."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from services.outreach.content import repository as content_repo
from services.outreach.content import service as content_service
from services.outreach.content.schemas import ResourceIn
from services.outreach.playbooks import repository as playbook_repo
from services.outreach.playbooks import service as playbook_service
from services.outreach.playbooks.schemas import PlaybookDefinition
from services.outreach.starter_content import starter_playbooks, starter_resources, starter_templates
from services.outreach.templates import repository as template_repo
from services.outreach.templates import service as template_service
from services.outreach.templates.schemas import TemplateIn
from shared.settings import Settings

ACTOR = "system:starter"
__all__ = ["ACTOR", "seed_starter_content", "starter_playbooks", "starter_resources", "starter_templates"]


def seed_starter_content(session: Session, settings: Settings, now: datetime, enable_playbooks: bool = True) -> list[str]:
    created = []
    for tid, body in starter_templates().items():
        if template_repo.get(session, tid) is None:
            template_service.save(session, tid, TemplateIn(**body), settings=settings, actor=ACTOR, now=now)
            created.append(f"template {tid}")
    for rid, resource in starter_resources().items():
        if content_repo.get(session, rid) is None:
            content_service.save(session, rid, ResourceIn(**resource), actor=ACTOR, now=now)
            created.append(f"resource {rid}")
    for pid, body in starter_playbooks().items():
        if playbook_repo.get_head(session, pid) is None:
            definition = PlaybookDefinition.model_validate({**body, "enabled": enable_playbooks})
            playbook_service.save(session, pid, definition, actor=ACTOR, now=now)
            created.append(f"playbook {pid}")
    return created
