"""The rules service's one door: the only module of rules that other services, the
console, the demo, the jobs list and the CLI may import (import-linter checks it,
docs/architecture.md "The doors"). It holds no queries: every name is the rules
repository's or service's own function, published here under the name callers use.

For outreach (the rule language in playbooks, engagements' metrics, erasure, the
orphan sweeper), see :mod:`services.rules.conditions`: ``parse_condition``,
``evaluate_condition``, ``accounts_matching``, ``evaluator``, ``measure``,
``replay_firings``, ``serialize_condition``, ``RuleValidationError``, ``Condition``,
``settle_signals`` (outreach has decided on these signals) and ``forget_contact``.

For the console and the CLI: rule definitions (read, parse, create, update, enable,
versions, audit, the starter import), signals (lists, counts), the dry run, the
backtest (validate a request; the job kind ``BACKTEST_KIND`` that runs it, registered
on import of this module) and the scheduled tick; customer health (the model: parse,
read, save; an account's scores: score now, latest, history; the scores of past days
replayed over the stored history; the validation against contract outcomes: validate a
request, the job kind ``HEALTH_VALIDATION_KIND`` that runs it; for the console's lists, many accounts' histories,
labels counted per day, and selects of the current scores and of the accounts with a
label that ingest's account search orders and filters by; docs/health.md); named
segments (docs/segments.md: read one, its definition, list them, their members, sizes
per day and member counts; parse, create, update, delete, versions, audit, and the size an
unsaved definition would have now; install the starter ones; which exist; an account's segments, for outreach's playbook
audiences; the signal kinds and rule-id prefix of entering and leaving). For the app:
:func:`routers`.

Everything reads or flushes only; the caller owns the session and the transaction
(``run_tick`` and ``import_rules`` take a session factory and open their own).
"""

from __future__ import annotations

from fastapi import APIRouter

from services.rules.backtest.health import score_history as score_health_history
from services.rules.backtest.jobs import KIND as BACKTEST_KIND
from services.rules.backtest.service import prepare as prepare_backtest
from services.rules.backtest.validation import KIND as HEALTH_VALIDATION_KIND
from services.rules.backtest.validation import ValidationIn as HealthValidationIn
from services.rules.backtest.validation import prepare as prepare_health_validation
from services.rules.conditions import (
    Condition,
    RuleReplay,
    RuleValidationError,
    accounts_matching,
    evaluate_condition,
    evaluator,
    forget_contact,
    measure,
    parse_condition,
    replay_firings,
    serialize_condition,
    settle_signals,
)
from services.rules.evaluation.dryrun import dry_run
from services.rules.evaluation.health import run_health_day
from services.rules.evaluation.health import score_account as score_account_health
from services.rules.evaluation.segments import preview_size as preview_segment_size
from services.rules.evaluation.service import run_tick
from services.rules.health.repository import audit_for as health_model_audit
from services.rules.health.repository import list_versions as list_health_model_versions
from services.rules.health.service import current as current_health_model
from services.rules.health.service import install_starter as install_starter_health_model
from services.rules.health.service import parse as parse_health_model
from services.rules.health.service import save as save_health_model
from services.rules.health.service import starter_definition as starter_health_model
from services.rules.health.service import summary as health_summary
from services.rules.language.ast import HEALTH_LABELS
from services.rules.language.segment import ENTERED as SEGMENT_ENTERED
from services.rules.language.segment import LEFT as SEGMENT_LEFT
from services.rules.language.segment import SIGNAL_PREFIX as SEGMENT_SIGNAL_PREFIX
from services.rules.rules.importer import STARTER_DIR, import_rules
from services.rules.rules.repository import audit_for as rule_audit
from services.rules.rules.repository import list_rules
from services.rules.rules.repository import list_versions as list_rule_versions
from services.rules.rules.schemas import BacktestIn
from services.rules.rules.service import create as create_rule
from services.rules.rules.service import current_definition
from services.rules.rules.service import get as get_rule
from services.rules.rules.service import parse as parse_rule
from services.rules.rules.service import set_enabled as set_rule_enabled
from services.rules.rules.service import update as update_rule
from services.rules.scores.repository import accounts_labelled as accounts_health_labelled
from services.rules.scores.repository import current_scores as current_health_scores
from services.rules.scores.repository import histories as health_histories
from services.rules.scores.repository import history as health_history
from services.rules.scores.repository import label_counts_by_day as health_label_counts_by_day
from services.rules.scores.repository import latest_day as latest_health_day
from services.rules.scores.repository import latest_on_or_before as latest_health
from services.rules.segments.repository import audit_for as segment_audit
from services.rules.segments.repository import existing as existing_segments
from services.rules.segments.repository import get_version as get_segment_version
from services.rules.segments.repository import list_members as list_segment_members
from services.rules.segments.repository import list_segments
from services.rules.segments.repository import list_versions as list_segment_versions
from services.rules.segments.repository import member_counts as segment_member_counts
from services.rules.segments.repository import members_at as segment_members_at
from services.rules.segments.repository import membership_history as segment_membership_history
from services.rules.segments.repository import memberships as segment_memberships
from services.rules.segments.repository import sizes as segment_sizes
from services.rules.segments.service import create as create_segment
from services.rules.segments.service import current_definition as current_segment_definition
from services.rules.segments.service import delete as delete_segment
from services.rules.segments.service import get as get_segment
from services.rules.segments.service import install_starter as install_starter_segments
from services.rules.segments.service import named_for_report as segments_for_report
from services.rules.segments.service import parse as parse_segment
from services.rules.segments.service import update as update_segment
from services.rules.signals.repository import SIGNAL_SORTS, accounts_signalled_since, count_signals, find_signals, get_signal, list_signals
from services.rules.signals.repository import counts_by_day_and_kind as signal_counts_by_day_and_kind
from services.rules.signals.repository import counts_by_rule as signal_counts_by_rule

