"""Schemathesis against the app's own OpenAPI document: every operation is called with
generated input, valid and invalid, with an admin key. Every answer must be no server
error, a status the document lists for that operation, the documented content type,
and a body that matches the documented schema. Examples are bounded per operation and
derandomized (a fixed seed), so a failure replays the same way every run.

Two passes per operation. The first generates everything, path included, so it mostly
meets 404s: a generated id names nothing. The second stands on a small seeded world (an
account with users and usage, rules, templates, playbooks, CSMs, engagements, signals,
messages, resources, a job) and pins each path parameter to a row that exists, so the query and
body reach the code behind the 404: that is where a date window underflowed, a cursor
overflowed the database's integer and a PATCH with nulls reached the database (issue 18).
Operations whose input has a date, a time, a cursor or a PATCH body get more examples
there. Destructive operations (DELETE, erase, cancel) run last, so the world stays whole
for the others.

The operations come from the OpenAPI document itself, so a new route is fuzzed without
anyone remembering to add it here. `make fuzz` runs the same test deeper (FUZZ_EXAMPLES
examples per operation, mode and pass, on both databases); it is not part of `make test`.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import date

import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hseed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from services.ingest.models import User
from services.outreach.models import Csm, Engagement, Message, Playbook, Resource, Template
from services.rules.backtest.jobs import KIND as BACKTEST_KIND
from services.rules.models import Rule, SignalRecord
from services.rules.rules.schemas import BacktestIn
from shared import jobs
from shared.db import transaction
from tests.support.console_seed import seed
from tests.support.helpers import auth

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
DEEP = os.environ.get("FUZZ_EXAMPLES")
# Examples per operation and mode: the generated pass (for an operation on a path
# parameter it mostly meets 404s, so fewer), the pass on seeded rows, and the edge pass
# for operations taking dates, times, cursors or a PATCH body. `make fuzz` sets them all.
EXAMPLES = int(DEEP or 10)
EXAMPLES_ON_PATHS = int(DEEP or 5)
PINNED_EXAMPLES = int(DEEP or 3)
FOCUS_EXAMPLES = int(DEEP or 15)
SEED = os.environ.get("FUZZ_SEED")  # a fresh stream of examples for `make fuzz`; unset: derandomized

# Values at the edges of what the types allow, drawn in place of generated ones: the
# generator alone rarely lands on year 1 together with a window reaching back past it, on
# a 20-digit cursor, or on a PATCH body with null in a field that cannot be empty.
_DATES = ["0001-01-01", "9999-12-31", "0001-01-02", "9999-12-30"]
_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-03-02T12:00:00"]
_INTS = [2**31, 2**63, 10**20 - 1, 2**31 - 1, 0, -1, -(2**63) - 1]
DROP = object()  # the parameter left out, so a default (a window's start) applies
EDGES = {
    "date": st.sampled_from([*_DATES, DROP]),
    "date-time": st.sampled_from([*_TIMES, DROP]),
    "number cursor": st.sampled_from(_INTS).map(str),  # a cursor whose pattern says digits
    "cursor": st.one_of(
        st.sampled_from(_INTS).map(str),
        st.lists(st.sampled_from([*_INTS, *_TIMES, "x", None]), min_size=1, max_size=3).map(
            lambda values: base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        ),
    ),
}


def _kind(schema: dict) -> str | None:
    text = json.dumps(schema)
    return "date-time" if '"format": "date-time"' in text else "date" if '"format": "date"' in text else None


def _edge_fields(operation, components: dict) -> tuple[dict[str, st.SearchStrategy], dict[str, st.SearchStrategy]]:
    """The query parameters and top-level body fields with edges worth drawing, and
    their edges: dates, times, cursors; in a PATCH body, also null for every field."""
    query = {}
    for p in operation.definition.raw.get("parameters", []):
        if p.get("in") == "query":
            kind = _kind(p.get("schema", {}))
            if p["name"] == "cursor":
                kind = "number cursor" if "[0-9]" in json.dumps(p.get("schema", {})) else "cursor"
            if kind:
                query[p["name"]] = EDGES[kind]
    body = {}
    content = operation.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in content:
        content = components[content["$ref"].rsplit("/", 1)[-1]]
    patch = operation.method.upper() == "PATCH"
    for name, prop in content.get("properties", {}).items():
        kind = _kind(prop)
        edges = [EDGES[kind].filter(lambda v: v is not DROP)] if kind else []
        if patch:
            edges.append(st.none())
        if edges:
            body[name] = st.one_of(edges)
    return query, body


def _destructive(operation) -> bool:
    return operation.method.upper() == "DELETE" or operation.path.endswith(("/erase", "/cancel"))


def _world(session_factory, settings, clock) -> dict[str, str]:
    """The console's seeded database (accounts with users and usage, the starter rules,
    templates and playbooks, signals, messages, CSMs and engagements) plus a backtest job,
    and one existing row for each path parameter name."""
    seed(session_factory, settings, clock)
    with transaction(session_factory) as s:
        rule_id = s.scalars(select(Rule.id).order_by(Rule.id)).first()
        backtest = BacktestIn(rule_id=rule_id, start=date(2026, 2, 20), end=date(2026, 3, 1))
        job = jobs.submit(s, BACKTEST_KIND, backtest.model_dump(mode="json"), created_by="ops:fuzz", now=clock.now(), settings=settings)
        engagement = s.scalars(select(Engagement).where(Engagement.csm_id.is_not(None)).order_by(Engagement.id)).first()
        known = {
            "account_id": engagement.account_id,
            "user_id": s.scalars(select(User.id).where(User.account_id == engagement.account_id).order_by(User.id)).first(),
            "rule_id": rule_id,
            "version": 1,
            "template_id": s.scalars(select(Template.id).order_by(Template.id)).first(),
            "playbook_id": s.scalars(select(Playbook.id).order_by(Playbook.id)).first(),
            "resource_id": s.scalars(select(Resource.id).order_by(Resource.id)).first(),
            "csm_id": s.scalars(select(Csm.id).order_by(Csm.id)).first(),
            "engagement_id": engagement.id,
            "signal_id": s.scalars(select(SignalRecord.signal_id).order_by(SignalRecord.signal_id)).first(),
            "message_id": s.scalars(select(Message.id).order_by(Message.id)).first(),
            "job_id": job.id,
        }
    missing = [k for k, v in known.items() if v is None]
    assert not missing, f"the seeded world has no row for {missing}"
    return {k: str(v) for k, v in known.items()}


def test_every_operation_keeps_its_contract(settings, clock, session_factory, keys, topics):
    """One app and one database for the whole run (setting up per operation cost more
    than the fuzzing); every failure is collected, so one run reports them all."""
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    headers = auth(keys["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    components = schema.raw_schema["components"]["schemas"]
    failures: list[str] = []
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=_destructive)
    assert len(operations) >= 40
    cases = 0

    def fuzz(operation, mode, examples: int, pins: dict[str, str], edges: tuple[dict, dict] | None, label: str) -> None:
        @given(case=operation.as_strategy(mode), data=st.data())
        @hsettings(
            max_examples=examples,
            derandomize=SEED is None,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case, data):
            nonlocal cases
            if pins:
                case.path_parameters = {**(case.path_parameters or {}), **pins}
            if edges:
                query, body = edges
                for name, strategy in query.items():
                    if data.draw(st.booleans(), label=f"edge {name}"):
                        value = data.draw(strategy, label=name)
                        case.query = {k: v for k, v in (case.query or {}).items() if k != name}
                        if value is not DROP:
                            case.query[name] = value
                if isinstance(case.body, dict):
                    # A copy: with the generated body changed in place, Hypothesis replayed a
                    # case differently and stopped the pass with "Inconsistent data generation"
                    # (make fuzz, FUZZ_SEED=26, POST /v1/health/validation), testing nothing more.
                    case.body = dict(case.body)
                    for name, strategy in body.items():
                        if data.draw(st.booleans(), label=f"edge {name}"):
                            case.body[name] = data.draw(strategy, label=name)
            cases += 1
            # 60 s, not schemathesis's 10: twice in this session's CI runs (late in the whole
            # suite, PostgreSQL) one GET (/v1/accounts, then /v1/dev/mail) took over 10 s on
            # its first call and answered at once when Hypothesis repeated it; never in 8
            # runs of this module alone. The stall's cause is not found yet (docs/testing.md,
            # "The API fuzz"); a contract failure still fails here, a stall of a minute too.
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

        if SEED is not None:
            run = hseed(int(SEED))(run)
        try:
            run()
        except Exception as exc:  # noqa: BLE001 (collected and reported below)
            # A flaky failure (it failed once, then not when Hypothesis ran it again) is a
            # group: its first failure is the one worth reading.
            found = "".join(f"\n  {type(sub).__name__}: {sub}" for sub in getattr(exc, "exceptions", ()))
            failures.append(f"{operation.label} [{mode.value}, {label}]:\n{exc}{found}")

    try:
        known = _world(session_factory, settings, clock)
        for operation in operations:
            names = [p["name"] for p in operation.definition.raw.get("parameters", []) if p.get("in") == "path"]
            pins = {n: known[n] for n in names if n in known} if names and all(n in known for n in names) else {}
            query, body = _edge_fields(operation, components)
            focus = bool(query or body)
            for mode in MODES:
                fuzz(operation, mode, EXAMPLES_ON_PATHS if names else EXAMPLES, {}, None, "generated")
                if focus and (pins or not names):
                    fuzz(operation, mode, FOCUS_EXAMPLES, pins, (query, body), "edges" + (", seeded rows" if pins else ""))
                elif pins:
                    fuzz(operation, mode, PINNED_EXAMPLES, pins, None, "seeded rows")
    finally:
        app.state.ctx.close()
    print(f"{cases} cases on {settings.database_url.split(':')[0]}")
    assert not failures, f"{len(failures)} operation(s) broke their contract:\n\n" + "\n\n".join(failures)
