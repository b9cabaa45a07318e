"""`kube-vip-metal manager`: the daemon's lifecycle.

Builds the API client, campaigns for the control-plane Lease (when the mode needs one owner), and on
SIGTERM/SIGINT steps down and releases the Lease so a peer takes over at once, then exits 0. Leadership
changes are logged with a monotonic timestamp (`mono`, CLOCK_MONOTONIC, comparable across processes on a
host), which the tests and benchmarks use to prove that two leaders never overlap. VIPs, BGP and the Metal
API plug into the election callbacks as they land.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from generic import logfmt
from generic.addresses import AddressError, Addresses
from generic.announce import ArpAnnouncer, LocalAddressAnnouncer
from generic.election import Callbacks, Elector, Timers
from kubevip_metal import __version__
from kubevip_metal.config import Config, Mode, describe
from kubevip_metal.controlplane import ControlPlaneVip, VipSetupError, resolve_vips
from kubevip_metal.kubeclient import KubeClientError

log = logfmt.get_logger("kubevip_metal.manager")


def _control_plane_elector(config: Config, vip: ControlPlaneVip | None) -> Elector:
    from generic.election.lease_lock import LeaseLock
    from kubevip_metal.kubeclient import build_api_client

    api = build_api_client(config)
    lock = LeaseLock(api, config.election.namespace, config.election.lease_name)
    timers = config.election.timers
    assert config.node_name is not None

    def started() -> None:
        if vip is not None:
            vip.set_leading(True)
        else:
            log.info("controlplane.leading", node=config.node_name, mono=round(time.monotonic(), 6))

    def stopped() -> None:
        if vip is not None:
            vip.set_leading(False)
        else:
            log.info("controlplane.following", node=config.node_name, mono=round(time.monotonic(), 6))

    def new_leader(identity: str) -> None:
        log.info("controlplane.leader", leader=identity)

    return Elector(lock, config.node_name, Timers(timers.duration, timers.renew_deadline, timers.retry_period),
                   Callbacks(started, stopped, new_leader))


def _control_plane_vip(config: Config) -> ControlPlaneVip | None:
    """ARP: the VIP on an interface, announced by gratuitous ARP / NDP. Metal Elastic IP: the VIP on `lo`
    (or --interface) so the node accepts what Metal routes to it, and the EIP assigned to the leader's device.
    BGP lands later."""
    if config.mode is Mode.ARP:
        addresses = Addresses()
        return ControlPlaneVip(resolve_vips(config, addresses), ArpAnnouncer(config.vip.arp_rate_ms / 1000, addresses))
    if config.mode is Mode.METAL_EIP:
        from kubevip_metal.metal.setup import MetalSetupPending, elastic_ip

        try:
            eip = elastic_ip(config)
        except MetalSetupPending as exc:
            raise VipSetupError(f"Metal API: {exc}") from None
        eip.start()
        addresses = Addresses()
        return ControlPlaneVip(resolve_vips(config, addresses), LocalAddressAnnouncer(addresses),
                               followers=[eip.set_leading], stoppers=[eip.stop])
    return None


def _fatal_errors() -> tuple[type[Exception], ...]:
    """Setup errors that waiting will not fix (loaded lazily: only Metal has them so far)."""
    import sys

    if "kubevip_metal.metal.setup" in sys.modules:
        from kubevip_metal.metal.setup import MetalSetupFatal

        return (MetalSetupFatal,)
    return ()


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

    electors: list[Elector] = []
    cp_vip: ControlPlaneVip | None = None
    wanted = config.control_plane and config.control_plane_elects
    backoff = 1.0
    while not stop.is_set():
        if wanted and not electors:
            try:
                if cp_vip is None:
                    cp_vip = _control_plane_vip(config)
                    if cp_vip is not None:
                        cp_vip.start()
                electors.append(_control_plane_elector(config, cp_vip))
                electors[-1].start()
            except _fatal_errors() as exc:
                log.error("manager.failed", error=str(exc))
                return 1
            except (KubeClientError, VipSetupError, AddressError) as exc:
                # a static pod may start before kubeadm has written its kubeconfig, or before the interface
                # is up: wait and retry, do not crash-loop
                log.error("manager.not_ready", error=str(exc), retry_in=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
        stop.wait(0.5)
    for elector in electors:
        elector.stop(timeout=1.5)  # steps down (VIP withdrawn), then releases the Lease
    if cp_vip is not None:
        cp_vip.stop()
        cp_vip.announcer.close()
    log.info("manager.stopped")
    return 0
