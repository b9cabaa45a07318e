"""The composition root: the one object that is given the outside world (`Dependencies`) and the validated
`Config`, and starts and stops the components in order.

    daemon = Daemon(config, production(config))
    daemon.start()   # raises NotReady (call again later) or FatalError (give up)
    ...
    daemon.stop()    # step down, release the Lease, remove every VIP

`start` is safe to call again after a `NotReady`: each component is kept once it is up, and the next call picks
up where the last one failed. One Kubernetes API client serves every elector of the process.

`stop` may be called from another thread while `start` is blocked on the outside world (a DNS lookup, the Metal
API retrying with backoff): the blocking calls run outside the daemon's lock, every step that changes state runs
under it and first checks whether the daemon was stopped, so SIGTERM never waits for an API and nothing is started
after `stop` (what a late blocking call built is closed at once).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from generic.addresses import AddressError, Vip
from generic.bgp.speaker import MAX_MED
from generic.dns import Answer, DnsResolver, Lookup
from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.controlplane import ControlPlane, VipSetupError, lookup_name, place_vips
from kubevip_metal.daemon.ddns import DdnsClient
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.dns_follow import NameFollower
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.modes import MODES, ModeSpec, mode_spec
from kubevip_metal.daemon.nodelabels import NodeLabels
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.errors import DaemonError, FatalError, NotReady
from kubevip_metal.services.controller import ServicesController
from kubevip_metal.services.labels import ServiceLabels

log = get_logger("kubevip_metal.daemon")

EVENTS_BY = 1.2  # seconds into stop() after which queued Events are dropped rather than written


class Daemon:
    def __init__(self, config: Config, deps: Dependencies, modes: Mapping[Mode, ModeSpec] = MODES) -> None:
        if not config.control_plane and not config.services.enabled:
            raise FatalError("nothing to do: give --controlplane, --services or both")
        self.config, self.deps = config, deps
        self.mode = mode_spec(config, modes)
        self.api: Any = None
        self.vips = VipController(deps.addresses, [], clock=deps.clock)
        # Kubernetes Events (kubevip_metal.daemon.events): queued by the hooks, written by one thread
        self.events = DaemonEvents(config, deps.events(config, lambda: self.api))
        self.vips.on_repaired = self.events.vip_repaired
        self._events_started = False
        # --enableNodeLabeling (kubevip_metal.daemon.nodelabels): kube-vip.io/has-ip on this Node while it leads
        self.labels: NodeLabels | None = None
        if config.node_labeling and config.control_plane:
            assert config.node_name is not None
            self.labels = NodeLabels(lambda: self.api, config.node_name, clean_others=config.control_plane_elects,
                                     clock=deps.clock)
        # ... and service-provided.kube-vip.io/<name>.<namespace> for the Services it serves (services/labels.py)
        self.service_labels: ServiceLabels | None = None
        if config.node_labeling and config.services.enabled:
            assert config.node_name is not None
            self.service_labels = ServiceLabels(lambda: self.api, config.node_name, clock=deps.clock)
        self.control_plane: ControlPlane | None = None
        self.name_follower: NameFollower | None = None  # while a DNS --address is followed
        self.ddns: DdnsClient | None = None  # --ddns: the VIP is the DHCP lease's address while leading
        self._lookup: Lookup | None = None
        self.services: ServicesController | None = None
        self._announcing = False
        self._lock = threading.Lock()
        self._stopped = False
        self.metrics: Any = None  # kubevip_metal.metrics.MetricsServer, while --prometheusHTTPServer serves
        self._metrics_tried = False

    def start(self) -> None:
        """Bring up whatever is not up yet: the VIP controller (its first pass clears a crash's leftovers, before
        anything waits on the outside world), the mode's announcers, the API client, the control plane's campaign.
        Raises NotReady, FatalError, or Stopped once `stop` was called."""
        try:
            self._start()
        except AddressError as exc:
            raise NotReady(str(exc)) from None

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        """Hold the lock for one state change; raises Stopped instead if the daemon was stopped meanwhile."""
        with self._lock:
            if self._stopped:
                raise Stopped("the daemon was stopped")
            yield

    def _start(self) -> None:
        # -- metrics (kubevip_metal.metrics): tried once, first, so a scrape answers while the rest is NotReady
        if not self._metrics_tried and self.config.observability.prometheus is not None:
            from kubevip_metal.metrics import serve

            with self._step():
                self._metrics_tried = True
                self.metrics = serve(self.config.observability.prometheus, self)
        # -- end metrics
        if not self._events_started:
            with self._step():
                self._events_started = True
                self.events.start()
                if self.labels is not None:
                    self.labels.start()
                if self.service_labels is not None:
                    self.service_labels.start()
        if self.control_plane is None and self.config.control_plane:
            self._start_control_plane()
        with self._step():
            self.vips.start()
        if not self._announcing:
            announcers = self.mode.announcers(self.config, self.deps, self._med, self._api)  # may wait on the APIs
            try:
                with self._step():
                    self.vips.attach(announcers)
                    self.events.attach(announcers)
                    self._announcing = True
            except Stopped:
                for announcer in announcers:
                    announcer.close()
                raise
        self._api()
        election = self.config.election
        with self._step():
            if self.control_plane is not None and self.config.local_health is not None:
                self.control_plane.check_local_health(self.deps.local_health_probe(self.config.local_health))
            if self.control_plane is None:
                pass
            elif self.config.control_plane_elects:
                self.control_plane.campaign(self.deps.lease_lock(self.api, election.namespace, election.lease_name))
            elif self.config.local_health is None:  # BGP from every node whose API server answers /readyz
                self.control_plane.follow_health(self.deps.health_probe(self.api))
            if self.config.services.enabled and self.services is None:
                from kubevip_metal.daemon.services import build_services

                self.services = build_services(self.config, self.deps, self.vips, self.api,
                                               self.mode.default_interface, self.events,
                                               self.service_labels.served if self.service_labels else None)
                self.services.start()
        log.info("daemon.started", mode=self.config.mode, node=self.config.node_name,
                 announcers=[a.name for a in self.vips.announcers])

    def _control_plane(self, wanted: list[Vip]) -> ControlPlane:
        control_plane = ControlPlane(self.config, self.vips, wanted, clock=self.deps.clock, events=self.events)
        if self.labels is not None:
            control_plane.on_claim.append(self.labels.claimed)
        return control_plane

    def _start_control_plane(self) -> None:
        """The control plane's VIP(s); a DNS `--address` is looked up (NotReady until it resolves) and then
        followed (kubevip_metal.daemon.dns_follow)."""
        vip = self.config.vip
        if vip.dns_name is None:
            wanted = place_vips(self.config, self.deps.addresses, self.mode.default_interface, vip.addresses)
            with self._step():
                self.control_plane = self._control_plane(wanted)
            return
        if vip.ddns:
            self._start_ddns()
            return
        if self._lookup is None:
            self._lookup = self.deps.dns_lookup or DnsResolver()
        answer = lookup_name(self.config, self._lookup)  # outside the lock: bounded by the resolver's timeout
        wanted = place_vips(self.config, self.deps.addresses, self.mode.default_interface, answer.addresses)
        with self._step():
            control_plane = self.control_plane = self._control_plane(wanted)

            def moved(ips: tuple[IPAddress, ...]) -> None:
                control_plane.retarget(place_vips(self.config, self.deps.addresses, self.mode.default_interface,
                                                  ips))

            self.name_follower = NameFollower(vip.dns_name, vip.dns_mode.value, self._lookup, answer, moved,
                                              interval=vip.dns_interval, clock=self.deps.clock)
            self.name_follower.start()
        log.info("dns.resolved", name=vip.dns_name, mode=vip.dns_mode.value, addresses=str(answer), ttl=answer.ttl,
                 interval=vip.dns_interval)

    def _start_ddns(self) -> None:
        """--ddns: nothing is claimed until a lease is granted (the name may not exist before the first one);
        the lease's address becomes the claim (kubevip_metal.daemon.ddns)."""
        vip = self.config.vip
        assert vip.dns_name is not None
        interface = vip.interface or self.mode.default_interface(self.deps.addresses, 4)
        if interface is None:
            raise VipSetupError("--ddns: no --interface given and no IPv4 default route to pick one from")
        with self._step():
            control_plane = self.control_plane = self._control_plane([])

            def leased(ip: IPAddress | None) -> None:
                control_plane.retarget([] if ip is None else [Vip(ip, vip.prefix_v4, interface)])

            kwargs = {} if self.deps.dhcp_client is None else {"factory": self.deps.dhcp_client}
            ddns = self.ddns = DdnsClient(interface, vip.dns_name, leased, clock=self.deps.clock, **kwargs)
            control_plane.on_leadership.append(lambda leading: ddns.start_term() if leading else ddns.end_term())

            def named(ips: tuple[IPAddress, ...]) -> None:
                ddns.hint = next((ip for ip in ips if ip.version == 4), ddns.hint)

            if self._lookup is None:
                self._lookup = self.deps.dns_lookup or DnsResolver()
            # every node follows the name (the leader's lease, as the server registered it): a new leader asks
            # for that address, so a graceful failover (the old lease released) keeps it too
            self.name_follower = NameFollower(vip.dns_name, "ipv4", self._lookup, Answer((), None), named,
                                              interval=vip.dns_interval, clock=self.deps.clock)
            self.name_follower.start()
        log.info("ddns.configured", name=vip.dns_name, interface=interface, host_name=ddns.host)

    def _api(self) -> Any:
        """The one Kubernetes API client of the process, made on first use (the BGP annotation source may need it
        before the election does)."""
        if self.api is None:
            api = self.deps.api_client()
            with self._step():
                if self.api is None:
                    self.api = api
        return self.api

    def _med(self, vip: Vip) -> int | None:
        """A term-ordered MED for the control-plane VIP: each new leadership term advertises a lower one, so a
        router prefers the newest leader's route the moment it arrives, even while a crashed leader's session (and
        route) lingers until its hold time, whatever the router's tie-break (BIRD: lowest router ID)."""
        control_plane = self.control_plane
        if control_plane is None or control_plane.elector is None or vip not in control_plane.wanted:
            return None
        term = control_plane.elector.transitions
        return None if term is None else max(0, MAX_MED - term)

    def stop(self) -> None:
        """Step down and release the Lease first, then remove every VIP and close the announcers. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            began = time.monotonic()
            self.events.stop_watching()  # the speaker closing below is no peer going down
            if self.service_labels is not None:  # removed while the rest stops (the VIPs go in a moment anyway)
                self.service_labels.begin_close()
            if self.services is not None:
                self.services.stop()
            if self.name_follower is not None:
                self.name_follower.stop()
            if self.control_plane is not None:
                self.control_plane.stop()
            if self.ddns is not None:  # released at the step-down already; this ends its thread
                self.ddns.stop()
            self.vips.stop()
            self.deps.addresses.close()

            def left() -> float:  # what is left of EVENTS_BY, never more than half a second for one writer
                return max(0.0, min(0.5, EVENTS_BY - (time.monotonic() - began)))

            if self.labels is not None:  # the removal was queued at the step-down and is being written meanwhile
                self.labels.close(timeout=left())
            if self.service_labels is not None:  # every Service label of this node, in one patch
                self.service_labels.close(timeout=left())
            # the SteppedDown above is being written meanwhile; it gets what is left, so Events never push a
            # SIGTERM past its 2 s
            self.events.close(timeout=left())
            # -- metrics: last, so a scrape during shutdown still sees the step-down
            if self.metrics is not None:
                self.metrics.close()
                self.metrics = None


class Stopped(DaemonError):
    """`start` was interrupted by `stop`."""
