"""The control-plane controller: this node wants the control-plane VIPs exactly while it holds the Lease (or,
for BGP without leader election, while its own API server is healthy).

It is one owner of the VIP controller (`control-plane`). At start it claims its VIPs as *not wanted* (so the
first reconcile pass removes what a crash left), then campaigns; the election callbacks flip the claim, and the
VIP controller applies it at once. On stop the elector steps down first (the VIP is withdrawn in its callback),
then releases the Lease, so a successor never overlaps with us.

With `--controlPlaneHealthCheckAddress` the node's own API server is checked (`localhealth.py`): an unhealthy leader
offers the Lease and hands it over to a healthy node that claims it (`generic/election/handover.py`); unhealthy
candidates hold back; by BGP without leader election the check decides the claim directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from generic.addresses import Addresses, Vip
from generic.dns import Answer, DnsResolver, Lookup, LookupFailed
from generic.election import Callbacks, Elector, Lock
from generic.election.handover import Fitness
from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.config import Config
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.health import HealthGate
from kubevip_metal.daemon.localhealth import LocalHealth, Probe, State
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.errors import NotReady

log = get_logger("kubevip_metal.controlplane")

OWNER = "control-plane"

class VipSetupError(NotReady):
    """The VIP cannot be placed yet (no interface, name does not resolve); the manager retries."""


def lookup_name(config: Config, lookup: Lookup) -> Answer:
    """The answer for a DNS `--address` under `--dnsMode`. A name that does not resolve (yet) is NotReady: the
    manager waits with backoff, saying why, and readiness stays false, rather than exiting: a node often comes up
    before its DNS does, and a static pod that exits only crash-loops with the same message."""
    assert config.vip.dns_name is not None
    try:
        return lookup(config.vip.dns_name, config.vip.dns_mode.value)
    except LookupFailed as exc:
        raise VipSetupError(str(exc)) from None


def place_vips(config: Config, addresses: Addresses, default_interface: Callable[[Addresses, int], str | None],
               ips: Iterable[IPAddress]) -> list[Vip]:
    """The VIP(s) for `ips` on `--interface`, or on the mode's default interface (the default route's, `lo`)."""
    vips = []
    for ip in ips:
        interface = config.vip.interface or default_interface(addresses, ip.version)
        if interface is None:
            raise VipSetupError(f"no --interface given and no IPv{ip.version} default route to pick one from")
        prefix = config.vip.prefix_v4 if ip.version == 4 else config.vip.prefix_v6
        vips.append(Vip(ip, prefix, interface))
    return vips


def resolve_vips(config: Config, addresses: Addresses, default_interface: Callable[[Addresses, int], str | None],
                 lookup: Lookup | None = None) -> list[Vip]:
    """The configured VIP(s), a DNS `--address` looked up once (the daemon's `NameFollower` follows it after)."""
    ips: Iterable[IPAddress] = config.vip.addresses
    if config.vip.dns_name:
        ips = lookup_name(config, lookup or DnsResolver()).addresses
    return place_vips(config, addresses, default_interface, ips)


class ControlPlane:
    def __init__(self, config: Config, vips: VipController, wanted: list[Vip], *,
                 clock: Callable[[], float] = time.monotonic, events: DaemonEvents | None = None) -> None:
        """Claims the VIPs as not wanted here yet: the VIP controller's first pass removes a crash's leftover.
        `events`: BecameLeader / SteppedDown (with the elector's reason) on the Lease."""
        assert config.node_name is not None
        self.config, self.vips, self.wanted, self._clock = config, vips, wanted, clock
        self.events = events
        self._active = False  # whether the claim is active (leading, or healthy without an election)
        self._claiming = threading.Lock()  # the callbacks and `retarget` change (wanted, active) one at a time
        self._stopped = False
        self.vips.claim(OWNER, wanted, active=False)
        self.elector: Elector | None = None
        self.gate: HealthGate | None = None
        self.on_leadership: list[Callable[[bool], None]] = []  # told after the claim changed (--ddns's client)
        # told (active, VIPs) after every change of the claim, under its lock, so in order; must only queue
        # (--enableNodeLabeling's kubevip_metal.daemon.nodelabels.NodeLabels)
        self.on_claim: list[Callable[[bool, list[Vip]], None]] = []
        self.local_health: LocalHealth | None = None

    def campaign(self, lock: Lock) -> None:
        if self.elector is None:
            assert self.config.node_name is not None
            callbacks = Callbacks(self._started_leading, self._stopped_leading, self._new_leader, self._all_gone,
                                  fitness=self._fitness)
            self.elector = Elector(lock, self.config.node_name, self.config.election.timers, callbacks,
                                   clock=self._clock)
            if self.events is not None:
                self.events.lease_uid_from(lock)
            if self.local_health is not None:
                self.elector.offer(self.local_health.state is State.UNHEALTHY)
            self.elector.start()

    def check_local_health(self, probe: Probe) -> None:
        """--controlPlaneHealthCheckAddress: check this node's API server every period, before campaigning (the
        elector asks for the result) or, without leader election, instead of the /readyz gate."""
        settings = self.config.local_health
        if self.local_health is None and settings is not None:
            self.local_health = LocalHealth(probe, self._local_health_changed, period=settings.period,
                                            failure_threshold=settings.failure_threshold,
                                            success_threshold=settings.success_threshold, clock=self._clock,
                                            url=settings.url)
            self.local_health.start()

    def _fitness(self) -> Fitness:
        return self.local_health.fitness() if self.local_health is not None else Fitness.UNKNOWN

    def _local_health_changed(self, state: State) -> None:
        if self.config.control_plane_elects:
            if self.elector is not None:  # else campaign() starts it with the state as it is then
                self.elector.offer(state is State.UNHEALTHY)
            if state is State.UNHEALTHY:
                log.warning("controlplane.unhealthy", reason="local API server health check failing",
                            leading=bool(self.elector and self.elector.is_leader),
                            action="offering the Lease to a healthy node; keeping the VIP until one claims it")
            return
        self._health_changed(state is State.HEALTHY)  # BGP from every healthy node

    def follow_health(self, probe: Callable[[], bool]) -> None:
        """Without leader election (BGP only): want the VIPs here exactly while the local API server is healthy,
        so every healthy control-plane node advertises them (ECMP at the router) and a sick one withdraws."""
        if self.gate is None:
            self.gate = HealthGate(probe, self._health_changed, clock=self._clock)
            self.gate.start()

    def _claim(self, active: bool) -> None:
        with self._claiming:
            if not self._stopped:
                self._active = active
                self.vips.claim(OWNER, self.wanted, active=active)
                self._tell_claim()

    def retarget(self, wanted: list[Vip]) -> None:
        """The VIP(s) are now `wanted` (the DNS name moved): the claim changes, as active as it was, so on the
        leader the VIP controller withdraws the old address and adds and announces the new one in one batch, and
        on a follower it polices the new one. Nothing happens after `stop`."""
        with self._claiming:
            if self._stopped:
                return
            old, self.wanted = self.wanted, list(wanted)
            self.vips.claim(OWNER, self.wanted, active=self._active)
            self._tell_claim()
            log.info("controlplane.retargeted", old=[str(v) for v in old], new=[str(v) for v in self.wanted],
                     active=self._active, mono=round(self._clock(), 6))

    def _tell_claim(self) -> None:
        for listener in self.on_claim:
            try:
                listener(self._active, list(self.wanted))
            except Exception as exc:  # a listener only queues; never let it break an election callback
                log.warning("controlplane.listener_failed", error=f"{type(exc).__name__}: {exc}")

    def _health_changed(self, healthy: bool) -> None:
        self._claim(healthy)
        log.info("controlplane.serving" if healthy else "controlplane.withdrawn", reason="local API server "
                 + ("ready" if healthy else "not ready"), vips=[str(v) for v in self.wanted],
                 mono=round(self._clock(), 6))

    def _started_leading(self) -> None:
        self._claim(True)
        log.info("controlplane.leading", vips=[str(v) for v in self.wanted], mono=round(self._clock(), 6))
        for listener in self.on_leadership:
            listener(True)
        if self.events is not None:
            self.events.became_leader(self.wanted)

    def _stopped_leading(self) -> None:
        self._claim(False)
        log.info("controlplane.following", vips=[str(v) for v in self.wanted], mono=round(self._clock(), 6))
        for listener in self.on_leadership:  # after the claim: the VIP is gone before a DHCP release leaves
            listener(False)
        if self.events is not None:
            self.events.stepped_down(self.elector.step_down_reason if self.elector is not None else None)

    def _new_leader(self, identity: str) -> None:
        log.info("controlplane.leader", leader=identity)

    def _all_gone(self) -> bool:
        """The Lease is released on stop only once no control-plane VIP is left here (unless another owner, such
        as a Service on the same address, still holds it legitimately)."""
        left = [v for v in self.wanted if self.vips.addresses.present(v) and not self.vips.owners_of(v)]
        if left:
            log.error("controlplane.vip_not_removed", vips=[str(v) for v in left])
        return not left

    def stop(self) -> None:
        """Step down (the VIP goes in the callback), release the Lease, let go of the VIPs."""
        if self.local_health is not None:
            self.local_health.stop(timeout=0)  # first, so that no offer changes while the elector steps down
        if self.elector is not None:
            self.elector.stop(timeout=1.5)
        if self.gate is not None:
            self.gate.stop()
        if self.local_health is not None:
            self.local_health.stop()
        with self._claiming:
            self._stopped = True
            self.vips.release(OWNER)
            self._active = False
            self._tell_claim()  # normally told at the step-down already; a no-op then
