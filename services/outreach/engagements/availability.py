"""Whether a CSM can take an engagement now: away windows, the active flag, and the
segments and skills a CSM covers.
"""

from __future__ import annotations

from datetime import datetime

from services.outreach.models import Csm, Engagement


def is_away(csm: Csm, now: datetime) -> bool:
    if csm.away_from is None and csm.away_until is None:
        return False
    return (csm.away_from is None or csm.away_from <= now) and (csm.away_until is None or now < csm.away_until)


def available(csm: Csm, now: datetime) -> bool:
    return bool(csm.active) and not is_away(csm, now)


def covers(csm: Csm, e: Engagement) -> bool:
    """Empty segments or skills on a CSM mean "any"."""
    if csm.segments and e.segment not in csm.segments:
        return False
    if csm.skills and (e.skill or e.goal) not in csm.skills:
        return False
    return True
