"""Scrubbing personal data out of stored JSON and text, for erasure requests.

A value is scrubbed when it *contains* one of the needles (an email address, a name),
case-insensitively: a rendered greeting ("Hi Ada Lovelace") is as much a copy as the
bare trait. Needles shorter than :data:`MIN_NEEDLE` characters are ignored, so a
one-letter name does not wipe unrelated values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ERASED = "erased"
MIN_NEEDLE = 3


def needles_of(values: Iterable[str | None]) -> list[str]:
    """The values worth searching for, lower-cased and de-duplicated."""
    return sorted({v.strip().lower() for v in values if v and len(v.strip()) >= MIN_NEEDLE})


def contains_any(text: str, needles: Iterable[str]) -> bool:
    low = text.lower()
    return any(n in low for n in needles_of(needles))


def scrub(obj: Any, needles: Iterable[str]) -> tuple[Any, bool]:
    """A copy of ``obj`` (JSON-like: dicts, lists, strings, numbers) with every string
    containing a needle replaced by ``"erased"``; and whether anything changed. Keys are
    left alone: they are field names, not data."""
    found = needles_of(needles)
    if not found:
        return obj, False
    return _scrub(obj, found)


def _scrub(obj: Any, needles: list[str]) -> tuple[Any, bool]:
    if isinstance(obj, str):
        low = obj.lower()
        return (ERASED, True) if any(n in low for n in needles) else (obj, False)
    if isinstance(obj, dict):
        changed = False
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            out[k], c = _scrub(v, needles)
            changed |= c
        return (out, True) if changed else (obj, False)
    if isinstance(obj, list | tuple):
        items = [_scrub(v, needles) for v in obj]
        if any(c for _, c in items):
            return [v for v, _ in items], True
        return obj, False
    return obj, False
