"""The image's HEALTHCHECK: probe whatever Touchline process this container runs.

It finds the ``touchline`` process (PID 1, or a child of an init such as tini),
reads its arguments, and checks ``/healthz`` for ``touchline api`` or the metrics
endpoint for ``touchline worker NAME --metrics-port N``. Other commands (migrate,
topics, a worker without a metrics port) have nothing to probe: exit 0. Standard
library only, so it runs with the image's Python and nothing else.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def touchline_args(cmdline: list[str]) -> list[str] | None:
    """The arguments after ``touchline`` in a process's command line, or None if the
    process is not Touchline (``touchline …``, ``python …/touchline …`` or
    ``python -m services.wiring.cli …``)."""
    for i, arg in enumerate(cmdline[:3]):
        if os.path.basename(arg) == "touchline":
            return cmdline[i + 1 :]
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "services.wiring.cli":
            return cmdline[i + 2 :]
    return None


def probe_url(args: list[str], env: dict[str, str]) -> str | None:
    """The URL that answers 200 while this Touchline process is healthy, or None."""
    if not args:
        return None
    if args[0] == "api":
        port = _option(args, "--port") or env.get("TOUCHLINE_API_PORT") or "8000"
        return f"http://127.0.0.1:{int(port)}/healthz"
    if args[0] == "worker":
        port = _option(args, "--metrics-port")
        return f"http://127.0.0.1:{int(port)}/metrics" if port else None
    return None


def _process_cmdlines():
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        yield [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def main() -> int:
    for cmdline in _process_cmdlines():
        args = touchline_args(cmdline)
        if args is None:
            continue
        url = probe_url(args, dict(os.environ))
        if url is None:
            return 0
        try:
            with urllib.request.urlopen(url, timeout=4) as resp:  # noqa: S310 (loopback only)
                return 0 if resp.status == 200 else 1
        except OSError as exc:
            print(f"unhealthy: {url}: {exc}", file=sys.stderr)
            return 1
    print("no touchline process found", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
