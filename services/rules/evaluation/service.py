"""Evaluation: event-triggered rules over a batch of events, and scheduled rules over
every account in their audience (the tick). Both flush; the batch or tick commits."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from services.rules.evaluation import repository as evaluation_repo
from services.rules.evaluation.engine import EventSubject, Measurements
from services.rules.language.ast import Audience
from services.rules.language.evaluate import evidence, evidence_of
from services.rules.language.evaluate import select as select_set
from services.rules.rules import repository as rules_repo
from services.rules.rules.service import LoadedRule, load_enabled
from services.rules.signals import repository as signals_repo
from services.rules.signals.service import Firing, fire
from shared.collector import cyclic_gc_paused
from shared.db import transaction
from shared.metrics import STALE_EVENTS
from shared.settings import Settings
from shared.signals import Signal

log = logging.getLogger(__name__)


class RuleIndex:
    """event name -> enabled event-triggered rules, reloaded only when a rule changed
    (one cheap fingerprint query per batch). An event whose name no rule names costs a
    dict lookup and nothing else."""

    def __init__(self, retention_days: int):
        self.retention_days = retention_days
        self.fingerprint: tuple[int, int] | None = None
        self.by_event: dict[str, list[LoadedRule]] = {}
        self.loads = 0

    def refresh(self, session: Session) -> RuleIndex:
        fp = rules_repo.fingerprint(session)
        if fp != self.fingerprint:
            by_event: dict[str, list[LoadedRule]] = defaultdict(list)
            for rule in load_enabled(session, "events", self.retention_days):
                for name in rule.definition.trigger.events:
                    by_event[name].append(rule)
            self.by_event = dict(by_event)
            self.fingerprint = fp
            self.loads += 1
        return self


@dataclass
class EvaluationReport:
    events: int = 0
    evaluations: int = 0
    stale: int = 0
    signals: list[Signal] = field(default_factory=list)


def evaluate_events(session: Session, events: list[EventSubject], index: RuleIndex, now: datetime, settings: Settings) -> EvaluationReport:
    """Evaluate the rules each event's name triggers. Metrics are read from ingest's
    rollups, which already hold these events (the worker waits for ingest).

    An event older than ``rules_event_freshness_seconds`` triggers nothing: it is
    history (a backfill, a replay after an outage), and acting on it now would email
    someone today about what they did last month. Its effect on the metrics stays:
    ingest stored it, and scheduled rules see it."""
    report = EvaluationReport(events=len(events))
    oldest = now - timedelta(seconds=settings.rules_event_freshness_seconds)
    fresh = [ev for ev in events if ev.timestamp >= oldest]
    report.stale = len(events) - len(fresh)
    if report.stale:
        STALE_EVENTS.inc(report.stale)
    # Events by name, then each rule's events: the lists of one name are shared by every
    # rule it triggers (a batch at 1,000 rules pairs 20,000 events with 400,000 rule-events).
    # Rules come in the order of their first triggering event, events in batch order.
    by_name: dict[str, list[EventSubject]] = {}
    for ev in fresh:
        if ev.name in index.by_event:
            by_name.setdefault(ev.name, []).append(ev)
    if not by_name:
        return report
    names_of: dict[str, tuple[str, ...]] = {}
    rules: list[LoadedRule] = []
    for name in by_name:
        for rule in index.by_event[name]:
            if rule.id not in names_of:
                names_of[rule.id] = tuple(n for n in rule.definition.trigger.events if n in by_name)
                rules.append(rule)
    events_of: dict[tuple[str, ...], list[EventSubject]] = {}
    latest_of: dict[tuple[str, ...], dict[str, EventSubject]] = {}
    position: dict[int, int] = {}
    accounts = sorted({ev.account_id for evs in by_name.values() for ev in evs})
    meas = Measurements(session, now, accounts)
    meas.plan(rule.definition.condition for rule in rules)
    pairs = sorted({(ev.account_id, ev.user_id) for evs in by_name.values() for ev in evs if ev.user_id})
    if pairs and any(r.needs_event for r in rules):
        meas.load_users(pairs)
    audiences: dict[Audience, set[str]] = {}
    universes: dict[tuple[tuple[str, ...], Audience], tuple[list[EventSubject], set[str]]] = {}
    for rule in rules:
        d = rule.definition
        names = names_of[rule.id]
        if names not in events_of:
            if len(names) == 1:
                events_of[names] = by_name[names[0]]
            else:  # several names: back in batch order
                if not position:
                    position.update((id(ev), i) for i, ev in enumerate(fresh))
                events_of[names] = sorted((ev for n in names for ev in by_name[n]), key=lambda ev: position[id(ev)])
        evs = events_of[names]
        key = d.audience
        if key not in audiences:
            audiences[key] = meas.audience(d.audience)
        audience = audiences[key]
        holding: set[str] | None = None
        if not rule.needs_event:
            # Only account state matters: the account's latest triggering event stands for all,
            # and the set algebra (as in the tick, predicates shared by every rule of the batch)
            # finds the accounts for which the condition holds; only those are explained.
            if names not in latest_of:
                latest: dict[str, EventSubject] = {}
                for ev in evs:
                    if ev.account_id not in latest or ev.timestamp >= latest[ev.account_id].timestamp:
                        latest[ev.account_id] = ev
                latest_of[names] = latest
            latest = latest_of[names]
            if (names, key) not in universes:
                in_audience = [ev for ev in latest.values() if ev.account_id in audience]
                universes[names, key] = (in_audience, {ev.account_id for ev in in_audience})
            evs, universe = universes[names, key]
            holding = select_set(d.condition, universe, meas.matching)
            if not holding:  # each of these accounts evaluated, none holds: nothing to explain or fire
                report.evaluations += len(evs)
                continue
        firings = []
        fired_accounts: set[str] = set()
        for ev in evs:
            if ev.account_id not in audience or ev.account_id in fired_accounts:
                continue
            report.evaluations += 1
            if holding is not None and ev.account_id not in holding:
                continue
            ok, tree = meas.explain(d.condition, ev.account_id, ev)
            if ok:
                fired_accounts.add(ev.account_id)
                ev_evidence = evidence(tree)
                ev_evidence["trigger"] = {"event_id": ev.event_id, "event": ev.name, "timestamp": ev.timestamp.isoformat()}
                firings.append(Firing(ev.account_id, ev_evidence, f"event:{ev.event_id}", ev.user_id, ev.event_id))
        report.signals += fire(session, rule, firings, now, settings, "event")
    return report


# ---- the scheduled tick ------------------------------------------------------


def claim_tick(session: Session, rule: LoadedRule, now: datetime) -> bool:
    """Take this rule's tick if it is due; with two workers only one wins, and a
    restarted worker does not re-run a tick that committed."""
    every = rule.definition.trigger.every_seconds
    assert every is not None  # only scheduled rules tick
    return evaluation_repo.claim_tick(session, rule.id, now, now + timedelta(seconds=every))


def slot_of(now: datetime, every_seconds: int) -> str:
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % every_seconds, tz=UTC).isoformat()


@dataclass
class TickReport:
    rules: int = 0
    ran: int = 0
    matched: int = 0
    signals: list[Signal] = field(default_factory=list)
    queries: int = 0
    deferred: bool = False


def evaluate_scheduled(session: Session, rule: LoadedRule, meas: Measurements, audiences: dict[Audience, set[str]]) -> tuple[set[str], int]:
    d = rule.definition
    if d.audience not in audiences:
        audiences[d.audience] = meas.audience(d.audience)
    universe = audiences[d.audience]
    return select_set(d.condition, universe, meas.matching), len(universe)


# The accounts' metrics and each firing's signal live until the tick ends (75,000 in a first
# run over 100,000 accounts): the cyclic collector's full runs over them took a third of
# this process's CPU (shared/collector.py).
@cyclic_gc_paused()
def run_tick(
    session_factory: sessionmaker[Session], settings: Settings, now: datetime, gate: Callable[[], bool] | None = None
) -> TickReport:
    """One tick: every enabled scheduled rule that is due, each in its own transaction
    (tick claim + signals + outbox commit together). Measurements are shared by all
    rules of the tick, so rules over the same metric cost one query.

    ``gate`` (the worker's freshness watermark) is asked once there are scheduled rules;
    if it answers False nothing is claimed or evaluated and the report says ``deferred``."""
    report = TickReport()
    with transaction(session_factory) as session:
        rules = load_enabled(session, "schedule", settings.raw_event_retention_days)
    report.rules = len(rules)
    if not rules:
        return report
    if gate is not None and not gate():
        report.deferred = True
        return report
    meas: Measurements | None = None
    audiences: dict[Audience, set[str]] = {}
    for rule in rules:
        with transaction(session_factory) as session:
            if not claim_tick(session, rule, now):
                continue
            if meas is None:
                meas = Measurements(session, now, None)
            meas.session = session
            matched, audience_size = evaluate_scheduled(session, rule, meas, audiences)
            report.ran += 1
            report.matched += len(matched)
            every = rule.definition.trigger.every_seconds
            assert every is not None  # only scheduled rules tick
            slot = slot_of(now, every)
            firings = []
            # The claim in fire() is the authority; skipping known cooldowns first only saves work.
            for a in sorted(matched - signals_repo.cooling_down(session, rule.id, now)):
                # The evidence only: a change metric's details (meas.explain's) are not kept in it.
                ok, found = evidence_of(rule.definition.condition, meas.value_getter(a))
                if ok:  # the set algebra and the evidence agree by construction; be safe anyway
                    firings.append(Firing(a, found, f"tick:{slot}"))
            new = fire(session, rule, firings, now, settings, "schedule")
            report.signals += new
            evaluation_repo.record_tick_result(session, rule.id, {"audience": audience_size, "matched": len(matched), "signals": len(new)})
    report.queries = meas.queries if meas else 0
    if report.ran:
        log.info(
            "rules tick at %s: %d/%d scheduled rules ran, %d accounts matched, %d signals",
            now.isoformat(),
            report.ran,
            report.rules,
            report.matched,
            len(report.signals),
        )
    return report
