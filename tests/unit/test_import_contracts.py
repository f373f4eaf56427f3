"""The import contracts (pyproject.toml, docs/architecture.md "The doors") catch what they
are for: on a copy of the tree, a console view that imports an outreach repository, or
rules that imports outreach's door, makes ``lint-imports`` (and so ``make lint``) fail
naming the contract; the untouched copy passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """services/, shared/ and pyproject.toml copied to ``tmp_path``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("services", "shared"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy first on the path, so the packages analysed are the copy's, not the checkout's.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # noqa: F401\n")


def test_the_untouched_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_console_view_importing_an_outreach_repository_breaks_the_door_contract(tree: Path) -> None:
    add_import(tree / "services/console/views/lists.py", "from services.outreach.delivery import repository as probe")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "only services.outreach.interface crosses outreach's line BROKEN" in result.stdout
    assert "services.console.views.lists -> services.outreach.delivery.repository" in result.stdout


def test_rules_importing_outreach_breaks_the_layers(tree: Path) -> None:
    # Even through outreach's door: rules is below outreach.
    add_import(tree / "services/rules/signals/service.py", "from services.outreach.interface import signals_with_decision")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "layers: shared < ingest < rules < outreach < console < demo | jobs < wiring BROKEN" in result.stdout
