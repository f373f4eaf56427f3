"""Keeping named segments' membership (docs/segments.md), set-based like the tick.

Every live segment's accounts are found as a rule's are: its audience through ingest's
filters in SQL and its condition through :class:`Measurements` (one query per distinct
metric, shared by every segment of the refresh) and the set algebra over the results;
nothing is evaluated account by account. The difference with the stored members is
then written in a few statements: the pairs inserted are ``segment_entered`` signals,
the pairs deleted ``segment_left`` signals, stored and queued for ``cs.signals`` like a
rule's (so playbooks can start on them, and the orphan sweeper covers them).

Two refreshes:

* the tick (:func:`run_segments`, from the rules worker's tick, behind the same
  freshness watermark): every account, then each segment's size for the UTC day;
* an event batch (:func:`refresh_accounts`, in the batch's transaction): only the
  accounts with a fresh event in the batch (events older than the freshness window
  change membership at the next tick, as they change no rule's signals).

The writes are keyed (insert on conflict do nothing, delete ... returning), so two
workers refreshing the same account at once fire its change once. It lives beside the
engine (as health scoring does) because rules' packages import one way: segments <- evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.rules.evaluation.engine import Measurements
from services.rules.language.ast import Audience
from services.rules.language.evaluate import evidence
from services.rules.language.evaluate import select as select_set
from services.rules.language.segment import ENTERED, LEFT, SIGNAL_PREFIX, SegmentDefinition
from services.rules.models import Segment
from services.rules.segments import repository as repo
from services.rules.segments.service import LoadedSegment, load_live
from services.rules.signals.service import emit, signal_id
from shared.db import read_transaction, transaction
from shared.settings import Settings
from shared.signals import Signal

log = logging.getLogger(__name__)


@dataclass
class SegmentReport:
    segments: int = 0
    accounts: int | None = None  # the refreshed population (None: every account)
    entered: int = 0
    left: int = 0
    signals: list[Signal] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    deferred: bool = False
    seconds: float = 0.0


class SegmentIndex:
    """The live segments, reloaded only when one changed (one cheap fingerprint query per
    event batch): a batch with no segment defined costs that query and nothing else."""

    def __init__(self) -> None:
        self.fingerprint: tuple[int, int, int] | None = None
        self.segments: list[LoadedSegment] = []

    def refresh(self, session: Session) -> list[LoadedSegment]:
        n, versions, deleted = session.execute(
            select(func.count(), func.coalesce(func.sum(Segment.current_version), 0), func.count(Segment.deleted_at))
        ).one()
        fp = (int(n), int(versions), int(deleted))
        if fp != self.fingerprint:
            self.segments = load_live(session)
            self.fingerprint = fp
        return self.segments


def matching(segments: list[LoadedSegment], meas: Measurements) -> dict[str, set[str]]:
    """segment -> the accounts of ``meas``'s population in it now."""
    audiences: dict[Audience, set[str]] = {}
    out: dict[str, set[str]] = {}
    for seg in segments:
        d = seg.definition
        if d.audience not in audiences:
            audiences[d.audience] = meas.audience(d.audience)
        out[seg.id] = select_set(d.condition, audiences[d.audience], meas.matching)
    return out


def _signal(seg: LoadedSegment, account_id: str, kind: str, now: datetime, ev: dict[str, object]) -> Signal:
    rule_id = SIGNAL_PREFIX + seg.id
    return Signal(
        signal_id=signal_id(rule_id, account_id, f"{kind}:{now.isoformat()}"),
        rule_id=rule_id,
        rule_version=seg.version,
        rule_name=seg.definition.name,
        account_id=account_id,
        kind=kind,
        severity="info",
        fired_at=now,
        evidence={"segment": {"id": seg.id, "version": seg.version, "change": "entered" if kind == ENTERED else "left"}, **ev},
    )


