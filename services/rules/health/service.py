"""Customer health: the model (one, versioned and audited like rules) and the scores.

Scoring is set-based: every component's operand is measured for the whole population
through the rules' :class:`~services.rules.evaluation.engine.Measurements` (one query
per distinct operand, shared by components on the same operand), then each account's
points and weighted mean are arithmetic in memory. One account on demand is the same
code over a population of one. Flushes; never commits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from services.rules.evaluation.engine import Measurements
from services.rules.health import repository as repo
from services.rules.language.ast import Metric
from services.rules.language.health import HealthModel, parse_health_model
from services.rules.models import HealthModelVersion
from services.rules.scores import repository as scores
from shared import audit
from shared.errors import NotFound

log = logging.getLogger(__name__)
# The changes every score carries (days back), each against the latest score on or
# before that day and no older than twice as far back.
CHANGES = (7, 30)


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


# ---- scoring -------------------------------------------------------------------


def score_accounts(session: Session, cur: CurrentModel, now: datetime, accounts: list[str] | None = None) -> list[dict[str, Any]]:
    """Today's score of every account (``accounts=None``) or of ``accounts``: the rows
    :func:`services.rules.scores.repository.save` stores, not yet stored."""
    meas = Measurements(session, now, accounts)
    model = cur.model
    rows = meas.rows(with_traits=any(c.measure.label.startswith("account.traits.") for c in model.components))
    measured: dict[str, tuple[dict[str, Any], Any]] = {}
    for c in model.components:
        m = c.measure
        measured[c.id] = meas.metric(m) if isinstance(m, Metric) else (meas.account_field(m), None)
    today = now.date()
    ids = sorted(rows)
    before = {
        days: scores.scores_on_or_before(session, today - timedelta(days=days), today - timedelta(days=2 * days), accounts)
        for days in CHANGES
    }
    out = []
    for a in ids:
        r = rows[a]
        values = {cid: vals.get(a, default) for cid, (vals, default) in measured.items()}
        result = model.score(values, r.segment, r.lifecycle_stage)
        s = result["score"]
        change = {days: (round(s - before[days][a], 1) if s is not None and a in before[days] else None) for days in CHANGES}
        out.append(
            {
                "account_id": a,
                "day": today,
                "score": s,
                "label": result["label"],
                "model_version": cur.version,
                "components": result["components"],
                "change_7d": change[7],
                "change_30d": change[30],
                "scored_at": now,
            }
        )
    return out


def score_account(session: Session, account_id: str, now: datetime) -> dict[str, Any]:
    """Score one account now and store it as today's row (on demand)."""
    cur = require_current(session)
    rows = score_accounts(session, cur, now, [account_id])
    if not rows:
        raise NotFound(f"no account {account_id!r}")
    scores.save(session, rows)
    session.flush()
    return rows[0]


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
