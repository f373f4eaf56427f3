"""Import rules from YAML files (``touchline rules import``, ``touchline demo``): a file
holds one rule or a list of rules. Each is created, or updated (a new version only if
its definition changed). A file that is not valid YAML, or nests deeper than
``max_depth`` (TOUCHLINE_MAX_JSON_DEPTH, as the API and the console refuse), is one
``invalid`` outcome with the reason, never a traceback. Flushes; the caller commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from services.rules.language import RuleValidationError
from services.rules.rules import repository as repo
from services.rules.rules import service
from shared.limits import yaml_load

STARTER_DIR = Path(__file__).resolve().parent.parent / "starter"


@dataclass
class ImportOutcome:
    source: str
    rule_id: str | None
    action: str  # created, updated, unchanged, invalid
    errors: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class _Unreadable:
    """A file that did not parse: why."""

    message: str


def read_rules(path: Path, max_depth: int) -> list[tuple[str, Any]]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    out: list[tuple[str, Any]] = []
    for f in files:
        try:
            data = yaml_load(f.read_text(encoding="utf-8"), max_depth)
        except yaml.YAMLError as exc:
            out.append((f.name, _Unreadable(f"not valid YAML: {exc}")))
            continue
        items = data if isinstance(data, list) else [data]
        out += [(f"{f.name}#{i}" if len(items) > 1 else f.name, item) for i, item in enumerate(items)]
    return out


def import_rules(
    session: Session,
    path: Path,
    *,
    actor: str,
    now: datetime,
    retention_days: int,
    enable: bool | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    max_depth: int = 32,
) -> list[ImportOutcome]:
    outcomes: list[ImportOutcome] = []
    items = read_rules(path, max_depth)
    for source, item in items:
        if progress:
            progress(len(outcomes), len(items), source)
        if isinstance(item, _Unreadable):
            outcomes.append(ImportOutcome(source, None, "invalid", [{"pointer": "", "message": item.message}]))
            continue
        try:
            definition, enabled = service.parse(item, retention_days)
        except RuleValidationError as exc:
            outcomes.append(ImportOutcome(source, item.get("id") if isinstance(item, dict) else None, "invalid", exc.errors))
            continue
        enabled = enable if enable is not None else enabled
        existing = repo.get_rule(session, definition.id)
        if existing is None or existing.deleted_at is not None:
            service.create(session, definition, enabled, actor, now)
            outcomes.append(ImportOutcome(source, definition.id, "created"))
        else:
            before = (existing.current_version, existing.enabled)
            rule = service.update(session, definition.id, definition, enabled, actor, now)
            action = "unchanged" if (rule.current_version, rule.enabled) == before else "updated"
            outcomes.append(ImportOutcome(source, definition.id, action))
    if progress:
        progress(len(outcomes), len(items), "done")
    return outcomes
