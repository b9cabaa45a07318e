"""The `kube-vip-metal` console script, kept free of imports so that it catches stop signals first.

The kubelet (or a test, or an operator's Ctrl-C) may stop a manager that is still importing its libraries and
reading its configuration, a few hundred milliseconds. Until the manager's own handlers are installed, SIGTERM and
SIGINT only set an event that the manager honours as soon as it runs: a clean exit 0 like any other stop, never
death by the signal's default action (exit -15) halfway through start-up.
"""

from __future__ import annotations

import signal
import sys
import threading


def catch_stop_signals() -> threading.Event:
    """An event that SIGTERM/SIGINT set from now on (in the main thread; elsewhere the event is never set)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: stop.set())
    return stop


def main() -> int:
    args = sys.argv[1:]
    stop = catch_stop_signals() if args[:1] == ["manager"] else None  # other commands keep the default action
    from kubevip_metal.cli import main as cli_main

    return cli_main(args, stop)
