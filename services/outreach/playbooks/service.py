"""Authoring playbooks (versioned like rules) and the playbook report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.ingest import interface as ingest
from services.outreach.content import repository as content_repo
from services.outreach.delivery import repository as delivery_repo
from services.outreach.models import Playbook, PlaybookVersion
from services.outreach.playbooks import engine
from services.outreach.playbooks import repository as repo
from services.outreach.playbooks.schemas import GroupStats, PlaybookDefinition, PlaybookOut, ReportOut, SegmentLiftOut, SegmentReportOut
from services.outreach.playbooks.steps.definitions import RecommendStep, SendStep
from services.outreach.stats import lift_interval
from services.outreach.templates import repository as template_repo
from services.rules import interface as rules
from shared import audit
from shared.errors import NotFound, Unprocessable


def save(session: Session, playbook_id: str, definition: PlaybookDefinition, *, actor: str, now: datetime) -> tuple[Playbook, bool]:
    """Store the definition as a new version if it differs from the current one.
    Running enrolments keep the version they started with. Returns (head, changed)."""
    steps = definition.parsed_steps().steps
    named = sorted({t for s in steps if (t := getattr(s, "template", None))})
    templates = template_repo.get_many(session, named)
    missing = sorted(set(named) - set(templates))
    if missing:
        raise Unprocessable(
            f"the playbook names templates that do not exist: {', '.join(missing)}; create them with PUT /v1/templates/{{id}} first",
            code="unknown_template",
        )
    _check_segments(session, definition)
    fallbacks = {i: s.fallback for i, s in enumerate(steps) if isinstance(s, RecommendStep) and s.fallback}
    known = content_repo.get_many(session, fallbacks.values())
    for i, fallback in fallbacks.items():
        if fallback not in known:
            raise Unprocessable(
                [
                    {
                        "pointer": f"/steps/{i}/fallback",
                        "message": f"no resource {fallback!r} in the content library; add it with PUT /v1/resources/{fallback} first",
                    }
                ],
                code="unknown_resource",
            )
    for i, s in enumerate(steps):
        if not isinstance(s, SendStep) or s.channel == "webhook" or s.template is None:
            continue
        to_owner, audience = "owner" in s.to, templates[s.template].audience
        if to_owner and audience != "internal":
            raise Unprocessable(
                f"/steps/{i}: step {s.id!r} sends the customer template {s.template!r} to the owner, an internal address; "
                "give the owner an internal template (audience: internal, e.g. the starter win-back-owner-brief)",
                code="wrong_audience",
            )
        if not to_owner and audience == "internal":
            raise Unprocessable(
                f"/steps/{i}: step {s.id!r} sends the internal template {s.template!r} to the customer "
                f"({', '.join(s.to)}); choose a customer template, or send it to: [owner]",
                code="wrong_audience",
            )
    body = definition.model_dump(mode="json", by_alias=True)
    head = repo.get_head(session, playbook_id)
    if head is not None:
        current = repo.get_version(session, playbook_id, head.current_version)
        if current is not None and current.definition == body:
            return head, False
    version = (head.current_version + 1) if head else 1
    session.add(PlaybookVersion(playbook_id=playbook_id, version=version, definition=body, created_at=now, created_by=actor))
    if head is None:
        head = Playbook(id=playbook_id, current_version=version, enabled=definition.enabled, created_at=now, updated_at=now)
        session.add(head)
    else:
        head.current_version, head.enabled, head.updated_at = version, definition.enabled, now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create" if version == 1 else "update",
        object_type="playbook",
        object_id=playbook_id,
        version=version,
        now=now,
        details={"name": definition.name, "enabled": definition.enabled},
    )
    return head, True


def _check_segments(session: Session, definition: PlaybookDefinition) -> None:
    """Every named segment the trigger or the audience names exists (422 naming each path)."""
    named = [(f"/trigger/segments/{i}", sid) for i, sid in enumerate(definition.trigger.segments)] + [
        (f"/audience/named_segments/{i}", sid) for i, sid in enumerate(definition.audience.named_segments)
    ]
    if not named:
        return
    known = rules.existing_segments(session, [sid for _, sid in named])
    problems = [
        {"pointer": ptr, "message": f"no segment {sid!r}; define it with POST /v1/segments first (list them with GET /v1/segments)"}
        for ptr, sid in named
        if sid not in known
    ]
    if problems:
        raise Unprocessable(problems, code="unknown_segment")


def get_or_404(session: Session, playbook_id: str) -> Playbook:
    head = repo.get_head(session, playbook_id)
    if head is None:
        raise NotFound(f"no playbook {playbook_id!r}")
    return head


def out(session: Session, head: Playbook, version: int | None = None) -> PlaybookOut:
    v = repo.get_version(session, head.id, version or head.current_version)
    if v is None:
        raise NotFound(f"playbook {head.id!r} has no version {version}")
    return PlaybookOut(
        id=head.id,
        version=v.version,
        enabled=head.enabled,
        definition=v.definition,
        versions=repo.versions_of(session, head.id),
        created_at=head.created_at,
        updated_at=head.updated_at,
    )


def dry_run(
    session: Session, playbook_id: str, account_id: str, *, now: datetime, settings: Any, version: int | None = None
) -> engine.DryRun:
    """What the playbook (its current version, or ``version``) would do for one account
    enrolled now: the engine's own step loop on a treated enrolment, in a savepoint rolled
    back (:func:`engine.dry_run`). 404 for an unknown playbook, version or account."""
    head = get_or_404(session, playbook_id)
    v = repo.get_version(session, playbook_id, version or head.current_version)
    if v is None:
        raise NotFound(f"playbook {playbook_id!r} has no version {version}")
    if ingest.accounts(session, [account_id]).get(account_id) is None:
        raise NotFound(f"no account {account_id!r}")
    return engine.dry_run(session, engine.compile_version(playbook_id, v.version, v.definition), account_id, now, settings)


# ---- the report ---------------------------------------------------------------


def report(session: Session, playbook_id: str) -> ReportOut:
    get_or_404(session, playbook_id)
    groups = {True: {"n": 0, "converted": 0}, False: {"n": 0, "converted": 0}}
    by_status: dict[str, int] = {}
    for holdout, status, n in repo.enrollment_counts(session, playbook_id):
        groups[bool(holdout)]["n"] += n
        if status == "converted":
            groups[bool(holdout)]["converted"] += n
        by_status[status] = by_status.get(status, 0) + n
    states: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for state, reason, n in delivery_repo.counts_by(session, playbook_id):
        states[state] = states.get(state, 0) + n
        if state == "skipped":
            skipped[reason or "unknown"] = skipped.get(reason or "unknown", 0) + n

    treated, held = group_stats(groups[False]), group_stats(groups[True])
    lift, rel, ci = lift_of(treated, held)
    return ReportOut(
        playbook_id=playbook_id,
        enrolled=sum(by_status.values()),
        active=by_status.get("active", 0),
        converted=by_status.get("converted", 0),
        completed=by_status.get("completed", 0),
        sent=states.get("sent", 0),
        queued=states.get("queued", 0) + states.get("sending", 0),
        failed=states.get("failed", 0),
        uncertain=states.get("uncertain", 0),
        skipped=skipped,
        treated=treated,
        holdout=held,
        lift=lift,
        relative_lift=rel,
        confidence_interval=ci,
    )


def group_stats(g: dict[str, int]) -> GroupStats:
    return GroupStats(enrolled=g["n"], converted=g["converted"], conversion_rate=g["converted"] / g["n"] if g["n"] else None)


def lift_of(treated: GroupStats, held: GroupStats) -> tuple[float | None, float | None, list[float] | None]:
    """(lift, relative lift, its 95% interval) of treated against held out."""
    if treated.conversion_rate is None or held.conversion_rate is None:
        return None, None, None
    lift = treated.conversion_rate - held.conversion_rate
    rel = lift / held.conversion_rate if held.conversion_rate else None
    interval = lift_interval(treated.converted, treated.enrolled, held.converted, held.enrolled)
    return lift, rel, list(interval) if interval else None


SEGMENT_REPORT_ENROLMENTS = 100_000
SEGMENT_REPORT_MAX = 20


def report_by_segment(session: Session, playbook_id: str, segment_ids: list[str]) -> SegmentReportOut:
    """The report's treated vs holdout conversion, lift and interval among the accounts
    that were in each named segment when they were enrolled (membership as of the
    enrolment, from the segments' entering and leaving signals: an account that entered
    afterwards, or had left before, is not counted). The newest
    SEGMENT_REPORT_ENROLMENTS enrolments."""
    get_or_404(session, playbook_id)
    segment_ids = rules.segments_for_report(session, segment_ids, SEGMENT_REPORT_MAX)
    rows = repo.enrollment_outcomes(session, playbook_id, SEGMENT_REPORT_ENROLMENTS)
    return SegmentReportOut(playbook_id=playbook_id, enrolments=len(rows), segments=lift_by_segment(session, segment_ids, rows))


def members_at_enrolment(session: Session, segment_ids: list[str], rows: list[tuple[str, datetime]]) -> dict[str, list[bool]]:
    """Per segment, for each of ``rows`` ((account, enrolled at)), whether the account was
    in it when enrolled (the rules service's membership history)."""
    return rules.segment_members_at(session, segment_ids, rows)


def lift_by_segment(
    session: Session,
    segment_ids: list[str],
    rows: list[tuple[str, datetime, bool, str]],
    members: dict[str, list[bool]] | None = None,
) -> list[SegmentLiftOut]:
    """Per segment, treated vs holdout conversion and lift among the enrolments ``rows``
    ((account, enrolled at, held out, status)) whose account was in it when enrolled
    (``members``: :func:`members_at_enrolment` of the rows, read when not given): the
    playbook report by segment, and the per-resource and per-survey reports."""
    if members is None:
        members = members_at_enrolment(session, segment_ids, [(a, at) for a, at, *_ in rows])
    out = []
    for sid in segment_ids:
        groups = {True: {"n": 0, "converted": 0}, False: {"n": 0, "converted": 0}}
        for (_account, _at, holdout, status), member in zip(rows, members[sid], strict=True):
            if member:
                groups[holdout]["n"] += 1
                groups[holdout]["converted"] += status == "converted"
        treated, held = group_stats(groups[False]), group_stats(groups[True])
        lift, rel, ci = lift_of(treated, held)
        out.append(SegmentLiftOut(segment_id=sid, treated=treated, holdout=held, lift=lift, relative_lift=rel, confidence_interval=ci))
    return out


FUNNEL_ENROLMENTS = 20_000


def funnel(session: Session, playbook_id: str) -> dict[str, Any]:
    """Enrolled, then per step of the current version: enrolments that reached it (from
    the newest FUNNEL_ENROLMENTS enrolments' histories), messages sent and skipped by
    reason; then converted."""
    head = get_or_404(session, playbook_id)
    version = repo.get_version(session, playbook_id, head.current_version)
    assert version is not None, "a playbook's current version always exists"
    definition = PlaybookDefinition.model_validate(version.definition)
    histories = repo.enrollment_histories(session, playbook_id, FUNNEL_ENROLMENTS)
    reached: dict[str, int] = {}
    for history in histories:
        for step_id in {entry["step"] for entry in history if isinstance(entry, dict) and entry.get("step")}:
            reached[step_id] = reached.get(step_id, 0) + 1
    messages: dict[str, dict[str, Any]] = {}
    for step_id, state, reason, n in delivery_repo.counts_by_step(session, playbook_id):
        m = messages.setdefault(step_id, {"sent": 0, "skipped": {}, "other": 0})
        if state == "sent":
            m["sent"] += n
        elif state == "skipped":
            m["skipped"][reason or "unknown"] = m["skipped"].get(reason or "unknown", 0) + n
        else:
            m["other"] += n
    counts = {status: 0 for status in ("active", "converted", "completed", "failed")}
    for _holdout, status, n in repo.enrollment_counts(session, playbook_id):
        counts[status] = counts.get(status, 0) + n
    steps = [
        {"id": s.id, "type": s.type, "reached": reached.get(s.id, 0), **messages.get(s.id, {"sent": 0, "skipped": {}, "other": 0})}
        for s in definition.parsed_steps().steps
    ]
    return {
        "enrolled": sum(counts.values()),
        "sampled": len(histories),
        "steps": steps,
        "converted": counts["converted"],
        "by_status": counts,
    }
