"""Customer health: the model (one, versioned and audited like rules), and the starter
model. Scoring measures through the rule engine, so it lives beside it
(:mod:`services.rules.evaluation.health`). Flushes; never commits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from services.rules.health import repository as repo
from services.rules.language.health import HealthModel, parse_health_model
from services.rules.models import HealthModelVersion
from services.rules.scores import repository as scores
from shared import audit
from shared.errors import NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurrentModel:
    version: int
    model: HealthModel
    row: HealthModelVersion


def parse(payload: Any, retention_days: int) -> HealthModel:
    return parse_health_model(payload, retention_days=retention_days)


def current(session: Session) -> CurrentModel | None:
    """The current version of the model, parsed (None: CS Ops have not defined one)."""
    row = repo.current(session)
    if row is None:
        return None
    # Stored definitions were validated when written; a lower retention since must not make them unloadable.
    return CurrentModel(row.version, parse_health_model(row.definition, retention_days=100_000), row)


def at_version(session: Session, version: int) -> CurrentModel | None:
    """Version ``version`` of the model, parsed (the one a day's scoring started with)."""
    row = repo.get_version(session, version)
    if row is None:
        return None
    return CurrentModel(row.version, parse_health_model(row.definition, retention_days=100_000), row)


def require_current(session: Session) -> CurrentModel:
    cur = current(session)
    if cur is None:
        raise NotFound("no health model yet; define one with PUT /v1/health/model (docs/health.md has a starter)")
    return cur


def save(session: Session, model: HealthModel, actor: str, now: datetime) -> tuple[HealthModelVersion, bool]:
    """Store ``model`` as a new version if it differs from the current one: (the current version, whether it changed)."""
    row = repo.current(session)
    definition = model.to_dict()
    if row is not None and row.definition == definition:
        return row, False
    before = row.definition if row is not None else {}
    new = HealthModelVersion(version=(row.version + 1) if row else 1, definition=definition, created_at=now, created_by=actor)
    session.add(new)
    session.flush()
    changed = sorted(k for k in set(before) | set(definition) if before.get(k) != definition.get(k))
    audit.record(
        session,
        actor=actor,
        action="create" if row is None else "update",
        object_type=repo.AUDIT_TYPE,
        object_id=repo.AUDIT_ID,
        now=now,
        version=new.version,
        details={"changed_fields": changed},
    )
    session.flush()
    return new, True


def summary(session: Session, account_id: str, today: date) -> dict[str, Any] | None:
    """The account's current health in brief (``day``, ``score``, ``label``, ``change``:
    ``{"7d", "30d"}``), or None without a current score: what an engagement records
    when it opens, so the CSM sees the account's state and later its change since."""
    row = scores.latest_on_or_before(session, *scores.current_days(today), [account_id]).get(account_id)
    if row is None:
        return None
    return {
        "day": row.day.isoformat(),
        "score": row.score,
        "label": row.label,
        "change": {"7d": row.change_7d, "30d": row.change_30d},
    }


STARTER_MODEL = Path(__file__).resolve().parent / "starter.yaml"


def starter_definition() -> dict[str, Any]:
    """The starter model as a definition (docs/health.md)."""
    data = yaml.safe_load(STARTER_MODEL.read_text(encoding="utf-8"))
    return parse_health_model(data).to_dict()


def install_starter(session: Session, actor: str, now: datetime) -> bool:
    """Save the starter model as version 1 if there is no model yet; True if it did."""
    if repo.current(session) is not None:
        return False
    save(session, parse_health_model(starter_definition()), actor, now)
    return True
