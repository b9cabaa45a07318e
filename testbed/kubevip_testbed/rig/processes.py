"""Stopping processes by PID: SIGTERM, a short grace for a clean exit, then SIGKILL.

Always by PID, never by name: other runs (and other people's daemons) share the machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from generic.logfmt import get_logger

log = get_logger(__name__)
_POLL = 0.01


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on; the command name before it may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: it has exited, only its parent has not reaped it."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


@functools.cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


def started_at(pid: int) -> float | None:
    """When `pid` started (epoch seconds, ~1 s precise), to tell a reused PID from the original owner."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def _send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL)
        left = [pid for pid in left if alive(pid)]
    return left


def terminate(pids: Iterable[int], grace: float) -> list[int]:
    """SIGTERM each PID, wait up to `grace` seconds, SIGKILL the rest. Returns the PIDs that needed SIGKILL.
    The calling process is never signalled."""
    targets = sorted({pid for pid in pids if pid != os.getpid() and alive(pid)})
    if not targets:
        return []
    _send(targets, signal.SIGTERM)
    stubborn = _wait_gone(targets, grace)
    _send(stubborn, signal.SIGKILL)
    survivors = _wait_gone(stubborn, 2.0)
    if survivors:  # in uninterruptible sleep; nothing more a signal can do
        log.warning("rig.kill_failed", pids=survivors)
    return stubborn
