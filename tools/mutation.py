"""make mutation: run mutmut (configured in pyproject.toml [tool.mutmut]) with what every
mutant's test session would otherwise build for itself made once for the whole run: one
embedded broker, started and warmed up, and one SQLite database built by the migrations,
which each session copies (tests/conftest.py reads both from the environment).

    python tools/mutation.py [--max-children N] [MUTANT PATTERN ...]

mutmut runs in this process, with three cuts to its fixed phases (docs/testing.md,
"Where a mutant's time goes"):

* only the files holding the functions named by the patterns are mutated (pyproject's
  ``only_mutate`` lists every file any pattern may name; mutating the others costs time
  and runs nothing);
* the clean run is skipped after a fresh stats run: mutmut's stats run has just run every
  selected test with -x and stops the run unless all passed, so running the subset the
  mutants reach again proves nothing new (about 3 minutes of the full set's tests);
* ``MUTATION_TESTS`` (test files or node ids, space-separated), when set, replaces the
  test selection for a run of a few functions: the stats run then runs those modules
  only. A mutant those tests miss counts as a survivor, so a narrowed run's score is a
  lower bound; the full run uses the whole selection.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def files_of(patterns: list[str], only_mutate: list[str]) -> list[str]:
    """The files of ``only_mutate`` holding a function some mutant pattern names (all of
    them without patterns). A pattern is ``<module>.x<function>__mutmut_<n>``, globbed."""
    modules = [p.split(".x", 1)[0] for p in patterns if not p.startswith("-")]
    if not modules:
        return only_mutate
    return [f for f in only_mutate if any(fnmatch.fnmatch(f.removesuffix(".py").replace("/", "."), m) for m in modules)]


def split_by_size(paths: list[str], n: int) -> list[list[str]]:
    """``paths`` in ``n`` groups of about equal size on disk (a test module's size stands
    for its running time: no durations are known before the stats run)."""
    groups: list[list[str]] = [[] for _ in range(n)]
    sizes = [0] * n
    for p in sorted(paths, key=lambda p: -_size(p)):
        i = sizes.index(min(sizes))
        groups[i].append(p)
        sizes[i] += _size(p)
    return [g for g in groups if g]


def _size(path: str) -> int:
    f = ROOT / path.split("::", 1)[0]
    return sum(x.stat().st_size for x in f.rglob("test_*.py")) if f.is_dir() else f.stat().st_size if f.exists() else 0


def _collect_stats_split(runner: Any, groups: list[list[str]]) -> int:
    """mutmut's stats run (every selected test under its call tracing), in one forked
    session per group at once instead of one for all: the tests mostly wait on the broker
    and the database, so two sessions take little more than the longer half. Each child
    sends back what mutmut's own child would (mutmut.models.results.StatsResult), merged
    here as ForkServerRunner.collect_stats merges its one."""
    import pickle
    import traceback

    from mutmut.models.results import StatsResult
    from mutmut.state import state

    children = []
    for group in groups:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run this group's tests, send the stats, exit
            os.close(read_fd)
            try:
                code = runner.test_runner_class(**runner.test_runner_args).run_stats(tests=group)
                st = state()
                result = StatsResult(
                    exit_code=code,
                    tests_by_mangled_function_name=dict(st.tests_by_mangled_function_name),
                    duration_by_test=dict(st.duration_by_test),
                    stats_time=st.stats_time or 0.0,
                    function_dependencies=dict(st.function_dependencies),
                ).to_dict()
                payload: dict[str, Any] = {"ok": True, "value": result}
            except BaseException:
                payload = {"ok": False, "error": traceback.format_exc()}
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(payload, out)
            os._exit(0)
        os.close(write_fd)
        children.append((pid, read_fd))
    codes = []
    for pid, read_fd in children:  # a child blocked on a full pipe waits for its turn here
        with os.fdopen(read_fd, "rb") as inp:
            payload = pickle.load(inp)
        os.waitpid(pid, 0)
        if not payload["ok"]:
            raise ChildProcessError(f"stats run failed:\n{payload['error']}")
        r = StatsResult.from_dict(payload["value"])
        for k, v in r.tests_by_mangled_function_name.items():
            state().tests_by_mangled_function_name[k] |= v
        state().duration_by_test.update(r.duration_by_test)
        state().stats_time = (state().stats_time or 0.0) + r.stats_time
        for k, v in r.function_dependencies.items():
            state().function_dependencies[k] = state().function_dependencies.get(k, set()) | v
        codes.append(r.exit_code)
    return next((c for c in codes if c != 0), 0)


def run_mutmut(argv: list[str]) -> int:
    # mutmut reads pyproject.toml from the working directory. This process imports none
    # of our code: the sessions import the mutated copies from mutants/.
    os.chdir(ROOT)
    from mutmut import __main__ as mutmut_main
    from mutmut.configuration import config
    from mutmut.workers.isolation import ForkServerRunner

    cfg = config()
    cfg.debug = cfg.debug or bool(os.environ.get("MUTATION_DEBUG"))
    cfg.only_mutate = files_of(argv, cfg.only_mutate)
    tests = os.environ.get("MUTATION_TESTS", "").split()
    if tests:
        cfg.pytest_add_cli_args_test_selection = tests
    if not (ROOT / "mutants" / "mutmut-stats.json").exists():  # the stats run will be a full one

        def after_fresh_stats(self: ForkServerRunner, tests: Iterable[str]) -> int:
            print("    skipped: the stats run has just run these tests, and all passed")
            return 0

        ForkServerRunner.run_clean_tests = after_fresh_stats  # type: ignore[method-assign]
    split = int(os.environ.get("MUTATION_STATS_SPLIT", "2"))
    if split > 1 and len(cfg.pytest_add_cli_args_test_selection) > 1:
        collect_stats = ForkServerRunner.collect_stats

        def collect_stats_split(self: ForkServerRunner, tests: Iterable[str] | None) -> int:
            if tests:  # new tests only (not in a fresh run): as mutmut does
                return collect_stats(self, tests)
            return _collect_stats_split(self, split_by_size(cfg.pytest_add_cli_args_test_selection, split))

        ForkServerRunner.collect_stats = collect_stats_split  # type: ignore[method-assign]
    try:
        mutmut_main.cli.main(["run", *argv], prog_name="mutmut", standalone_mode=False)
    except SystemExit as stop:  # mutmut exits on a failed stats run or forced-fail check
        return int(stop.code or 0)
    return 0


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))  # run as a script from the repository: our packages and tests/support
    from shared.broker import EmbeddedBroker, free_port
    from shared.db import make_engine
    from shared.migrate import upgrade
    from shared.settings import Settings
    from tests.support.helpers import warm_up_broker

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
            # mutmut in a process of its own, which has imported none of our code (nor
            # registered our metrics): its sessions must import the mutated copies.
            return subprocess.run([sys.executable, __file__, "--in-mutmut", *argv], env=env, cwd=ROOT).returncode
        finally:
            broker.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--in-mutmut"]:
        sys.exit(run_mutmut(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
