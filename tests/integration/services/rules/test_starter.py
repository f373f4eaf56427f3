"""The starter library: it imports (idempotently) through the CLI code path, and the
demo's churning and expanding cohorts make its rules fire on the tick."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

from services import demo
from services.ingest.service import apply_events
from services.rules.evaluation.service import run_tick
from services.rules.rules.importer import STARTER_DIR, import_rules
from shared.db import transaction
from shared.events import Event
from tests.support.helpers import T0


def test_starter_rules_import_idempotently_and_fire_on_the_demo_cohorts(session_factory, settings):
    with transaction(session_factory) as s:
        first = import_rules(s, STARTER_DIR, actor="cli:test", now=T0, retention_days=400, enable=True)
    assert sorted(o.rule_id for o in first) == [
        "health-fell-20",
        "mau-up-50",
        "no-login-14d",
        "nps-detractor",
        "onboarding-stalled",
        "renewal-declining",
        "seat-utilisation-90",
        "wau-down-40",
    ]
    assert {o.action for o in first} == {"created"}
    with transaction(session_factory) as s:
        again = import_rules(s, STARTER_DIR, actor="cli:test", now=T0, retention_days=400, enable=True)
    assert {o.action for o in again} == {"unchanged"}

    accounts = 40
    events = [Event.model_validate_json(json.dumps(e)) for e in demo.generate(accounts=accounts, days=60, seed=7, end=T0)]
    with transaction(session_factory) as s:
        for i in range(0, len(events), 5000):
            apply_events(s, events[i : i + 5000], T0)
    report = run_tick(session_factory, settings, T0 + timedelta(minutes=1))
    cohorts = {a.id: a.cohort for a in demo.build_accounts(accounts, 7, T0.date(), 60)}
    fired = Counter((s.rule_id, cohorts[s.account_id]) for s in report.signals)
    assert report.ran == 7  # health-fell-20 too: no health model here, so it never fires
    # Churn rules fire on the churning cohort and never on the healthy one; expansion rules on the expanding one.
    assert fired[("no-login-14d", "churning")] > 0 and fired[("no-login-14d", "healthy")] == 0
    assert fired[("wau-down-40", "churning")] + fired[("renewal-declining", "churning")] > 0
    assert fired[("mau-up-50", "expanding")] > 0 and fired[("seat-utilisation-90", "expanding")] > 0
    n = Counter(cohorts.values())
    # Every expanding account, and only those, trips both expansion rules.
    for rule in ("mau-up-50", "seat-utilisation-90"):
        assert fired[(rule, "expanding")] == n["expanding"]
        assert not any(r == rule and cohort != "expanding" for r, cohort in fired)
    assert not any(cohort == "healthy" and rule in ("no-login-14d", "mau-up-50") for rule, cohort in fired)
    # Exactly: the accounts with a churn signal are the churning cohort, those with an expansion signal the expanding one.
    by_kind: dict[str, set] = {}
    for s in report.signals:
        by_kind.setdefault(s.kind, set()).add(s.account_id)
    assert by_kind["churn_risk"] == {a for a, c in cohorts.items() if c == "churning"}
    assert by_kind["expansion"] == {a for a, c in cohorts.items() if c == "expanding"}


def test_import_reports_invalid_rules_with_pointers(session_factory, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "- {id: ok-rule, name: ok, kind: churn_risk, trigger: {schedule: {}},\n"
        "   condition: {metric: days_since, event: login, op: '>=', value: 3}}\n"
        "- {id: bad-rule, name: bad, kind: churn_risk, trigger: {schedule: {}},\n"
        "   condition: {metric: days_since, op: '>=', value: 3}}\n"
    )
    with transaction(session_factory) as s:
        out = import_rules(s, tmp_path, actor="cli:test", now=T0, retention_days=400)
    assert [(o.rule_id, o.action) for o in out] == [("ok-rule", "created"), ("bad-rule", "invalid")]
    assert out[1].errors == [{"pointer": "/condition/event", "message": out[1].errors[0]["message"]}]
    assert 'needs "event"' in out[1].errors[0]["message"]


def test_import_reports_a_file_that_is_not_yaml_or_nests_too_deep_as_invalid(session_factory, tmp_path):
    """A traceback before (a RecursionError for the deep one): each is one invalid
    outcome with its reason, and the other files still import."""
    (tmp_path / "a-deep.yaml").write_text("[" * 2000)
    (tmp_path / "b-broken.yaml").write_text("id: [unclosed\n")
    (tmp_path / "c-ok.yaml").write_text(
        "{id: ok-rule, name: ok, kind: churn_risk, trigger: {schedule: {}},\n"
        " condition: {metric: days_since, event: login, op: '>=', value: 3}}\n"
    )
    with transaction(session_factory) as s:
        out = import_rules(s, tmp_path, actor="cli:test", now=T0, retention_days=400, max_depth=32)
    assert [(o.source, o.action) for o in out] == [("a-deep.yaml", "invalid"), ("b-broken.yaml", "invalid"), ("c-ok.yaml", "created")]
    assert "nests more than 32 levels deep" in out[0].errors[0]["message"]
    assert out[1].errors[0]["message"].startswith("not valid YAML")
