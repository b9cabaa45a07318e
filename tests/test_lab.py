"""`kube-vip-metal lab` runs its failover scenario end to end and leaves nothing behind."""

from __future__ import annotations

import re

from kubevip_metal.rig import cleanup_stale
from kubevip_metal.rig.netns import names
from tests.conftest import run_cli
from tests.rig_support import require_rig


def test_lab_shows_a_crash_and_a_graceful_hand_over() -> None:
    require_rig()
    before = set(names())
    result = run_cli(["lab", "--timers", "1,0.75,0.2"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CRASH" in result.stdout and "SIGTERM" in result.stdout
    crash = re.search(r"crash of the leader\s+outage\s+(\d+) ms", result.stdout)
    graceful = re.search(r"graceful hand-over\s+outage\s+<?\s*(\d+) ms", result.stdout)
    assert crash and graceful, result.stdout
    assert int(crash.group(1)) < 3000  # seen by the client, bounded by the 1 s lease plus detection
    assert set(names()) <= before  # every namespace it made is gone
    cleanup_stale()


def test_lab_rejects_bad_timers() -> None:
    result = run_cli(["lab", "--timers", "1,1,1"])
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--timers" in result.stderr


def test_lab_needs_no_kubernetes_flags() -> None:
    result = run_cli(["lab", "--help"])
    assert result.returncode == 0 and "--keep" in result.stdout
