"""The kafka-python group-join fix (shared/kafka/compat.py) goes in when a process starts,
never as a side effect of importing Touchline's Kafka code. Each check runs in a fresh
interpreter: the test session itself has applied the fix (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

IS_PATCHED = """
from kafka.coordinator.base import BaseCoordinator
from shared.kafka import compat
print("patched" if BaseCoordinator.join_group_async is compat._join_group_async else "original")
"""


def _last_line(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_kafka_modules_and_the_cli_leaves_kafka_python_as_it_is():
    imports = "import shared.kafka.clients, shared.kafka.batch_worker, shared.kafka.dlq, shared.kafka.lag, services.wiring.cli\n"
    assert _last_line(imports + IS_PATCHED) == "original"


def test_the_touchline_command_applies_the_fix_before_it_runs_a_command():
    # `touchline schema` runs no Kafka code: a patch seen afterwards is main()'s doing.
    run_schema = "from services.wiring.cli import main\nmain(['schema'])\n"
    assert _last_line(run_schema + IS_PATCHED) == "patched"
