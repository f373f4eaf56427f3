"""Fault points for crash tests. ``TOUCHLINE_FAULT=<name>`` makes the process exit
hard (no cleanup, no offset commit) the first time it reaches that point, exactly as
a SIGKILL or an OOM kill would. Unset in normal operation: the check is one dict lookup."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
CRASH_EXIT_CODE = 86


def point(name: str) -> None:
    if os.environ.get("TOUCHLINE_FAULT") == name:
        log.error("fault injection: crashing at %s", name)
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
