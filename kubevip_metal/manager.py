"""`kube-vip-metal manager`: the process around the daemon: logging, signals, and the retry loop.

The `Daemon` (kubevip_metal/daemon/) does the work; this module decides what a failure means, in one place: a
`NotReady` (a static pod started before kubeadm wrote its kubeconfig, the interface not up yet, the Metal API
answering 503) is retried with backoff up to 30 s, never a crash loop; a `FatalError` ends the process with
exit 1 and one line. SIGTERM/SIGINT steps down, releases the Lease so a peer takes over at once, removes the VIPs,
and exits 0. Leadership changes are logged with a monotonic timestamp (`mono`, CLOCK_MONOTONIC, comparable across
processes on a host), which the tests and benchmarks use to prove that two leaders never overlap.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from generic import logfmt
from kubevip_metal import __version__
from kubevip_metal.config import Config, describe
from kubevip_metal.daemon.daemon import Daemon, Stopped
from kubevip_metal.daemon.dependencies import Dependencies, production
from kubevip_metal.errors import FatalError, NotReady

log = logfmt.get_logger("kubevip_metal.manager")

MAX_BACKOFF = 30.0


def configure_logging(config: Config) -> None:
    logfmt.configure(config.observability.log_level, config.observability.log_format)


def run(config: Config, stop: threading.Event | None = None, deps: Dependencies | None = None) -> int:
    """Run until a signal (or `stop`) says to end; returns the process exit status."""
    configure_logging(config)
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

    try:
        daemon = Daemon(config, deps or production(config))
    except FatalError as exc:
        log.error("manager.failed", error=str(exc))
        return 1
    failure: list[str] = []
    # bring-up runs beside the main thread, which only waits for a signal: SIGTERM never waits for an API server,
    # a DNS answer or a Metal API retry
    starter = threading.Thread(target=_bring_up, args=(daemon, stop, failure), name="bring-up", daemon=True)
    starter.start()
    while not stop.wait(1.0):
        pass
    daemon.stop()
    starter.join(0.2)
    if failure:
        log.error("manager.failed", error=failure[0])
        return 1
    log.info("manager.stopped")
    return 0


def _bring_up(daemon: Daemon, stop: threading.Event, failure: list[str]) -> None:
    """Start the daemon: `NotReady` is retried with backoff (a static pod may start before kubeadm wrote its
    kubeconfig); `FatalError`, or any bug, ends the process with exit 1 (the kubelet restarts it)."""
    backoff = 1.0
    while not stop.is_set():
        try:
            daemon.start()
            return
        except Stopped:
            return
        except NotReady as exc:
            log.error("manager.not_ready", error=str(exc), retry_in=backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
        except FatalError as exc:
            failure.append(str(exc))
            stop.set()
        except Exception as exc:
            log.exception("manager.crashed", error=f"{type(exc).__name__}: {exc}")
            failure.append(f"unexpected {type(exc).__name__}")
            stop.set()
