"""Tear rigs down when the process ends in ways a `with` block does not see: exit without leaving the
block (atexit) and SIGTERM / SIGHUP, whose default action skips both `finally` and atexit.

SIGINT needs nothing here (KeyboardInterrupt unwinds through `with` and fixture finalizers); SIGKILL cannot
be caught, and `cleanup_stale` at the next start covers it. Signal handlers are installed only where the
signal still has its default action, so an application's own handler always wins.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from types import FrameType
from typing import Protocol

from generic.logfmt import get_logger

log = get_logger(__name__)
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Downable(Protocol):
    owner_pid: int

    def down(self) -> None: ...


_live: dict[int, Downable] = {}
_atexit_registered = False
_signals_installed = False


def track(rig: Downable) -> None:
    """Tear `rig` down at exit or on a fatal signal unless `untrack`ed first."""
    _install()
    _live[id(rig)] = rig


def untrack(rig: Downable) -> None:
    _live.pop(id(rig), None)


def down_all() -> None:
    """Tear down every tracked rig this process owns (a forked child inherits the registry, not the rigs)."""
    for rig in list(_live.values()):
        if rig.owner_pid != os.getpid():
            continue
        try:
            rig.down()
        except Exception:
            log.exception("rig.teardown_failed")


def _on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
    if any(rig.owner_pid == os.getpid() for rig in _live.values()):  # not in a forked helper (pyroute2 NetNS)
        log.warning("rig.signal", signal=signal.Signals(signum).name)
        down_all()
    os.kill(os.getpid(), signum)  # die of the signal, as without us (exit status, parent's view)


def _install() -> None:
    global _atexit_registered, _signals_installed
    if not _atexit_registered:
        atexit.register(down_all)
        _atexit_registered = True
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; a later rig started there will
    for sig in _SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)
    _signals_installed = True
