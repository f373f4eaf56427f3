"""The supervisor's restart policy with real (tiny) processes: a child that keeps dying
is restarted with a doubling backoff, capped, and the others are left alone. Its watch
on a real embedded broker's memory: sampled, exported, warned about past the threshold."""

from __future__ import annotations

import logging
import os
import sys
import time

from prometheus_client import REGISTRY

from services.wiring.supervisor import (
    AUX,
    BACKOFF_INITIAL,
    MEMORY_CHECK_SECONDS,
    MEMORY_WARN_EVERY,
    PRODUCER,
    ChildSpec,
    Supervisor,
    rss_mb,
)
from shared.broker import EmbeddedBroker, free_port
from shared.metrics import EMBEDDED_BROKER_RSS, EMBEDDED_BROKER_WARN
from shared.settings import Settings


def test_a_dying_child_is_restarted_with_capped_backoff_and_the_others_untouched(tmp_path):
    settings = Settings(env="test", var_dir=tmp_path, retry_max_seconds=1.0)
    marker = tmp_path / "starts"  # each start leaves a mark: the process really ran
    dies = ChildSpec("dies", [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"], AUX)
    stays = ChildSpec("stays", [sys.executable, "-c", "import time; time.sleep(600)"], PRODUCER)
    sup = Supervisor(settings, [dies, stays], dict(os.environ))
    sup.start_all()
    stays_pid = sup.pid("stays")
    try:
        deadline = time.monotonic() + 120
        while sup.children["dies"].restarts < 3 and time.monotonic() < deadline:
            sup.heal()
            time.sleep(0.05)  # polling real processes
        assert sup.children["dies"].restarts == 3
        deadline = time.monotonic() + 60
        while len(marker.read_text()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)  # the third restart is running
        assert marker.read_text() == "xxxx"
        assert sup.children["dies"].delays[:3] == [BACKOFF_INITIAL, 1.0, 1.0]  # doubling, capped at TOUCHLINE_RETRY_MAX_SECONDS
        assert sup.pid("stays") == stays_pid and sup.children["stays"].proc.poll() is None
    finally:
        sup.shutdown()  # no broker: nothing to drain; stops both
    assert sup.children["stays"].proc.poll() is not None


def test_the_embedded_brokers_memory_is_exported_and_warned_about_once_per_interval(tmp_path, caplog):
    """A real broker process, a 1 MB threshold (any broker is over it): every due sample
    sets the gauges; the warning, naming the remedies, is logged once per MEMORY_WARN_EVERY,
    not at every sample. Time is the supervisor's ``now`` argument, so nothing waits."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path / "broker.log").start()
    warnings = lambda: [r.getMessage() for r in caplog.records if "TOUCHLINE_EMBEDDED_BROKER_WARN_MB" in r.getMessage()]  # noqa: E731
    gauge = lambda name: REGISTRY.get_sample_value(name)  # noqa: E731
    try:
        sup = Supervisor(Settings(env="test", var_dir=tmp_path, embedded_broker_warn_mb=1), [], dict(os.environ), broker)
        caplog.set_level(logging.WARNING, logger="touchline.supervisor")
        t = sup._next_memory_check
        assert sup.check_broker_memory(t - 1) is None  # not due yet: not even sampled
        mb = sup.check_broker_memory(t)
        assert mb is not None and mb > 1 and gauge("touchline_embedded_broker_rss_bytes") == mb * 2**20
        assert gauge("touchline_embedded_broker_warn_bytes") == 2**20
        assert rss_mb(broker.proc.pid) > 1  # the sample is the broker process's own RSS
        [first] = warnings()
        assert f"holds {mb:,.0f} MB (over TOUCHLINE_EMBEDDED_BROKER_WARN_MB=1)" in first
        for remedy in ("run a real Kafka", "deploy/compose", "TOUCHLINE_KAFKA_BOOTSTRAP", "restart `touchline run`"):
            assert remedy in first
        assert "TOUCHLINE_EMBEDDED_BROKER_MAX_MB" in first and "can lose records in a recycle" in first
        # Sampled again every MEMORY_CHECK_SECONDS; warned again only after MEMORY_WARN_EVERY.
        samples = 1
        while t + MEMORY_CHECK_SECONDS < sup._next_memory_warning:
            t += MEMORY_CHECK_SECONDS
            assert sup.check_broker_memory(t) is not None
            samples += 1
        assert samples > 2 and len(warnings()) == 1
        assert sup.check_broker_memory(t + MEMORY_WARN_EVERY) is not None and len(warnings()) == 2

        # Under the threshold, or with the warning off: exported, not warned about.
        for warn_mb in (10**6, 0):
            quiet = Supervisor(Settings(env="test", var_dir=tmp_path, embedded_broker_warn_mb=warn_mb), [], dict(os.environ), broker)
            assert quiet.check_broker_memory(quiet._next_memory_check) is not None
            assert gauge("touchline_embedded_broker_warn_bytes") == warn_mb * 2**20
        assert len(warnings()) == 2
    finally:
        broker.stop()
        EMBEDDED_BROKER_RSS.set(0)  # 0: not sampled (the console shows nothing)
        EMBEDDED_BROKER_WARN.set(0)
