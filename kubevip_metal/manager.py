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
from typing import Any

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

    report = threading.Event()

    def on_usr1(_signum: int, _frame: FrameType | None) -> None:
        report.set()  # logged by the reporter thread: a signal handler should not take the logging locks

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGUSR1, on_usr1)
    if stop.is_set():  # a stop signal while starting up (cli.catch_stop_signals): nothing is held yet
        log.info("manager.stopped", before="start")
        return 0
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
    started = threading.Event()
    try:
        health = start_health(config, daemon, started)
    except OSError as exc:
        log.error("manager.failed", error=str(exc))
        return 1
    # bring-up runs beside the main thread, which only waits for a signal: SIGTERM never waits for an API server,
    # a DNS answer or a Metal API retry
    starter = threading.Thread(target=_bring_up, args=(daemon, stop, failure, started), name="bring-up",
                               daemon=True)
    starter.start()
    # nothing here wakes up at rest: the main thread sleeps until a signal (or the caller) sets `stop`, the
    # reporter until SIGUSR1 (a lock wait is interrupted by a signal, whose handler runs at once)
    threading.Thread(target=_reporter, args=(config, daemon, report), name="reporter", daemon=True).start()
    stop.wait()
    daemon.stop()
    if health is not None:
        health.stop()
    starter.join(0.2)
    if failure:
        log.error("manager.failed", error=failure[0])
        return 1
    log.info("manager.stopped")
    return 0


def start_health(config: Config, daemon: Daemon, started: threading.Event) -> Any:
    """The /healthz and /readyz server on --healthCheckPort (None when it is 0); OSError when the port is taken."""
    port = config.observability.health_port
    if not port:
        return None
    from kubevip_metal.health import HealthServer, liveness, readiness

    return HealthServer(port, lambda: liveness(daemon), lambda: readiness(daemon, started.is_set)).start()


def _reporter(config: Config, daemon: Daemon, report: threading.Event) -> None:
    while report.wait():
        report.clear()
        _report(config, daemon)


def _report(config: Config, daemon: Daemon) -> None:
    """SIGUSR1: the effective configuration (secrets masked) and what this node holds now, one line each."""
    log.info("config.effective", **dict(describe(config)))
    control_plane = daemon.control_plane
    elector = control_plane.elector if control_plane is not None else None
    local = control_plane.local_health if control_plane is not None else None
    services = daemon.services
    sessions = {}
    for announcer in daemon.vips.announcers:
        speaker = getattr(announcer, "speaker", None)
        if speaker is not None:
            sessions = {str(peer): state.phase.value for peer, state in speaker.sessions().items()}
    log.info("state.report", control_plane_leader=elector.is_leader if elector is not None else None,
             control_plane_leader_is=elector.leader if elector is not None else None,
             services_leading=services.leading if services is not None else None,
             services_served=len([1 for active in (services.serving() if services else {}).values() if active]),
             vips=sorted(str(vip) for vip in daemon.vips.wanted()), bgp_sessions=sessions,
             announcers=[a.name for a in daemon.vips.announcers],
             local_health=local.state.value if local is not None else None,
             lease_offered=elector.offering if elector is not None else None)


def _bring_up(daemon: Daemon, stop: threading.Event, failure: list[str],
              started: threading.Event | None = None) -> None:
    """Start the daemon: `NotReady` is retried with backoff (a static pod may start before kubeadm wrote its
    kubeconfig); `FatalError`, or any bug, ends the process with exit 1 (the kubelet restarts it)."""
    backoff = 1.0
    while not stop.is_set():
        try:
            daemon.start()
            if started is not None:
                started.set()
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
