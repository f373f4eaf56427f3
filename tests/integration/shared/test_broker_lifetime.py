"""The embedded broker never outlives the process that started it, even one killed by
SIGKILL (no handler of ours runs): an orphaned broker kept its port and every record in
memory (seen after killed test runs), and a second `touchline run` then found the port taken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from shared.broker import dies_with_parent

STARTER = """
import sys
from shared.broker import EmbeddedBroker, free_port
broker = EmbeddedBroker("127.0.0.1", free_port()).start()
print(broker.proc.pid, flush=True)
sys.stdin.read()  # until killed
"""


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within  # bounds a failing test only
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_broker_dies_with_the_process_that_started_it_even_by_sigkill():
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    broker_pid = int(starter.stdout.readline())
    try:
        assert psutil.pid_exists(broker_pid)
        os.kill(starter.pid, signal.SIGKILL)
        starter.wait(10)
        assert _gone(broker_pid, 10), "the broker outlived the process that started it"
    finally:
        if psutil.pid_exists(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)


def test_only_the_main_thread_arms_it():
    """The kernel sends the signal when the starting *thread* ends: a child started from a
    short-lived thread would be killed with that thread, so none is armed there."""
    import threading

    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(dies_with_parent()))
    t.start()
    t.join()
    assert seen == [None]
    assert dies_with_parent() is not None
