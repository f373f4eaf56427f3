"""The sign-in throttle (shared/signin.py) on a simulated clock: delays that double,
then a refusal for the window, per address and key prefix; forgotten after the window;
bounded in memory."""

from __future__ import annotations

from datetime import timedelta

from shared.clock import SimulatedClock
from shared.signin import SignInThrottle, key_prefix
from tests.support.helpers import T0


def throttle(max_tracked: int = 1000) -> SignInThrottle:
    return SignInThrottle(failures_before_delay=3, failures_before_refusal=8, window_seconds=600, max_tracked=max_tracked)


def test_failures_for_one_key_wait_longer_each_time_then_are_refused_for_the_window():
    t, clock = throttle(), SimulatedClock(T0)
    waits = []
    for _ in range(8):
        assert t.wait("10.0.0.1", "abcd", clock.now()) == 0  # allowed: it waited as told
        t.failed("10.0.0.1", "abcd", clock.now())
        waits.append(t.wait("10.0.0.1", "abcd", clock.now()))
        clock.advance(timedelta(seconds=waits[-1]))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 600]
    clock.advance(timedelta(seconds=-599))
    assert t.wait("10.0.0.1", "abcd", clock.now()) == 599
    assert t.wait("10.0.0.2", "abcd", clock.now()) == 0  # another address: untouched
    assert t.wait("10.0.0.1", "ef01", clock.now()) == 0  # another key from it: untouched
    clock.advance(timedelta(seconds=600))
    assert t.wait("10.0.0.1", "abcd", clock.now()) == 0
    assert t.failed("10.0.0.1", "abcd", clock.now()) == 1  # a window after the last failure: forgotten


def test_memory_is_bounded_by_dropping_the_least_recently_failed():
    t, clock = throttle(max_tracked=100), SimulatedClock(T0)
    for i in range(5000):
        t.failed(f"10.1.{i // 256}.{i % 256}", "abcd", clock.now())
    assert len(t) == 100


def test_only_a_key_shaped_prefix_is_ever_logged():
    assert key_prefix("tl_1a2b3c4d_s3cr3t") == "1a2b3c4d"
    for junk in ("garbage", "tl__x", "s3cr3t_tl_ab_cd", "tl_" + "a" * 40 + "_x", "Bearer tl_ab_cd"):
        assert key_prefix(junk) == "-"
