"""Authoring rules: create, change (every change is a new version), enable, disable,
soft-delete, each with an audit record of who did it. Flushes; never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.rules.language import RuleDefinition, RuleValidationError, parse_rule
from services.rules.language.ast import leaves
from services.rules.models import Rule, RuleVersion
from services.rules.rules import repository as repo
from shared import audit
from shared.errors import Conflict, NotFound


@dataclass(frozen=True)
class LoadedRule:
    """An enabled rule as evaluation sees it: the parsed definition of its current version."""

    id: str
    version: int
    definition: RuleDefinition
    needs_event: bool

    @property
    def name(self) -> str:
        return self.definition.name


def load(rule: Rule, version: RuleVersion, retention_days: int) -> LoadedRule:
    # Stored definitions were validated when written; a lower retention since then must
    # not make them unloadable, so parse with no window limit.
    definition = parse_rule(version.definition, retention_days=max(retention_days, 100_000))
    return LoadedRule(rule.id, version.version, definition, any(leaf.needs_event for leaf in leaves(definition.condition)))


def load_enabled(session: Session, trigger_type: str, retention_days: int) -> list[LoadedRule]:
    return [load(r, v, retention_days) for r, v in repo.enabled_rules(session, trigger_type)]


def parse(payload: Any, retention_days: int, rule_id: str | None = None) -> tuple[RuleDefinition, bool | None]:
    """Validate a payload; ``enabled`` may ride along on create and update."""
    enabled = None
    if isinstance(payload, dict) and "enabled" in payload:
        payload = dict(payload)
        enabled = payload.pop("enabled")
        if not isinstance(enabled, bool):
            raise RuleValidationError([{"pointer": "/enabled", "message": "enabled is true or false"}])
    return parse_rule(payload, retention_days=retention_days, rule_id=rule_id), enabled


def _audit(session: Session, actor: str, action: str, rule: Rule, now: datetime, **details: Any) -> None:
    audit.record(
        session, actor=actor, action=action, object_type="rule", object_id=rule.id, now=now, version=rule.current_version, details=details
    )


def _apply_head(rule: Rule, d: RuleDefinition) -> None:
    rule.name, rule.kind, rule.severity = d.name, d.kind, d.severity
    rule.trigger_type = "schedule" if d.trigger.scheduled else "events"
    rule.trigger_events = list(d.trigger.events)


def get(session: Session, rule_id: str, *, include_deleted: bool = True) -> Rule:
    rule = repo.get_rule(session, rule_id)
    if rule is None or (rule.deleted_at is not None and not include_deleted):
        raise NotFound(f"no rule {rule_id!r}; list rules with GET /v1/rules")
    return rule


def current_definition(session: Session, rule: Rule) -> dict[str, Any]:
    version = repo.get_version(session, rule.id, rule.current_version)
    if version is None:  # versions are never deleted: a broken invariant, not a user error
        raise LookupError(f"rule {rule.id} has no version {rule.current_version}")
    return version.definition


def create(session: Session, definition: RuleDefinition, enabled: bool | None, actor: str, now: datetime) -> Rule:
    existing = repo.get_rule(session, definition.id, for_update=True)
    if existing is not None and existing.deleted_at is None:
        raise Conflict(f"rule {definition.id!r} exists; change it with PUT /v1/rules/{definition.id} (a new version)")
    if existing is not None:  # re-creating a deleted id continues its version history
        rule = existing
        rule.current_version += 1
        rule.deleted_at = None
        rule.revision += 1
    else:
        rule = Rule(id=definition.id, current_version=1, revision=1, created_at=now, created_by=actor)
        session.add(rule)
    _apply_head(rule, definition)
    rule.enabled = bool(enabled)
    rule.updated_at, rule.updated_by = now, actor
    session.add(
        RuleVersion(rule_id=rule.id, version=rule.current_version, definition=definition.to_dict(), created_at=now, created_by=actor)
    )
    session.flush()
    _audit(session, actor, "create", rule, now, enabled=rule.enabled)
    session.flush()
    return rule


def update(session: Session, rule_id: str, definition: RuleDefinition, enabled: bool | None, actor: str, now: datetime) -> Rule:
    rule = repo.get_rule(session, rule_id, for_update=True)
    if rule is None or rule.deleted_at is not None:
        raise NotFound(f"no rule {rule_id!r}; create it with POST /v1/rules")
    changed = definition.to_dict() != current_definition(session, rule)
    if changed:
        before = current_definition(session, rule)
        rule.current_version += 1
        _apply_head(rule, definition)
        session.add(
            RuleVersion(rule_id=rule.id, version=rule.current_version, definition=definition.to_dict(), created_at=now, created_by=actor)
        )
        _audit(
            session,
            actor,
            "update",
            rule,
            now,
            changed_fields=sorted(k for k in set(before) | set(definition.to_dict()) if before.get(k) != definition.to_dict().get(k)),
        )
    if enabled is not None and enabled != rule.enabled:
        rule.enabled = enabled
        _audit(session, actor, "enable" if enabled else "disable", rule, now)
        changed = True
    if changed:
        rule.revision += 1
        rule.updated_at, rule.updated_by = now, actor
    session.flush()
    return rule


def set_enabled(session: Session, rule_id: str, enabled: bool, actor: str, now: datetime) -> Rule:
    rule = repo.get_rule(session, rule_id, for_update=True)
    if rule is None or rule.deleted_at is not None:
        raise NotFound(f"no rule {rule_id!r}")
    if rule.enabled != enabled:
        rule.enabled = enabled
        rule.revision += 1
        rule.updated_at, rule.updated_by = now, actor
        _audit(session, actor, "enable" if enabled else "disable", rule, now)
        session.flush()
    return rule


def delete(session: Session, rule_id: str, actor: str, now: datetime) -> Rule:
    rule = repo.get_rule(session, rule_id, for_update=True)
    if rule is None or rule.deleted_at is not None:
        raise NotFound(f"no rule {rule_id!r}")
    rule.deleted_at = now
    rule.enabled = False
    rule.revision += 1
    rule.updated_at, rule.updated_by = now, actor
    _audit(session, actor, "delete", rule, now)
    session.flush()
    return rule
