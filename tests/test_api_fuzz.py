"""Schemathesis against the app's own OpenAPI document: every operation is called with
generated input, valid and invalid, with an admin key. Every answer must be no server
error, a status the document lists for that operation, the documented content type,
and a body that matches the documented schema. Examples are bounded per operation and
derandomized (a fixed seed), so a failure replays the same way every run.

One test per operation (and database), built from the OpenAPI document itself, so a
new route is fuzzed without anyone remembering to add it here.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.settings import Settings
from tests.conftest import auth

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_MODE = 10


def _operations() -> list[tuple[str, str]]:
    from services.app import create_app

    app = create_app(Settings(env="test", database_url="sqlite://"))
    return [(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops]


@pytest.fixture
def fuzz_app(settings, clock, session_factory, keys, topics):
    from services.app import create_app

    app = create_app(settings, clock, session_factory)
    yield app, auth(keys["admin"])
    app.state.ctx.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("method,path", _operations())
def test_operation_keeps_its_contract(fuzz_app, method, path, mode):
    app, headers = fuzz_app
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]

    @given(case=operation.as_strategy(mode))
    @hsettings(max_examples=EXAMPLES_PER_MODE, derandomize=True, deadline=None, database=None,
               phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
