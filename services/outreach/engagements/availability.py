"""Whether a CSM can take an engagement now: away windows, the active flag, and the
segments and skills a CSM covers. A CSM's ``segments`` name account segments (the
account's ``segment``, as the engagement recorded it when it opened) or named segments
(docs/segments.md: the account a member now), in one list.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from services.outreach.models import Csm, Engagement


def is_away(csm: Csm, now: datetime) -> bool:
    if csm.away_from is None and csm.away_until is None:
        return False
    return (csm.away_from is None or csm.away_from <= now) and (csm.away_until is None or now < csm.away_until)


def available(csm: Csm, now: datetime) -> bool:
    return bool(csm.active) and not is_away(csm, now)


def covers(csm: Csm, e: Engagement, named: Collection[str] = ()) -> bool:
    """Empty segments or skills on a CSM mean "any". ``named``: the named segments the
    engagement's account is in now (the caller reads them, once for a whole pass)."""
    if csm.segments and e.segment not in csm.segments and not any(s in csm.segments for s in named):
        return False
    if csm.skills and (e.skill or e.goal) not in csm.skills:
        return False
    return True
