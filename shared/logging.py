"""Readable one-line logs: time, level, component, message with key=value pairs."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO", component: str = "touchline") -> None:
    fmt = f"%(asctime)s %(levelname)-5s [{component}] %(name)s: %(message)s"
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connect and rebalance step).
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("aiosmtpd").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
