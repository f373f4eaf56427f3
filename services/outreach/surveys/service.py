"""Survey answers: recording one (the contact's latest answer wins) and a survey's results.

**An answer** is a row per survey and contact (:mod:`.repository`): a second answer
replaces the first, the same answer again (a replayed request, a second click on the
same score) writes nothing. A row that changed puts a ``survey_answered`` event in the
outbox in the same transaction (shared/outbox.py; the rules worker's relay publishes it
to ``product.events``, validated by ingest's door as any product event), so it starts
playbooks through rules, and counts in rollups and health:

    {"event_id": "survey-<40 hex>", "name": "survey_answered", "account_id", "user_id",
     "properties": {"survey_id", "scale", "score", "comment", "message_id", "playbook_id"}}

The event id is stable per survey, contact and answer: a contact who changes their
answer back to one they gave before sends the same id, which ingest keeps once (the row
still says which answer is the latest). Results read the rows, never the events.

**Results**: promoters (9-10), passives (7-8) and detractors (0-6) and the NPS (the
percentage of promoters minus that of detractors) of an NPS survey; satisfied (4-5) and
the CSAT (their percentage) of a CSAT survey; overall and by UTC day of each contact's
latest answer, and by named segment (docs/segments.md: the segments each answering
account is in now; an account in two segments counts in both).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.surveys import repository as repo
from services.outreach.surveys.links import SCALES
from services.rules import interface as rules
from shared import outbox
from shared.settings import Settings

EVENT_NAME = "survey_answered"
MAX_COMMENT = 2000


class Answer:
    """A score (and comment) for the survey a token names."""

    def __init__(self, data: dict[str, Any], score: int, comment: str):
        self.survey_id: str = data["s"]
        self.scale: str = data["k"]
        self.account_id: str = data["a"]
        self.user_id: str = data["u"]
        self.message_id: str | None = data.get("m")
        self.playbook_id: str | None = data.get("p")
        self.score, self.comment = score, comment.strip()[:MAX_COMMENT]


def valid_score(scale: str, score: int) -> bool:
    low, high = SCALES[scale]
    return low <= score <= high


def event_id(a: Answer) -> str:
    key = f"{a.survey_id}\x1f{a.account_id}\x1f{a.user_id}\x1f{a.score}\x1f{a.comment}"
    return "survey-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def record_answer(session: Session, settings: Settings, a: Answer, *, now: datetime) -> bool:
    """Save the answer; True if it was new or changed the contact's earlier one (and its
    event is in the outbox). Only flushes."""
    changed = repo.save_answer(
        session,
        {
            "survey_id": a.survey_id,
            "account_id": a.account_id,
            "user_id": a.user_id,
            "scale": a.scale,
            "score": a.score,
            "comment": a.comment,
            "message_id": a.message_id,
            "playbook_id": a.playbook_id,
            "answered_at": now,
        },
    )
    if changed:
        properties = {
            "survey_id": a.survey_id,
            "scale": a.scale,
            "score": a.score,
            "comment": a.comment,
            "message_id": a.message_id,
            "playbook_id": a.playbook_id,
        }
        event = {
            "event_id": event_id(a),
            "account_id": a.account_id,
            "user_id": a.user_id,
            "name": EVENT_NAME,
            "timestamp": now.isoformat(),
            "properties": {k: v for k, v in properties.items() if v is not None},
        }
        topic, key, value = ingest.encode_event(settings, event, now=now)
        outbox.enqueue_many(session, [{"topic": topic, "key": key, "value": value}], now)
    return changed


def tally(scale: str, scores: list[int]) -> dict[str, Any]:
    n = len(scores)
    if scale == "nps":
        promoters = sum(s >= 9 for s in scores)
        detractors = sum(s <= 6 for s in scores)
        passives = n - promoters - detractors
        nps = round(100 * (promoters - detractors) / n, 1) if n else None
        return {"answered": n, "promoters": promoters, "passives": passives, "detractors": detractors, "nps": nps}
    satisfied = sum(s >= 4 for s in scores)
    return {"answered": n, "satisfied": satisfied, "csat": round(100 * satisfied / n, 1) if n else None}


def results(session: Session, survey_id: str, *, start: date, end: date, segment: str | None = None) -> dict[str, Any] | None:
    """A survey's results over the UTC days [start, end], overall, by day and by named
    segment (the segments the answering accounts are in now: docs/segments.md); with
    ``segment``, only the answers of accounts in it now. None if nobody answered it ever."""
    scale = repo.scale_of(session, survey_id)
    if scale is None:
        return None
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    try:
        hi = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    except OverflowError:  # end is 9999-12-31
        hi = datetime.max.replace(tzinfo=UTC)
    rows = repo.answers_between(session, survey_id, lo, hi)
    segments_of = rules.segment_memberships(session, {account for _at, _score, account in rows})  # one statement
    if segment is not None:
        rows = [row for row in rows if segment in segments_of.get(row[2], ())]
    by_day: dict[date, list[int]] = {}
    by_segment: dict[str, list[int]] = {}
    for at, score, account in rows:
        by_day.setdefault(at.date(), []).append(score)
        for seg in segments_of.get(account, ()):
            by_segment.setdefault(seg, []).append(score)
    scores = [score for _at, score, _account in rows]
    low, high = SCALES[scale]
    counts = Counter(scores)
    return {
        "survey_id": survey_id,
        "scale": scale,
        "start": start.isoformat(),
        "end": end.isoformat(),
        **tally(scale, scores),
        "scores": {str(n): counts.get(n, 0) for n in range(low, high + 1)},
        "by_day": [{"day": d.isoformat(), **tally(scale, s)} for d, s in sorted(by_day.items())],
        "by_segment": [{"segment": seg, **tally(scale, s)} for seg, s in sorted(by_segment.items())],
        **({"segment": segment} if segment is not None else {}),
    }
