"""`kube-vip-metal manager`: the daemon's lifecycle.

For now it logs the effective configuration (secrets masked) and waits for SIGTERM or SIGINT, then exits 0
at once; the election, VIP and BGP work plugs into `run` as it lands.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from generic import logfmt
from kubevip_metal import __version__
from kubevip_metal.config import Config, describe

log = logfmt.get_logger("kubevip_metal.manager")


def run(config: Config, stop: threading.Event | None = None) -> int:
    """Run until a signal (or `stop`) says to end; returns the process exit status."""
    logfmt.configure(config.observability.log_level, config.observability.log_format)
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal.received", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    for warning in config.warnings:
        log.warning("config.warning", message=warning)
    log.info("manager.starting", version=__version__, node=config.node_name, mode=config.mode,
             control_plane=config.control_plane, services=config.services.enabled)
    log.info("config.effective", **dict(describe(config)))
    while not stop.wait(0.5):
        pass
    log.info("manager.stopped")
    return 0