def apply(
    session: Session,
    segments: list[LoadedSegment],
    wanted: dict[str, set[str]],
    accounts: list[str] | None,
    meas: Measurements,
    now: datetime,
    settings: Settings,
    trigger: str,
) -> SegmentReport:
    """Write the difference between ``wanted`` (each segment's accounts of the population
    ``accounts``, None: every account) and the stored members, and emit its signals."""
    # A segment deleted since it was loaded (the tick measures before it writes) is left alone.
    live = repo.existing(session, [s.id for s in segments])
    segments = [s for s in segments if s.id in live]
    wanted = {sid: accounts_in for sid, accounts_in in wanted.items() if sid in live}
    report = SegmentReport(segments=len(segments), accounts=None if accounts is None else len(accounts))
    by_id = {s.id: s for s in segments}
    current = repo.members(session, list(by_id), accounts)
    rows = [
        {"segment_id": sid, "account_id": a, "entered_at": now, "version": by_id[sid].version}
        for sid in sorted(wanted)
        for a in sorted(wanted[sid] - current[sid])
    ]
    entered = repo.add_members(session, rows)
    signals: list[Signal] = []
    meas.focus(a for _, a in entered)  # fields the tick tested in SQL are read for these accounts only
    for sid, a in sorted(entered):
        seg = by_id[sid]
        _ok, tree = meas.explain(seg.definition.condition, a)  # only the accounts that changed are explained
        signals.append(_signal(seg, a, ENTERED, now, evidence(tree)))
    for sid in sorted(wanted):
        for a in sorted(repo.remove_members(session, sid, current[sid] - wanted[sid])):
            signals.append(_signal(by_id[sid], a, LEFT, now, {}))
    report.entered = len(entered)
    report.left = len(signals) - len(entered)
    report.signals = emit(session, signals, now, settings, trigger)
    return report


def refresh_accounts(session: Session, index: SegmentIndex, accounts: list[str], now: datetime, settings: Settings) -> SegmentReport:
    """Membership of ``accounts`` (an event batch's) in every live segment, in the
    caller's transaction."""
    segments = index.refresh(session)
    if not segments or not accounts:
        return SegmentReport(segments=len(segments), accounts=len(accounts))
    meas = Measurements(session, now, sorted(set(accounts)))
    meas.plan(s.definition.condition for s in segments)
    return apply(session, segments, matching(segments, meas), meas.accounts, meas, now, settings, "event")


def preview_size(session: Session, definition: SegmentDefinition, now: datetime) -> int:
    """How many accounts ``definition`` would hold now: the tick's own matching
    (:func:`matching`) over every account, for one unsaved definition; reads only."""
    draft = LoadedSegment(definition.id, 0, definition)
    meas = Measurements(session, now, None)
    meas.plan([definition.condition])
    return len(matching([draft], meas)[draft.id])


def run_segments(
    session_factory: sessionmaker[Session], settings: Settings, now: datetime, gate: Callable[[], bool] | None = None
) -> SegmentReport:
    """Every live segment over every account, then each one's size for ``now``'s UTC day.
    ``gate`` (the worker's freshness watermark) is asked only when there are segments; if it
    answers False nothing is written and the report says ``deferred``. The measuring runs
    in a read transaction (never holding SQLite's write lock), the difference in a short
    write transaction."""
    with transaction(session_factory) as session:
        segments = load_live(session)
    if not segments:
        return SegmentReport()
    if gate is not None and not gate():
        return SegmentReport(segments=len(segments), deferred=True)
    started = time.perf_counter()
    with read_transaction(session_factory) as session:
        meas = Measurements(session, now, None)
        meas.plan(s.definition.condition for s in segments)
        wanted = matching(segments, meas)
    with transaction(session_factory) as session:
        meas.session = session  # the few accounts that entered are explained from what was measured
        report = apply(session, segments, wanted, None, meas, now, settings, "schedule")
        live = repo.existing(session, [s.id for s in segments])
        ids = [s.id for s in segments if s.id in live]
        report.sizes = {sid: 0 for sid in ids} | repo.member_counts(session, ids)
        repo.save_sizes(session, report.sizes, now.date(), now)
    report.seconds = round(time.perf_counter() - started, 3)
    if report.entered or report.left:
        log.info(
            "segments at %s: %d segments refreshed in %.1fs, %d entered, %d left",
            now.isoformat(),
            report.segments,
            report.seconds,
            report.entered,
            report.left,
        )
    return report


__all__ = ["SegmentIndex", "SegmentReport", "preview_size", "refresh_accounts", "run_segments"]
