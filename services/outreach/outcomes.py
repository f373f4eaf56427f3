"""Outreach's published module: what other services may know about outreach's
outcomes. Keep it small; everything else in outreach is private to it.

- :func:`signals_with_decision`: which signals outreach has recorded a decision for
  (the rules service's orphan sweeper republishes the others).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.outreach.models import OutreachDecision

DECISIONS = ("enrolled", "held_out", "skipped", "no_matching_playbook")
_CHUNK = 900


def signals_with_decision(session: Session, signal_ids: Iterable[str]) -> set[str]:
    """The subset of ``signal_ids`` that have an outreach decision."""
    ids = sorted(set(signal_ids))
    out: set[str] = set()
    for i in range(0, len(ids), _CHUNK):
        out.update(session.scalars(select(OutreachDecision.signal_id).where(OutreachDecision.signal_id.in_(ids[i : i + _CHUNK]))))
    return out
