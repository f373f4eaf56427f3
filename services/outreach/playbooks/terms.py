"""The small vocabulary playbook definitions and steps share: durations ("3d") and the
terminal targets a branch may jump to. No imports from the rest of playbooks, so the
schemas and the step package can both use it without importing each other."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Branch targets that are not step ids: end the enrolment as completed, or as converted.
TERMINALS = ("end", "convert")


@lru_cache(maxsize=256)
def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"duration {text!r} must look like 30m, 12h, 3d or 2w")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
