"""Every query on rules, their versions and their audit trail."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.rules.models import Rule, RuleVersion
from shared import audit
from shared.models import AuditRecord


def get_rule(session: Session, rule_id: str, *, for_update: bool = False) -> Rule | None:
    q = select(Rule).where(Rule.id == rule_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.scalar(q)


def get_version(session: Session, rule_id: str, version: int) -> RuleVersion | None:
    return session.get(RuleVersion, (rule_id, version))


def list_versions(session: Session, rule_id: str, *, after: int | None = None, limit: int | None = None) -> list[RuleVersion]:
    q = select(RuleVersion).where(RuleVersion.rule_id == rule_id).order_by(RuleVersion.version).limit(limit)
    if after is not None:
        q = q.where(RuleVersion.version > after)
    return list(session.scalars(q))


def list_rules(
    session: Session,
    *,
    kind: str | None,
    enabled: bool | None,
    trigger_type: str | None,
    include_deleted: bool,
    after: str | None,
    limit: int,
) -> list[Rule]:
    q = select(Rule).order_by(Rule.id).limit(limit)
    if kind:
        q = q.where(Rule.kind == kind)
    if enabled is not None:
        q = q.where(Rule.enabled.is_(enabled))
    if trigger_type:
        q = q.where(Rule.trigger_type == trigger_type)
    if not include_deleted:
        q = q.where(Rule.deleted_at.is_(None))
    if after:
        q = q.where(Rule.id > after)
    return list(session.scalars(q))


def fingerprint(session: Session) -> tuple[int, int]:
    """Changes whenever any rule changes (each change bumps that rule's revision)."""
    n, total = session.execute(select(func.count(), func.coalesce(func.sum(Rule.revision), 0)).select_from(Rule)).one()
    return int(n), int(total)


def enabled_rules(session: Session, trigger_type: str) -> list[tuple[Rule, RuleVersion]]:
    q = (
        select(Rule, RuleVersion)
        .join(RuleVersion, (RuleVersion.rule_id == Rule.id) & (RuleVersion.version == Rule.current_version))
        .where(Rule.enabled.is_(True), Rule.deleted_at.is_(None), Rule.trigger_type == trigger_type)
        .order_by(Rule.id)
    )
    return [(r, v) for r, v in session.execute(q)]


def audit_for(session: Session, rule_id: str, *, after: int | None = None, limit: int | None = None) -> list[AuditRecord]:
    return audit.history(session, "rule", rule_id, after=after, limit=limit)
