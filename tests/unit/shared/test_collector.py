"""shared.collector.cyclic_gc_paused: Python's cyclic garbage collector off for a block,
left as the block found it (what runs inside it: tests/unit/services/outreach/
test_consumer_gc.py, tests/unit/services/rules/test_tick_collector.py)."""

from __future__ import annotations

import gc

import pytest

from shared.collector import cyclic_gc_paused


@pytest.fixture(autouse=True)
def restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


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
