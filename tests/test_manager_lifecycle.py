"""`manager` logs its effective configuration, then exits 0 soon after SIGTERM or SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, clean_env


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*CLI, "manager", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(env))


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 15) -> list[str]:
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not logged: {lines}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exits_zero_within_two_seconds(signum: signal.Signals) -> None:
    process = _start(["--controlplane", "--arp", "--address", "192.0.2.10"])
    _wait_for_line(process, "config.effective")
    sent = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=5)
    elapsed = time.monotonic() - sent
    assert process.returncode == 0
    assert elapsed < 2.0
    assert process.stderr is not None
    rest = process.stderr.read()
    assert "manager.stopped" in rest and "Traceback" not in rest


def test_json_logs_are_one_object_per_line_with_the_effective_config() -> None:
    process = _start([], {"cp_enable": "true", "vip_arp": "true", "address": "192.0.2.10", "log_format": "json",
                          "vip_leaseduration": "15", "vip_renewdeadline": "10", "vip_retryperiod": "2"})
    lines = _wait_for_line(process, "config.effective")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=5)
    events = [json.loads(line) for line in lines]
    effective = next(e for e in events if e["event"] == "config.effective")
    assert effective["election.timers.lease_duration"] == 15.0
    assert effective["vip.addresses"] == ["192.0.2.10"]
    assert effective["mode"] == "arp"
    assert all({"ts", "level", "event"} <= set(e) for e in events)


def test_deprecated_vip_logs_a_warning() -> None:
    process = _start(["--controlplane", "--arp", "--vip", "192.0.2.10"])
    lines = _wait_for_line(process, "config.effective")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=5)
    assert any("level=warning" in line and "deprecated" in line for line in lines)


def _catches(pid: int, signum: signal.Signals) -> bool:
    """Whether the process has a handler for `signum` now (SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_a_stop_signal_during_start_up_is_a_clean_exit_too() -> None:
    # the kubelet may stop a manager that is still importing; sent the moment SIGTERM is caught at all (the
    # console script's first step, long before the manager's own handlers), it must still mean exit 0
    process = _start(["--controlplane", "--arp", "--address", "192.0.2.10"])
    deadline = time.monotonic() + 10
    while not _catches(process.pid, signal.SIGTERM):
        assert time.monotonic() < deadline and process.poll() is None, "SIGTERM is never caught"
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=5)
    assert process.stderr is not None
    logged = process.stderr.read()
    assert process.returncode == 0, logged
    assert "manager.stopped" in logged and "Traceback" not in logged
    assert "before=start" in logged  # it ended before doing anything: nothing to release
