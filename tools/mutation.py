"""make mutation: run mutmut (configured in pyproject.toml [tool.mutmut]) with what every
mutant's test session would otherwise build for itself made once for the whole run: one
embedded broker, started and warmed up, and one SQLite database built by the migrations,
which each session copies (tests/conftest.py reads both from the environment).

    python tools/mutation.py <arguments of `mutmut run`>
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from the repository: our packages and tests/support

from shared.broker import EmbeddedBroker, free_port  # noqa: E402
from shared.db import make_engine  # noqa: E402
from shared.migrate import upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.helpers import warm_up_broker  # noqa: E402


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="touchline-mutation-") as tmp:
        template = Path(tmp) / "template.db"
        engine = make_engine(Settings(env="test", database_url=f"sqlite:///{template}"))
        upgrade(engine)
        engine.dispose()
        broker = EmbeddedBroker("127.0.0.1", free_port(), Path(tmp) / "broker.log").start()
        try:
            warm_up_broker(broker.bootstrap)
            env = {
                **os.environ,
                "TOUCHLINE_TEST_SHARED_BROKER": broker.bootstrap,
                "TOUCHLINE_TEST_SQLITE_TEMPLATE": str(template),
                # One short session per mutant, on SQLite only: the PostgreSQL variants of the
                # same tests run in `make test` (docs/testing.md, "Mutation testing").
                "TOUCHLINE_TEST_DATABASES": "sqlite",
                # A drain that cannot succeed gives up after 9 s instead of 30 (docs/testing.md).
                "TOUCHLINE_TEST_DRAIN_DEADLINE_SCALE": os.environ.get("TOUCHLINE_TEST_DRAIN_DEADLINE_SCALE", "0.3"),
            }
            return subprocess.run([sys.executable, "-m", "mutmut", "run", *argv], env=env, cwd=ROOT).returncode
        finally:
            broker.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
