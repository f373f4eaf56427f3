"""What a resource and a survey achieved (issue 22, item 7): how often it was sent, how
many contacts clicked or answered, and the conversion of the enrolments that were sent
it against the held-out enrolments that would have been, with the lift and its 95%
interval (the playbook report's arithmetic, :func:`playbook_service.lift_of`), overall,
per playbook step that sent it and per named segment (membership as of the enrolment,
as the playbook report by segment: :func:`playbook_service.lift_by_segment`).

**The groups.** An enrolment is *treated* when it is not held out and a message of its
carrying the resource (``messages.resource_id``) or the survey (``payload.survey.id``)
was sent; *held out* when it is held out and the step recorded it as ``held_out`` with
the same resource or survey (the recommend step records the resource a held-out contact
would have received; the survey step the survey). An enrolment counts once however many
of its contacts were sent it. Set-based: one statement each for the counts, the groups,
the groups per step and the enrolments split by segment (the newest
:data:`SEGMENT_ENROLMENTS`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, distinct, func, or_, select
from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.content import service as content
from services.outreach.delivery import repository as delivery
from services.outreach.links.service import EVENT_NAME as CLICK_EVENT
from services.outreach.models import Enrollment, Message, SurveyAnswer
from services.outreach.playbooks import service as playbook_service
from services.outreach.playbooks.schemas import GroupStats, SegmentLiftOut
from services.rules import interface as rules
from shared.errors import NotFound, Unprocessable

SEGMENT_ENROLMENTS = 100_000
SEGMENTS_PER_PAGE = 20


class StepLift(BaseModel):
    playbook_id: str | None
    step_id: str
    treated: GroupStats
    holdout: GroupStats
    lift: float | None = Field(None, description="treated minus holdout conversion rate (absolute)")
    relative_lift: float | None = Field(None, description="lift / holdout conversion rate")
    confidence_interval: list[float] | None = Field(None, description="95% CI of the lift (Newcombe hybrid score)")


class MeasuredReport(BaseModel):
    sent: int = Field(description="messages sent (the list: GET /v1/messages?state=sent&resource_id=... or &survey_id=...)")
    treated: GroupStats = Field(description="enrolments not held out that were sent it")
    holdout: GroupStats = Field(description="held-out enrolments that would have been sent it")
    lift: float | None = Field(None, description="treated minus holdout conversion rate (absolute)")
    relative_lift: float | None = Field(None, description="lift / holdout conversion rate")
    confidence_interval: list[float] | None = Field(None, description="95% CI of the lift (Newcombe hybrid score)")
    by_step: list[StepLift] = Field(description="per playbook step that sent it")
    enrolments: int = Field(description="the enrolments split by segment (the newest, up to 100,000)")
    by_segment: list[SegmentLiftOut] = Field(description="per named segment, its members as of their enrolment")
    segments_next_cursor: str | None = Field(None, description="more segments: pass it as segment_cursor")
    method: Literal["newcombe-wilson-95"] = "newcombe-wilson-95"


class ResourceSegment(SegmentLiftOut):
    sent: int = Field(description="its messages sent to this segment's treated enrolments (members as of their enrolment)")
    clicked: int = Field(description="distinct contacts who clicked a tracked link of those messages")


class SurveySegment(SegmentLiftOut):
    sent: int = Field(description="its messages sent to this segment's treated enrolments (members as of their enrolment)")
    answered: int = Field(description="distinct contacts whose recorded answer came from one of those messages")


class ResourceReport(MeasuredReport):
    resource_id: str
    clicked: int = Field(description="distinct contacts who clicked a tracked link of its messages (link_clicked events, ever)")
    by_segment: list[ResourceSegment] = Field(description="per named segment, its members as of their enrolment")  # type: ignore[assignment]


class SurveyReport(MeasuredReport):
    survey_id: str
    answered: int = Field(description="distinct contacts whose answer is recorded (a changed answer counts once)")
    by_segment: list[SurveySegment] = Field(description="per named segment, its members as of their enrolment")  # type: ignore[assignment]


def _carrying(kind: str, item_id: str) -> Any:
    if kind == "resource":
        return Message.resource_id == item_id
    return delivery.asks_survey(item_id)


def _pairs(carrying: Any) -> list[Any]:
    """The join and the filter: a message carrying it, of a treated enrolment that was
    sent it or of a held-out one that was held out of it."""
    return [
        carrying,
        or_(
            and_(Message.state == "sent", Enrollment.holdout.is_(False)),
            and_(Message.state == "skipped", Message.skip_reason == "held_out", Enrollment.holdout.is_(True)),
        ),
    ]


def _groups(rows: Any) -> dict[bool, dict[str, int]]:
    groups = {True: {"n": 0, "converted": 0}, False: {"n": 0, "converted": 0}}
    for holdout, status, n in rows:
        groups[bool(holdout)]["n"] += n
        if status == "converted":
            groups[bool(holdout)]["converted"] += n
    return groups


def _segments(session: Session, segment_ids: list[str] | None, cursor: str | None) -> tuple[list[str], str | None]:
    """The segments asked (1 to 20, each must exist), else a page of every segment."""
    if segment_ids:
        segment_ids = list(dict.fromkeys(segment_ids))
        if len(segment_ids) > SEGMENTS_PER_PAGE:
            raise Unprocessable(f"name at most {SEGMENTS_PER_PAGE} segments", code="validation_error")
        missing = [s for s in segment_ids if s not in rules.existing_segments(session, segment_ids)]
        if missing:
            raise Unprocessable(
                f"no segment {', '.join(repr(s) for s in missing)}; list them with GET /v1/segments", code="unknown_segment"
            )
        return segment_ids, None
    page = [s.id for s in rules.list_segments(session, after=cursor, limit=SEGMENTS_PER_PAGE + 1)]
    more = len(page) > SEGMENTS_PER_PAGE
    page = page[:SEGMENTS_PER_PAGE]
    return page, page[-1] if more else None


def _measure(session: Session, kind: str, item_id: str, segment_ids: list[str] | None, cursor: str | None) -> dict[str, Any]:
    carrying = _carrying(kind, item_id)
    where = _pairs(carrying)

    def joined(q: Any) -> Any:
        return q.select_from(Message).join(Enrollment, Enrollment.id == Message.enrollment_id).where(*where)

    sent = int(session.scalar(select(func.count()).select_from(Message).where(carrying, Message.state == "sent")) or 0)
    overall = _groups(
        session.execute(
            joined(select(Enrollment.holdout, Enrollment.status, func.count(distinct(Enrollment.id)))).group_by(
                Enrollment.holdout, Enrollment.status
            )
        )
    )
    treated, held = playbook_service.group_stats(overall[False]), playbook_service.group_stats(overall[True])
    lift, rel, ci = playbook_service.lift_of(treated, held)
    per_step: dict[tuple[str | None, str], list[tuple[bool, str, int]]] = {}
    step_rows = session.execute(
        joined(
            select(Message.playbook_id, Message.step_id, Enrollment.holdout, Enrollment.status, func.count(distinct(Enrollment.id)))
        ).group_by(Message.playbook_id, Message.step_id, Enrollment.holdout, Enrollment.status)
    )
    for playbook_id, step_id, holdout, status, n in step_rows:
        per_step.setdefault((playbook_id, step_id), []).append((holdout, status, n))
    by_step = []
    for (playbook_id, step_id), rows in sorted(per_step.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        g = _groups(rows)
        s_treated, s_held = playbook_service.group_stats(g[False]), playbook_service.group_stats(g[True])
        s_lift, s_rel, s_ci = playbook_service.lift_of(s_treated, s_held)
        by_step.append(
            StepLift(
                playbook_id=playbook_id,
                step_id=step_id,
                treated=s_treated,
                holdout=s_held,
                lift=s_lift,
                relative_lift=s_rel,
                confidence_interval=s_ci,
            )
        )
    segment_ids, next_cursor = _segments(session, segment_ids, cursor)
    enrolments: list[tuple[str, datetime, bool, str]] = []
    by_segment: list[SegmentLiftOut] = []
    sent_to: dict[str, set[str]] = {}  # segment -> the messages sent to its treated enrolments
    if segment_ids:
        q = joined(select(Enrollment.account_id, Enrollment.enrolled_at, Enrollment.holdout, Enrollment.status, Enrollment.id)).distinct()
        q = q.order_by(Enrollment.enrolled_at.desc(), Enrollment.id.desc()).limit(SEGMENT_ENROLMENTS)
        split = list(session.execute(q))
        enrolments = [(a, at, bool(h), st) for a, at, h, st, _id in split]
        members = playbook_service.members_at_enrolment(session, segment_ids, [(a, at) for a, at, *_ in enrolments])
        by_segment = playbook_service.lift_by_segment(session, segment_ids, enrolments, members)
        sent_messages = session.execute(
            select(Message.id, Message.enrollment_id)
            .join(Enrollment, Enrollment.id == Message.enrollment_id)
            .where(carrying, Message.state == "sent", Enrollment.holdout.is_(False))
        ).all()
        for sid in segment_ids:
            treated_in = {row[4] for row, member in zip(split, members[sid], strict=True) if member and not row[2]}
            sent_to[sid] = {mid for mid, eid in sent_messages if eid in treated_in}
    return {
        "sent": sent,
        "treated": treated,
        "holdout": held,
        "lift": lift,
        "relative_lift": rel,
        "confidence_interval": ci,
        "by_step": by_step,
        "enrolments": len(enrolments),
        "by_segment": by_segment,
        "segments_next_cursor": next_cursor,
        "sent_to": sent_to,
    }


def resource_report(session: Session, resource_id: str, segment_ids: list[str] | None = None, cursor: str | None = None) -> ResourceReport:
    content.get_or_404(session, resource_id)
    # A click comes after the first message that carried the resource (rendered with its
    # link): only events received since then, less a day for the clocks of two machines,
    # are read (none at all if no message ever carried it).
    first = session.scalar(select(func.min(Message.created_at)).where(Message.resource_id == resource_id))
    since = first - timedelta(days=1) if first else None
    clicked = ingest.contacts_where(session, CLICK_EVENT, [(("resource_id",), [resource_id])], since) if since else 0
    out = _measure(session, "resource", resource_id, segment_ids, cursor)
    sent_to: dict[str, set[str]] = out.pop("sent_to")
    # Per segment, the contacts who clicked a link of a message it was sent (each click names its message).
    clicks = (
        ingest.contact_values_where(session, CLICK_EVENT, [(("resource_id",), [resource_id])], since, ("message_id",))
        if since and sent_to
        else set()
    )
    out["by_segment"] = [
        ResourceSegment(
            **lift.model_dump(),
            sent=len(sent_to[lift.segment_id]),
            clicked=len({(a, u) for a, u, m in clicks if m in sent_to[lift.segment_id]}),
        )
        for lift in out["by_segment"]
    ]
    return ResourceReport(resource_id=resource_id, clicked=clicked, **out)


def survey_report(session: Session, survey_id: str, segment_ids: list[str] | None = None, cursor: str | None = None) -> SurveyReport:
    out = _measure(session, "survey", survey_id, segment_ids, cursor)
    answered = int(session.scalar(select(func.count()).select_from(SurveyAnswer).where(SurveyAnswer.survey_id == survey_id)) or 0)
    if not answered and not out["sent"] and not out["holdout"].enrolled:
        raise NotFound(f"survey {survey_id!r} was never sent nor answered")
    sent_to: dict[str, set[str]] = out.pop("sent_to")
    # Per segment, the contacts whose recorded answer came from a message it was sent (one answer per contact).
    answers = list(session.scalars(select(SurveyAnswer.message_id).where(SurveyAnswer.survey_id == survey_id))) if sent_to else []
    out["by_segment"] = [
        SurveySegment(
            **lift.model_dump(),
            sent=len(sent_to[lift.segment_id]),
            answered=sum(1 for m in answers if m in sent_to[lift.segment_id]),
        )
        for lift in out["by_segment"]
    ]
    return SurveyReport(survey_id=survey_id, answered=answered, **out)
