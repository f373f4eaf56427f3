"""A fix to kafka-python 3.0.12, applied by :func:`apply` when a process starts, before any
consumer joins a group: ``touchline``'s ``main()`` (services/wiring/cli.py) for every command
and child process, tests/conftest.py for the test session. Importing a module never applies it.

The consumer's group join runs as a task on kafka-python's I/O thread. ``poll()`` awaits it
for at most its timeout and leaves it in flight; the next ``poll()`` awaits the same task.
But 3.0.12 tested ``self._join_task.is_done`` before awaiting and, when the task had
finished *between* two polls, threw its result away and sent a new JoinGroup. A worker
that spends a moment after each short poll (a database call that waits on a lock) can then
see every join end in that moment, phase-locked to the broker's join delay, and never get
its partitions: it happened to the ingest worker in CI (two minutes unassigned against a
locked SQLite file). The finished task is now awaited like a pending one: its assignment is
used, or its error is raised into the retry handling that follows.

The function below is kafka-python's ``BaseCoordinator.join_group_async`` (Apache-2.0,
https://github.com/dpkp/kafka-python, version 3.0.12) with that one condition changed; it
replaces the original only on that exact version (the pin in pyproject.toml).
tests/integration/shared/test_group_join.py fails whenever a join that finished between two
polls is sent again, so a kafka-python upgrade that still has the bug is caught there.
"""

from __future__ import annotations

import logging
from typing import Any

import kafka
from kafka import errors as Errors
from kafka.coordinator.base import BaseCoordinator
from kafka.structs import MemberState
from kafka.util import Timer

PATCHED_VERSION = "3.0.12"
log = logging.getLogger("kafka.coordinator")  # the original's logger: its records read the same


# kafka-python's code with one condition changed: kept as it is upstream, not restyled.
# fmt: off
async def _join_group_async(self: Any, timeout_ms: Any = None) -> bool:
    """Drive JoinGroup -> SyncGroup attempts until joined or aborted.

    Internal: the only entry point is :meth:`ensure_active_group_async`
    (and its sync facade :meth:`ensure_active_group`).

    Returns True when the member has been (re-)joined, False on timer
    expiry, or raises on a non-retriable error.
    """
    if not self._use_group_apis:
        raise Errors.UnsupportedVersionError('Group Coordinator APIs require 0.9+ broker')
    timer = Timer(timeout_ms)
    while self.need_rejoin():
        if not await self.ensure_coordinator_ready_async(timeout_ms=timer.timeout_ms):
            return False

        # Schedule the join attempt as a Task on first entry; subsequent
        # poll iterations re-await the same Task while the broker is still
        # processing JoinGroup. Without this cache, a short
        # consumer.poll(timeout_ms=N) that gives up on the first iteration
        # would send a fresh JoinGroup on the next iteration, confusing
        # the broker.
        if self._join_task is None:  # the one change: a finished task is awaited below, not replaced
            # Call _on_join_prepare once per rebalance attempt. The rejoining
            # flag survives across loop iterations so we don't re-run user
            # listeners or auto-commit on retry.
            if not self.rejoining:
                await self._on_join_prepare_async(
                    self._generation.generation_id,
                    self._generation.member_id,
                    timeout_ms=timer.timeout_ms)
                self.rejoining = True

                # Disable heartbeat for the wire round-trip. Must come AFTER
                # _on_join_prepare_async so heartbeats keep flowing while a
                # potentially-slow rebalance listener runs.
                log.debug("Disabling heartbeat during join-group")
                self._disable_heartbeat()

            self._join_task = self._manager.call_soon(self._do_join_and_sync_async)

        try:
            assignment_bytes = await self._manager.wait_for(
                self._join_task, timer.timeout_ms)
        except Errors.KafkaTimeoutError:
            # Timer expired; leave self._join_task in flight so the next
            # poll re-awaits it instead of sending a duplicate JoinGroup.
            return False
        except (Errors.UnknownMemberIdError,
                Errors.RebalanceInProgressError,
                Errors.IllegalGenerationError,
                Errors.MemberIdRequiredError):
            # Side effects (reset_generation / coordinator_dead /
            # request_rejoin) were applied by the response processors;
            # loop back and retry immediately.
            self._join_task = None
            continue
        except Errors.RetriableError:
            self._join_task = None
            if timer.expired:
                return False
            backoff_ms = self.config['retry_backoff_ms']
            if timer.timeout_ms is not None:
                backoff_ms = min(backoff_ms, timer.timeout_ms)
            if backoff_ms > 0:
                await self._manager._net.sleep(backoff_ms / 1000)
            continue
        except Errors.KafkaError:
            # Non-retriable error
            self._join_task = None
            raise

        self._join_task = None

        with self._lock:
            self.rejoining = False
            self.rejoin_needed = False
            self.state = MemberState.STABLE
            self._enable_heartbeat()
        await self._on_join_complete_async(
            self._generation.generation_id,
            self._generation.member_id,
            self._generation.protocol,
            assignment_bytes)
        return True
    return True
# fmt: on


def apply() -> bool:
    """Replace the join loop on kafka-python 3.0.12; returns whether it did."""
    if kafka.__version__ != PATCHED_VERSION:
        return False
    BaseCoordinator.join_group_async = _join_group_async
    return True
