"""Python's cyclic garbage collector paused around work that allocates hundreds of
thousands of objects that live until it ends (a batch of signals enrolled by outreach,
the rules tick's first run). Each run of the collector's oldest generation walks every
object of the process, and a heap that grows by a quarter starts one: about a fifth of
an outreach batch's time (docs/performance.md, "Outreach"), and seven runs, 1.7 of the
5.4 CPU seconds, in the rules tick's first run over 100,000 accounts ("Rules"). Each
worker is its own process, so the pause is that worker's alone. And each worker process
freezes what it holds as it starts (:func:`freeze_startup_heap`), so that the full runs
that do happen no longer walk it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic collector off for the block, as it was after. Reference counting frees
    almost everything as usual; the few cycles the block leaves are collected after it.
    Never re-enabled by a block that found it off (blocks nest)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive (the imports, the settings, the engine
    and its metadata: what a worker process holds for its whole life) out of the cyclic
    collector's reach for good (``gc.freeze``). Its full runs then walk only what the
    work allocates, not those again each time: in an ingest worker storing 200,000
    events, nine full runs walked ~170,000 objects each, 1.0-1.5 s of a 5-9 s run with
    both threads stopped; frozen, 0.07 s (docs/performance.md, "Ingest"). Called once,
    by ``touchline worker`` as the worker starts; objects made later are collected as
    usual."""
    gc.collect()
    gc.freeze()
