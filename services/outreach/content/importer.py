"""Import resources from a YAML or CSV file (``touchline content import <file>``; the
starter library). All or nothing: every resource is validated first, and if one is
invalid nothing is written and each problem is reported with its source (file and row
or item) and JSON pointer. Otherwise each is created, updated (a new version when its
definition changed) or left unchanged. Flushes; the caller commits.

YAML: a list of resources, each with its ``id``, or a mapping of id to resource.
CSV: a header row naming the fields (``id``, ``kind``, ``title``, ``url``, ...), one
resource per row; a tag list is its values separated by ``;`` (``analytics; finance``);
an empty cell leaves the field at its default.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.outreach.content import service
from services.outreach.content.schemas import ID_PATTERN, TAGS, ResourceIn
from shared.errors import pointer_errors
from shared.limits import yaml_load

MAX_FILE_BYTES = 10 * 1024 * 1024


@dataclass
class ImportOutcome:
    source: str
    resource_id: str | None
    action: str  # created, updated, unchanged, invalid; valid (nothing was written: another was invalid)
    errors: list[dict[str, str]] = field(default_factory=list)


def _bad(source: str, rid: str | None, message: str, pointer: str = "") -> ImportOutcome:
    return ImportOutcome(source, rid, "invalid", [{"pointer": pointer, "message": message}])


def _rows(path: Path, max_depth: int) -> list[tuple[str, Any]] | ImportOutcome:
    """(source, raw item) per resource, or the outcome saying why the file is unreadable."""
    if path.stat().st_size > MAX_FILE_BYTES:
        return _bad(path.name, None, f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return _bad(path.name, None, f"cannot read the file: {exc}")
    return _text_rows(path.name, text, max_depth)


def _text_rows(name: str, text: str, max_depth: int) -> list[tuple[str, Any]] | ImportOutcome:
    """The rows of a file's text; its format is its name's suffix (.yaml, .yml or .csv)."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return _csv_rows(name, text)
    if suffix not in (".yaml", ".yml"):
        return _bad(name, None, "give a .yaml, .yml or .csv file")
    try:
        data = yaml_load(text, max_depth)
    except yaml.YAMLError as exc:
        return _bad(name, None, f"not valid YAML: {exc}")
    if isinstance(data, dict):
        items: list[Any] = [{"id": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    elif isinstance(data, list):
        items = data
    else:
        return _bad(name, None, "a resource file is a list of resources (each with its id) or a mapping of id to resource")
    return [(f"{name}#{i}", item) for i, item in enumerate(items)]


_LIST_FIELDS = set(TAGS)


def _csv_rows(name: str, text: str) -> list[tuple[str, Any]] | ImportOutcome:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "id" not in [f.strip() for f in reader.fieldnames]:
        return _bad(name, None, "the first row names the columns, among them id, kind, title and url")
    out: list[tuple[str, Any]] = []
    for row in reader:
        item: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:  # more cells than columns
                return _bad(f"{name}:{reader.line_num}", None, "the row has more cells than the header has columns")
            key, value = key.strip(), (value or "").strip()
            if not value:
                continue
            if key in _LIST_FIELDS:
                item[key] = [v.strip() for v in re.split(r"[;|]", value) if v.strip()]
            elif key == "enabled":
                item[key] = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(value.lower(), value)
            else:
                item[key] = value
        out.append((f"{name}:{reader.line_num}", item))
    return out


def _validate(source: str, item: Any) -> tuple[str | None, ResourceIn | None, ImportOutcome | None]:
    if not isinstance(item, dict):
        return None, None, _bad(source, None, "a resource is a mapping of fields")
    rid = item.get("id")
    if not isinstance(rid, str) or not re.match(ID_PATTERN, rid):
        return None, None, _bad(source, None, "id is a lower-case slug (letters, digits, . _ -), e.g. first-reports-guide", "/id")
    body = {k: v for k, v in item.items() if k != "id"}
    try:
        return rid, ResourceIn.model_validate(body), None
    except ValidationError as exc:
        return rid, None, ImportOutcome(source, rid, "invalid", pointer_errors(exc))


def import_resources(session: Session, path: Path, *, actor: str, now: datetime, max_depth: int = 32) -> list[ImportOutcome]:
    """Validate every resource in ``path``; then, only if all are valid, save each."""
    return _import(session, path.name, _rows(path, max_depth), actor=actor, now=now)


def import_resources_text(session: Session, name: str, text: str, *, actor: str, now: datetime, max_depth: int = 32) -> list[ImportOutcome]:
    """:func:`import_resources` for a file's text (the console's paste box): ``name``'s
    suffix (.yaml, .yml, .csv) says its format and names its rows in the outcomes."""
    return _import(session, name, _text_rows(name, text, max_depth), actor=actor, now=now)


def _import(session: Session, name: str, rows: list[tuple[str, Any]] | ImportOutcome, *, actor: str, now: datetime) -> list[ImportOutcome]:
    if isinstance(rows, ImportOutcome):
        return [rows]
    outcomes: list[ImportOutcome] = []
    valid: list[tuple[str, ResourceIn, ImportOutcome]] = []
    first_seen: dict[str, str] = {}
    for source, item in rows:
        rid, body, problem = _validate(source, item)
        if problem is None and rid is not None and rid in first_seen:
            problem = _bad(source, rid, f"id {rid!r} is already used by {first_seen[rid]}", "/id")
        if problem is not None:
            outcomes.append(problem)
            continue
        assert rid is not None and body is not None
        first_seen[rid] = source
        outcome = ImportOutcome(source, rid, "valid")
        outcomes.append(outcome)
        valid.append((rid, body, outcome))
    if not rows:
        return [_bad(name, None, "the file holds no resources")]
    if len(valid) < len(outcomes):
        return outcomes  # all or nothing
    for rid, body, outcome in valid:
        _row, outcome.action = service.save(session, rid, body, actor=actor, now=now)
    return outcomes
