"""The secret (issue 18, finding 4): never a published value outside tests. Development
generates one into the var dir on first use and keeps it; a placeholder or a short
secret is refused at start with a message that says how to set one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from pydantic import ValidationError

from shared.settings import KNOWN_PLACEHOLDERS, TEST_SECRET, Settings


def test_development_generates_a_private_secret_once_and_keeps_it(tmp_path):
    first = Settings(env="development", var_dir=tmp_path / "var").secret
    path = tmp_path / "var" / "secret-key"
    assert path.read_text().strip() == first and len(first.encode()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first not in KNOWN_PLACEHOLDERS
    assert Settings(env="development", var_dir=tmp_path / "var").secret == first  # the next process reads it
    assert Settings(env="development", var_dir=tmp_path / "other").secret != first
    assert [p.name for p in path.parent.iterdir()] == ["secret-key"]  # no temp file left behind


def test_an_explicit_secret_wins_and_no_file_is_written(tmp_path):
    value = "x" * 40
    assert Settings(env="development", var_dir=tmp_path, secret_key=value).secret == value
    assert not (tmp_path / "secret-key").exists()


def test_tests_get_a_fixed_secret_that_nothing_else_accepts(tmp_path):
    assert Settings(env="test", var_dir=tmp_path).secret == TEST_SECRET
    with pytest.raises(ValidationError, match="published placeholder"):
        Settings(env="development", secret_key=TEST_SECRET)


@pytest.mark.parametrize("env", ["development", "production"])
def test_placeholders_and_short_secrets_are_refused(env, tmp_path):
    with pytest.raises(ValidationError, match="published placeholder.*TOUCHLINE_SECRET_KEY"):
        Settings(env=env, secret_key="dev-insecure-change-me")
    with pytest.raises(ValidationError, match="12 bytes; it must be at least 32"):
        Settings(env=env, secret_key="short-secret")
    # A hand-edited file is checked like the variable.
    (tmp_path / "secret-key").write_text("tiny\n")
    with pytest.raises(ValueError, match="secret-key is 4 bytes"):
        _ = Settings(env="development", var_dir=tmp_path).secret


def test_production_needs_an_explicit_shared_secret():
    with pytest.raises(ValidationError, match="production needs TOUCHLINE_SECRET_KEY"):
        Settings(env="production")


def test_start_refuses_a_short_secret_with_a_message_that_says_how_to_set_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHLINE_")}
    env.update({"TOUCHLINE_VAR_DIR": str(tmp_path), "TOUCHLINE_SECRET_KEY": "hunter2-too-short"})
    for command in (["api"], ["run"]):
        out = subprocess.run([sys.executable, "-m", "services.wiring.cli", *command], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert "TOUCHLINE_SECRET_KEY is 17 bytes; it must be at least 32" in out.stderr
        assert "secrets.token_urlsafe(48)" in out.stderr
        assert "hunter2" not in out.stderr + out.stdout  # the secret itself is never echoed
        assert not (tmp_path / "touchline.db").exists()  # refused before anything started
