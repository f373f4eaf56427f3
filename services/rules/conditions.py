"""The rule language and rules' commands as outreach uses them, published through
:mod:`services.rules.interface` (the service's one door; import this module only from
inside rules). Outreach writes playbook exit and branch conditions in the
rule language (docs/rules.md), so CS Ops learn one language.

- :func:`parse_condition` ``(obj) -> Condition`` raises :class:`RuleValidationError`
  (422, with a JSON pointer and a how-to-fix sentence per problem);
- :func:`evaluate_condition` ``(session, condition, account_id, now) -> (bool, explanation)``;
- :func:`accounts_matching` ``(session, condition, account_ids, now) -> set``: set-based,
  one query per distinct metric whatever the number of accounts;
- :func:`evaluator` ``(session, account_ids, now) -> evaluate(condition, account_id)``:
  :func:`evaluate_condition` for many accounts at one instant, each distinct metric
  queried once for all of them (outreach's enrolment of a whole signal batch);
- :func:`measure` ``(session, metric, account_id, at) -> (value, explanation)``: one
  metric's value for one account (an engagement's baseline and outcome);
- :func:`replay_firings` ``(session, rule_id, start, end, ...) -> RuleReplay``: what a
  saved rule (enabled or not, its current version) would have fired over stored
  history, day by day: the backtest's replay (:func:`run_backtest`), synchronous, for
  callers that bound the period and the number of accounts themselves (the pool
  forecast); a long or large replay belongs in the ``rules.backtest`` job;
- :func:`settle_signals` ``(session, signal_ids)``: outreach has decided on these
  signals (called in the transaction that records the decisions), so rules' orphan
  sweeper never republishes them;
- :func:`forget_contact`: erasure of a contact's identifiers from rules' own tables
  (signal evidence, outbox payloads).

Everything here reads or flushes only; the caller owns the session and the transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from services.rules.backtest.service import run_backtest
from services.rules.evaluation.engine import Measurements, explain_for_account
from services.rules.language import Condition, RuleValidationError, parse_condition, serialize_condition
from services.rules.language.evaluate import select
from services.rules.rules import service as rules_service
from services.rules.signals.service import forget_contact
from services.rules.signals.service import settle as settle_signals

__all__ = [
    "Condition",
    "RuleReplay",
    "RuleValidationError",
    "accounts_matching",
    "evaluate_condition",
    "evaluator",
    "forget_contact",
    "measure",
    "parse_condition",
    "replay_firings",
    "serialize_condition",
    "settle_signals",
]


def evaluate_condition(session: Session, condition: Condition, account_id: str, now: datetime) -> tuple[bool, dict[str, Any]]:
    """Would ``condition`` hold for ``account_id`` at ``now``? Returns the answer and the
    explanation tree (every predicate with its value, operator, threshold and result)."""
    return explain_for_account(session, condition, account_id, now)


def accounts_matching(session: Session, condition: Condition, account_ids: list[str], now: datetime) -> set[str]:
    """Which of ``account_ids`` satisfy ``condition`` at ``now``."""
    if not account_ids:
        return set()
    meas = Measurements(session, now, list(account_ids))
    return select(condition, set(account_ids), meas.matching)


def evaluator(session: Session, account_ids: list[str], now: datetime) -> Callable[[Condition, str], tuple[bool, dict[str, Any]]]:
    """``evaluate(condition, account_id)``, answering as :func:`evaluate_condition` does
    for any of ``account_ids``: a metric is queried on first use, for all of them at
    once, and kept (the caller drops the evaluator when the data may have changed)."""
    return Measurements(session, now, sorted(set(account_ids))).explain


def measure(
    session: Session, metric: dict[str, Any], account_id: str, at: datetime, *, threshold: float = 0
) -> tuple[float | None, dict[str, Any]]:
    """The value of one rule-language metric (e.g. ``{"metric": "active_users",
    "window": "28d"}``) for an account at ``at``, with the explanation the rule engine
    gives for ``value >= threshold`` (so the explanation names the threshold the
    caller judges by). A value that cannot be measured (no data yet) is None."""
    condition = parse_condition({**metric, "op": ">=", "value": threshold})
    _ok, tree = evaluate_condition(session, condition, account_id, at)
    value = tree.get("value")
    return (float(value) if isinstance(value, int | float) else None), tree


@dataclass(frozen=True)
class RuleReplay:
    rule_id: str
    version: int
    kind: str
    enabled: bool
    firings: list[tuple[date, str]]  # (day, account), cooldown applied as the engine would


def replay_firings(session: Session, rule_id: str, start: date, end: date, *, lookback_days: int, max_warm_up_days: int = 30) -> RuleReplay:
    """What saved rule ``rule_id`` (its current version, enabled or not) would have fired
    each day from ``start`` to ``end`` over the stored history: the backtest's replay
    (docs/rules.md, "Backtest"). The replay starts up to ``max_warm_up_days`` earlier (at
    most the rule's cooldown) and returns only the firings from ``start``: a replay that
    began on ``start`` would fire every account already matching on its first day, a
    burst a running engine, with those accounts in cooldown, does not have. Unknown or
    deleted rule: NotFound (404). Its cost grows with days x accounts; the caller bounds both."""
    rule = rules_service.get(session, rule_id, include_deleted=False)
    definition, _ = rules_service.parse(rules_service.current_definition(session, rule), 100_000)
    warm_up = min(max_warm_up_days, definition.cooldown_seconds // 86400)
    result = run_backtest(session, definition, start - timedelta(days=warm_up), end, lookback_days=lookback_days, evidence=0)
    return RuleReplay(
        rule_id=rule.id,
        version=rule.current_version,
        kind=definition.kind,
        enabled=bool(rule.enabled),
        firings=[(day, account) for day, account, _ev in result.firings if day >= start],
    )
