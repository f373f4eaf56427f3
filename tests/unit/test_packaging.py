"""What `pip install .` (deploy/Dockerfile) ships, and what import-linter sees, is every
package of the code: a directory of modules without an ``__init__.py`` is a namespace
package, which setuptools' package discovery leaves out of the install and import-linter
leaves out of its contracts (services/outreach/engagements once escaped both)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def _code_dirs() -> set[str]:
    return {
        ".".join(d.relative_to(ROOT).parts)
        for top in ("services", "shared")
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    }


def test_every_directory_of_modules_is_a_regular_package():
    assert sorted(d for d in _code_dirs() if not (ROOT / d.replace(".", "/") / "__init__.py").exists()) == []


def test_the_install_ships_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(where=str(ROOT), include=config["include"]))
    assert _code_dirs() - shipped == set()


def test_the_license_is_an_spdx_expression_the_build_backend_reads_without_a_warning():
    """Issue 19, finding 9: the install printed setuptools' "project.license as a TOML
    table is deprecated" warning twice. A plain SPDX string needs setuptools 77 or later."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in config["build-system"]["requires"]