__all__ = [
    "BACKTEST_KIND",
    "HEALTH_VALIDATION_KIND",
    "HealthValidationIn",
    "HEALTH_LABELS",
    "STARTER_DIR",
    "SEGMENT_ENTERED",
    "SEGMENT_LEFT",
    "SEGMENT_SIGNAL_PREFIX",
    "BacktestIn",
    "Condition",
    "RuleReplay",
    "RuleValidationError",
    "accounts_health_labelled",
    "accounts_matching",
    "accounts_signalled_since",
    "count_signals",
    "current_segment_definition",
    "create_rule",
    "current_definition",
    "current_health_model",
    "current_health_scores",
    "dry_run",
    "evaluate_condition",
    "evaluator",
    "existing_segments",
    "segments_for_report",
    "forget_contact",
    "get_rule",
    "get_segment",
    "get_signal",
    "health_histories",
    "health_history",
    "health_label_counts_by_day",
    "health_model_audit",
    "health_summary",
    "import_rules",
    "install_starter_health_model",
    "install_starter_segments",
    "latest_health",
    "latest_health_day",
    "list_health_model_versions",
    "list_rule_versions",
    "list_rules",
    "list_segment_members",
    "list_segments",
    "list_signals",
    "measure",
    "parse_condition",
    "parse_health_model",
    "parse_rule",
    "prepare_backtest",
    "prepare_health_validation",
    "replay_firings",
    "routers",
    "rule_audit",
    "run_health_day",
    "run_tick",
    "save_health_model",
    "score_account_health",
    "score_health_history",
    "segment_member_counts",
    "segment_members_at",
    "segment_membership_history",
    "segment_memberships",
    "segment_sizes",
    "serialize_condition",
    "set_rule_enabled",
    "settle_signals",
    "signal_counts_by_day_and_kind",
    "signal_counts_by_rule",
    "starter_health_model",
    "update_rule",
    "preview_segment_size",
    "SIGNAL_SORTS",
    "find_signals",
    "segment_audit",
    "get_segment_version",
    "list_segment_versions",
    "create_segment",
    "delete_segment",
    "parse_segment",
    "update_segment",
]


def routers() -> list[APIRouter]:
    """The rules API, in the order the app mounts it (imported when the app is built,
    not by every worker that imports this module)."""
    from services.rules.backtest.router import router as backtest_router
    from services.rules.evaluation.router import router as dryrun_router
    from services.rules.health.router import router as health_router
    from services.rules.rules.router import router as rules_router
    from services.rules.segments.router import router as segments_router
    from services.rules.signals.router import router as signals_router

    return [rules_router, dryrun_router, backtest_router, signals_router, health_router, segments_router]
