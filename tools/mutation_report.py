"""Summarise a mutmut run (make mutation): the score per module and overall, and every
surviving mutant with its diff, for docs/testing.md. Reads mutants/*.meta (mutmut 3)."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {
    1: "killed",
    3: "killed",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    -9: "killed",
    -11: "killed",
}


def status(code) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    return {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}.get(code, "suspicious")


def main(patterns: list[str], show_diffs: bool) -> None:
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            s = status(code)
            module = name.split(".x", 1)[0]
            by_module[module][s] += 1
            if s in ("survived", "no tests", "suspicious"):
                survivors.append((name, s))
    total = Counter()
    print(f"{'module':48} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'unrun':>6} {'score':>6}")
    for module, c in sorted(by_module.items()):
        total += c
        _row(module, c)
    _row("TOTAL", total)
    if show_diffs:
        for name, s in survivors:
            print(f"\n## {name} ({s})")
            print(subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True).stdout.strip())
    else:
        print(f"\n{len(survivors)} mutants not killed; `make mutation-survivors` prints their diffs")
    _times(patterns)


def _times(patterns: list[str]) -> None:
    """Where the mutants' test sessions spent their time, per function (the sessions' own
    record, tests/support/mutation.py: mutmut 3.8 keeps none under its fork server)."""
    path = Path("mutants/mutation-times.jsonl")
    if not path.is_file():
        return
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0])
    for line in path.read_text().splitlines():
        t = json.loads(line)
        if patterns and not any(fnmatch.fnmatch(t["mutant"], p) for p in patterns):
            continue
        row = per[t["mutant"].rsplit("__mutmut_", 1)[0]]
        i = 0 if t["exit"] != 0 else 2
        row[i] += 1
        row[i + 1] += t["seconds"]
    print(f"\n{'function':64} {'killed':>6} {'their s':>8} {'lived':>6} {'their s':>8}")
    for fn, (k, ks, s, ss) in sorted(per.items(), key=lambda kv: -(kv[1][1] + kv[1][3])):
        print(f"{fn:64} {k:>6} {ks:>8.0f} {s:>6} {ss:>8.0f}")
    print(f"{'TOTAL test-session seconds':64} {sum(r[1] + r[3] for r in per.values()):>31.0f}")


def _row(module: str, c: Counter) -> None:
    run = c["killed"] + c["survived"] + c["no tests"] + c["suspicious"]
    score = f"{100 * c['killed'] / run:.0f}%" if run else "-"
    print(
        f"{module:48} {sum(c.values()):>7} {c['killed']:>6} {c['survived'] + c['suspicious']:>8} {c['no tests']:>8} "
        f"{c['not checked']:>6} {score:>6}"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    show = "--diffs" in args
    main([a for a in args if a != "--diffs"], show)
