"""tools/install-system-deps.sh's axe-core step (issue 23, item 4): it runs `npm ci` into
var/a11y with the pinned package.json and lock when var/a11y holds no axe-core or another
version, and nothing when it holds the pinned one. A stand-in `npm` on PATH records its
arguments and "installs" the version the copied package.json names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.support.helpers import ROOT

FAKE_NPM = """#!/bin/sh
echo "$@" >> "$NPM_LOG"
prefix=$3
version=$(sed -n 's/.*"axe-core": *"\\([^"]*\\)".*/\\1/p' "$prefix/package.json")
mkdir -p "$prefix/node_modules/axe-core"
printf '{\\n  "name": "axe-core",\\n  "version": "%s"\\n}\\n' "$version" > "$prefix/node_modules/axe-core/package.json"
"""


def _run(repo: Path, bin_dir: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NPM_LOG": str(log)}
    return subprocess.run(
        [str(repo / "tools" / "install-system-deps.sh"), "axe-core"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_pinned_axe_core_is_installed_once_and_again_when_the_pin_moves(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tools", repo / "tools")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(FAKE_NPM)
    (bin_dir / "npm").chmod(0o755)
    log = tmp_path / "npm.log"
    pinned = json.loads((ROOT / "tools" / "a11y" / "package.json").read_text())["dependencies"]["axe-core"]

    first = _run(repo, bin_dir, log)
    assert first.returncode == 0, first.stderr
    assert log.read_text().splitlines() == ["ci --prefix var/a11y --ignore-scripts --no-audit --no-fund --loglevel=error"]
    assert (repo / "var" / "a11y" / "package-lock.json").read_text() == (ROOT / "tools" / "a11y" / "package-lock.json").read_text()
    installed = json.loads((repo / "var" / "a11y" / "node_modules" / "axe-core" / "package.json").read_text())["version"]
    assert installed == pinned

    again = _run(repo, bin_dir, log)
    assert again.returncode == 0 and len(log.read_text().splitlines()) == 1  # the pinned version is there: no npm

    package = repo / "tools" / "a11y" / "package.json"
    package.write_text(package.read_text().replace(f'"axe-core": "{pinned}"', '"axe-core": "4.0.0"'))
    moved = _run(repo, bin_dir, log)
    assert moved.returncode == 0, moved.stderr
    assert len(log.read_text().splitlines()) == 2
    assert json.loads((repo / "var" / "a11y" / "node_modules" / "axe-core" / "package.json").read_text())["version"] == "4.0.0"
