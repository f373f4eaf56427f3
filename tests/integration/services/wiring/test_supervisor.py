"""The supervisor's restart policy with real (tiny) processes: a child that keeps dying
is restarted with a doubling backoff, capped, and the others are left alone."""

from __future__ import annotations

import os
import sys
import time

from services.wiring.supervisor import AUX, BACKOFF_INITIAL, PRODUCER, ChildSpec, Supervisor
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
