"""Schemathesis against the app's own OpenAPI document: every operation is called with
generated input, valid and invalid, with an admin key. Every answer must be no server
error, a status the document lists for that operation, the documented content type,
and a body that matches the documented schema. Examples are bounded per operation and
derandomized (a fixed seed), so a failure replays the same way every run.

The operations come from the OpenAPI document itself, so a new route is fuzzed without
anyone remembering to add it here.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.helpers import auth

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_MODE = 10
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def test_every_operation_keeps_its_contract(settings, clock, session_factory, keys, topics):
    """One app and one database for the whole run (setting up per operation cost more
    than the fuzzing); every failure is collected, so one run reports them all."""
    from services.wiring.app import create_app

    app = create_app(settings, clock, session_factory)
    headers = auth(keys["admin"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    try:
        for operation in operations:
            for mode in MODES:

                @given(case=operation.as_strategy(mode))
                @hsettings(
                    max_examples=EXAMPLES_PER_MODE,
                    derandomize=True,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def run(case):
                    case.call_and_validate(headers=headers, checks=CHECKS)

                try:
                    run()
                except Exception as exc:  # noqa: BLE001 (collected and reported below)
                    failures.append(f"{operation.label} [{mode.value}]:\n{exc}")
    finally:
        app.state.ctx.close()
    assert not failures, f"{len(failures)} operation(s) broke their contract:\n\n" + "\n\n".join(failures)
