"""Every setting is in the README's configuration table (one table, no hidden knobs)."""

from __future__ import annotations

import re

from shared.settings import Settings
from tests.support.helpers import ROOT

README = ROOT / "README.md"


def documented_names() -> set[str]:
    names: set[str] = set()
    for line in README.read_text().splitlines():
        if not line.startswith("| `TOUCHLINE_"):
            continue
        cell = line.split("|")[1]
        full = re.findall(r"`(TOUCHLINE_[A-Z0-9_]+)`", cell)
        names.update(full)
        # "`TOUCHLINE_MAIL_SINK_HOST` / `_PORT`" documents TOUCHLINE_MAIL_SINK_PORT too
        for suffix in re.findall(r"`(_[A-Z0-9_]+)`", cell):
            base = full[0]
            for cut in range(base.count("_"), 1, -1):
                stem = base.rsplit("_", cut - 1)[0] if cut > 1 else base
                names.add(stem + suffix)
    return names


def test_every_setting_is_in_the_readme_table():
    documented = documented_names()
    missing = [f"TOUCHLINE_{name.upper()}" for name in Settings.model_fields if f"TOUCHLINE_{name.upper()}" not in documented]
    assert not missing, f"add these to the README's configuration table: {missing}"
