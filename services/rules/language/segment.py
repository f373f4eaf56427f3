"""Named segments in the rule language (docs/segments.md): a saved audience, defined by
the same account filters (``audience``) and account-level conditions (``condition``:
traits, lifecycle stage, metrics, health) that rules use. Pure, like the rest of the
language: parse (validate, with a JSON pointer per problem) and write back in
canonical form (parse -> to_dict -> parse is the identity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ast import SEGMENTS_FIELD, Audience, Condition
from .parser import DEFAULT_RETENTION_DAYS, SLUG, RuleValidationError, _Parser, pointer

SEGMENT_KEYS = ("id", "name", "description", "audience", "condition")
# A segment's signals carry rule_id "segment:<id>" (rule ids are slugs, so they never collide).
SIGNAL_PREFIX = "segment:"
ENTERED, LEFT = "segment_entered", "segment_left"


@dataclass(frozen=True)
class SegmentDefinition:
    id: str
    name: str
    description: str
    audience: Audience
    condition: Condition

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "audience": self.audience.to_dict(),
            "condition": self.condition.to_dict(),
        }


def parse_segment(obj: Any, *, retention_days: int = DEFAULT_RETENTION_DAYS, segment_id: str | None = None) -> SegmentDefinition:
    """Parse and validate a segment. ``segment_id`` (from the URL) wins over the body's.
    The condition is account-level (no ``event.*``, ``user.*`` or user-scoped metrics:
    a segment holds accounts, whatever event arrived)."""
    p = _Parser(retention_days, event_context=False)
    if not isinstance(obj, dict):
        raise RuleValidationError([{"pointer": "", "message": "a segment is a JSON object; see docs/segments.md for an example"}])
    p.unknown_keys(obj, SEGMENT_KEYS, "", "a segment")
    sid = obj.get("id", segment_id)
    if segment_id is not None and "id" in obj and obj["id"] != segment_id:
        p.err("/id", f"the body's id {obj['id']!r} differs from the URL's {segment_id!r}; remove it or make them equal")
    if not isinstance(sid, str) or not SLUG.match(sid):
        p.err("/id", 'id is a slug of lowercase letters, digits, "-" and "_" (at most 64), e.g. "fintech-smb"')
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        p.err("/name", 'name is required: a short phrase CS Ops recognise, e.g. "Fintech SMB" (at most 200 characters)')
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        p.err("/description", "description is text of at most 4000 characters")
    audience = p.audience(obj.get("audience"), "/audience")
    condition = None
    if "condition" not in obj:
        p.err(
            "/condition",
            'add a condition, e.g. {"field": "account.traits.industry", "op": "==", "value": "fintech"}; '
            'for every account of the audience: {"field": "account.id", "op": "exists"}',
        )
    elif p.within_limits(obj["condition"], "/condition"):
        condition = p.node(obj["condition"], "/condition")
        for ptr in _segment_fields(obj["condition"], "/condition"):
            p.err(
                pointer(ptr, "field"),
                "a segment cannot be defined by segments (account.segments): membership is refreshed for all segments "
                "at once, so it would lag one refresh behind; repeat the other segment's conditions instead",
            )
    if p.errors:
        raise RuleValidationError(p.errors)
    assert isinstance(sid, str) and isinstance(name, str) and condition is not None  # each missing part recorded an error
    return SegmentDefinition(id=sid, name=name.strip(), description=description, audience=audience, condition=condition)


def _segment_fields(obj: Any, ptr: str) -> list[str]:
    """The pointers of the ``account.segments`` predicates of a raw (already size-checked) condition."""
    if not isinstance(obj, dict):
        return []
    out = []
    for key in ("all", "any"):
        if isinstance(obj.get(key), list):
            for i, child in enumerate(obj[key]):
                out += _segment_fields(child, pointer(ptr, key, i))
    if "not" in obj:
        out += _segment_fields(obj["not"], pointer(ptr, "not"))
    if obj.get("field") == ".".join(SEGMENTS_FIELD):
        out.append(ptr)
    return out
