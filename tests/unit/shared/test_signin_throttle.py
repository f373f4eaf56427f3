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


def test_a_delay_is_capped_at_a_minute_and_at_the_window():
    """Delays double but never exceed MAX_DELAY_SECONDS (60), nor the window when it is shorter."""
    long_window = SignInThrottle(failures_before_delay=0, failures_before_refusal=100, window_seconds=3600, max_tracked=10)
    short_window = SignInThrottle(failures_before_delay=0, failures_before_refusal=100, window_seconds=5, max_tracked=10)
    for t, expected in ((long_window, [1, 2, 4, 8, 16, 32, 60, 60]), (short_window, [1, 2, 4, 5, 5, 5, 5, 5])):
        waits = []
        for _ in range(8):
            t.failed("10.0.0.1", "abcd", T0)
            waits.append(t.wait("10.0.0.1", "abcd", T0))
        assert waits == expected


def test_a_failure_exactly_a_window_after_the_last_still_counts():
    t = throttle()
    t.failed("10.0.0.1", "abcd", T0)
    assert t.failed("10.0.0.1", "abcd", T0 + timedelta(seconds=600)) == 2  # at the window's end: same window
    assert t.failed("10.0.0.1", "abcd", T0 + timedelta(seconds=1200, microseconds=1)) == 1  # past it: forgotten


def test_when_full_the_longest_quiet_pair_is_forgotten_first():
    t = throttle(max_tracked=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        t.failed(address, "abcd", T0)
    t.failed("10.0.0.1", "abcd", T0)  # failed again: now the most recent
    t.failed("10.0.0.3", "abcd", T0)  # one too many: 10.0.0.2 goes
    assert len(t) == 2
    assert t.failed("10.0.0.1", "abcd", T0) == 3 and t.failed("10.0.0.3", "abcd", T0) == 2
