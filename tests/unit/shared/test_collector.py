"""shared.collector.cyclic_gc_paused: Python's cyclic garbage collector off for a block,
left as the block found it (what runs inside it: tests/unit/services/outreach/
test_consumer_gc.py, tests/unit/services/rules/test_tick_collector.py)."""

from __future__ import annotations

import gc

import pytest

from shared.collector import cyclic_gc_paused

pytestmark = pytest.mark.usefixtures("collector_as_found")


def test_the_collector_is_off_in_the_block_and_on_again_after_it_even_on_an_error():
    gc.enable()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_found_off_stays_off():
    gc.disable()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_freezing_the_startup_heap_puts_what_is_alive_out_of_reach_and_still_collects_what_comes_later():
    import weakref

    from shared.collector import freeze_startup_heap

    class Node:
        pass

    early = Node()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # the imports and the rest of this process
        assert not any(o is early for o in gc.get_objects())  # frozen: out of the collector's reach
        late = Node()
        late.me = late  # a cycle made after: only the collector frees it
        gone = weakref.ref(late)
        del late
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_touchline_worker_freezes_its_startup_heap_before_it_runs(monkeypatch):
    """``touchline worker <name>``: the worker, its engine and the imports are frozen
    before the loop starts (shared.collector.freeze_startup_heap)."""
    import argparse
    from contextlib import contextmanager

    from services.wiring import cli
    from shared.kafka import clients
    from shared.settings import Settings

    frozen_at_run: list[int] = []

    class Worker:
        def __init__(self, settings, factory):
            self.stop_event = None

        def run(self):
            frozen_at_run.append(gc.get_freeze_count())

    @contextmanager
    def database(settings):
        yield None

    monkeypatch.setattr(cli, "get_settings", lambda: Settings(env="test"))
    monkeypatch.setattr(cli, "load_worker", lambda name: Worker)
    monkeypatch.setattr(cli, "database", database)
    monkeypatch.setattr(clients, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)  # pytest keeps its own
    gc.unfreeze()
    try:
        assert cli.cmd_worker(argparse.Namespace(name="ingest", metrics_port=None)) == 0
    finally:
        gc.unfreeze()
    assert frozen_at_run and frozen_at_run[0] > 1000
