"""The Services controller ("hybrid mode", `--services`): the VIPs of Services of type LoadBalancer, as owners of
the VIP controller, beside the control plane's.

Two informers (Services, EndpointSlices; one watch each for the whole cluster or `--namespace`-free scope) feed
one worker thread. The worker drains everything that arrived, updates its picture, and re-decides only the
Services that changed, in one batch: one `claim_many` on the VIP controller (one BGP advertisement for a burst of
10,000 Services), one status wish per Service to the coalescing status writer. No thread, timer or watch per
Service.

Who serves a Service here:
- **`--servicesElection`** (ARP or BGP): the holder of the Service's own Lease (kube-vip's `kubevip-<name>` in its
  namespace; kubevip_metal.services.elections runs them all on one thread and one watch), among the eligible nodes.
- **ARP**: the holder of the Services Lease (`--servicesLeaseName`, kube-vip's `plndr-svcs-lock`) serves them all;
  the others serve none. Losing the Lease lets go of every Service VIP; the election goes on.
- **BGP**: every node serves (ECMP at the router), no Lease.
- Either way, a Service is served only while it has a serving endpoint: any node's for `externalTrafficPolicy:
  Cluster`, this node's own for `Local` (a node that loses its last local endpoint withdraws; the others keep
  theirs). `serving` counts, so a rolling update that keeps some endpoint serving never withdraws it.

The VIP controller shares addresses between owners (`service:<ns>/<name>`, `control-plane`): two Services on one
IP, or a Service on the control plane's IP, keep it until the last owner lets go. Deleting a Service (or changing
its type) releases its claim: the address and route go unless another owner still wants them.

What we write: `status.loadBalancer.ingress` (each address with the Service's ports and `ipMode: VIP`), and with
a Lease (the Services Lease or the Service's own) `kube-vip.io/vipHost` = this node. By BGP without one, every
serving node would write the same status; the writes are idempotent (no write when the Service already shows it)
and vipHost is not written (there is no one host).

A Service asking for `0.0.0.0` gets its IPv4 VIP leased by DHCP (kubevip_metal.services.dhcp): its holder runs its
client, the leased address is its VIP and its status, and `kube-vip.io/requestedIP` records it for the next
holder. That needs one holder: by BGP without `--servicesElection` (every node serves) such a Service is skipped,
with the reason in the log and a `ServiceSkipped` Event.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from generic.addresses import Vip
from generic.election import Callbacks, Elector, Lock
from generic.election.elector import Timers
from generic.informer import Event, Informer, Obj
from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.services.dhcp import ServiceLeases
from kubevip_metal.services.elections import ServiceElections
from kubevip_metal.services.model import (
    REQUESTED_IP,
    VIP_HOST,
    ClassRules,
    ServiceIntent,
    ServiceKey,
    Skipped,
    interpret,
    key_of,
    serving_nodes,
)
from kubevip_metal.services.status import StatusWriter, Wanted

log = get_logger("kubevip_metal.services")

OWNER_PREFIX = "service:"


def owner_of(key: ServiceKey) -> str:
    return f"{OWNER_PREFIX}{key}"


@dataclass
class _Picture:
    """What the informers told us, as the worker keeps it."""

    services: dict[ServiceKey, ServiceIntent] = field(default_factory=dict)
    skipped: dict[ServiceKey, str] = field(default_factory=dict)
    slices: dict[tuple[str, str], tuple[ServiceKey, frozenset[str]]] = field(default_factory=dict)
    serving: dict[ServiceKey, dict[str, frozenset[str]]] = field(default_factory=dict)  # key -> slice -> nodes
    claimed: dict[ServiceKey, tuple[frozenset[Vip], bool]] = field(default_factory=dict)


class ServicesController:
    def __init__(self, vips: VipController, api: Any, node: str, rules: ClassRules, *,
                 interface_for: Callable[[IPAddress], str], lock: Lock | None, timers: Timers,
                 write_vip_host: bool, prefix: Callable[[IPAddress], int], per_service: bool = False,
                 list_services: Callable[..., Any] | None = None, list_slices: Callable[..., Any] | None = None,
                 status: StatusWriter | None = None, clock: Callable[[], float] = time.monotonic,
                 events: DaemonEvents | None = None, dhcp_client: Any = None,
                 dhcp_report_after: float | None = None,
                 on_served: Callable[[dict[tuple[str, str], frozenset[IPAddress] | None]], None] | None = None) -> None:
        """`lock`: the Services Lease (ARP: one holder serves all); None: every node serves (BGP).
        `per_service`: instead, one Lease per Service (kubevip_metal.services.elections); `lock` is then unused.
        `events`: VipServed / VipWithdrawn / ServiceSkipped on each Service.
        `dhcp_client`: the DHCP client factory for `0.0.0.0` Services (None: pyroute2's AsyncDHCPClient).
        `on_served`: told after each pass, (namespace, name) -> the addresses served here now or None, for the
        Services whose serving here changed (--enableNodeLabeling's kubevip_metal.services.labels); must only queue."""
        self.vips, self.api, self.node, self.rules = vips, api, node, rules
        self.events = events
        self.on_served = on_served
        self._interface_for, self._prefix = interface_for, prefix
        self._write_vip_host = write_vip_host
        self._clock = clock
        self._picture = _Picture()
        self._queue: queue.SimpleQueue[Callable[[], Iterable[ServiceKey] | None] | None] = queue.SimpleQueue()
        self._leading = lock is None or per_service
        self._elector = Elector(lock, node, timers, Callbacks(self._gained, self._lost), clock=clock) \
            if lock is not None and not per_service else None
        self._elections: ServiceElections | None = None
        if per_service:
            self._elections = ServiceElections(api, node, timers, self._lease_changed, clock=clock)
        self._stopping = False
        self._dhcp: ServiceLeases | None = None
        if lock is not None or per_service:  # one holder per Service: it can lease the Service's address
            extra = {} if dhcp_report_after is None else {"report_after": dhcp_report_after}
            self._dhcp = ServiceLeases(lambda key: self._enqueue(lambda: {key}), factory=dhcp_client,
                                       no_lease=self._no_lease, clock=clock, **extra)
        # released while the Service stays: why and its uid, for its Event
        self._withdrawn_why: dict[ServiceKey, tuple[str, str]] = {}
        self.status = status or StatusWriter(api, clock=clock)
        core, discovery = _apis(api)
        self._informers = [
            Informer("services", list_services or core.list_service_for_all_namespaces,
                     lambda items: self._enqueue(lambda: self._reset_services(items)),
                     lambda events: self._enqueue(lambda: self._service_events(events))),
            Informer("endpointslices", list_slices or discovery.list_endpoint_slice_for_all_namespaces,
                     lambda items: self._enqueue(lambda: self._reset_slices(items)),
                     lambda events: self._enqueue(lambda: self._slice_events(events))),
        ]
        self._worker = threading.Thread(target=self._run, name="services", daemon=True)
        self._stopped = threading.Event()
        self.passes = 0  # worker passes, for tests and benchmarks
        self.idle = threading.Event()  # set whenever the worker has nothing queued

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()
        self.status.start()
        for informer in self._informers:
            informer.start()
        if self._elector is not None:
            self._elector.start()
        if self._elections is not None:
            self._elections.start()

    def stop(self) -> None:
        """Every Service VIP withdrawn first, then the Leases released (so a successor never overlaps with us),
        then the watches stopped."""
        self._stopping = True
        self._queue.put(None)
        self._worker.join(1.0)
        self.vips.claim_many({owner_of(key): None for key in list(self._picture.claimed)})
        if self._dhcp is not None:  # the addresses are gone: now their leases are released
            self._dhcp.stop()
        if self._elector is not None:
            self._elector.stop(timeout=1.0)
        if self._elections is not None:
            self._elections.stop()
        for informer in self._informers:
            informer.close(timeout=0.3)
        self.status.close(timeout=0.3)

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def elector(self) -> Elector | None:
        """The Services Lease's elector (ARP without --servicesElection), for probes and metrics."""
        return self._elector

    @property
    def elections(self) -> ServiceElections | None:
        return self._elections
    # -- input ----------------------------------------------------------------------------------------------

    def _enqueue(self, change: Callable[[], Iterable[ServiceKey] | None]) -> None:
        self.idle.clear()
        self._queue.put(change)

    def _gained(self) -> None:
        log.info("services.leading", lease="services", node=self.node, mono=round(self._clock(), 6))
        self._enqueue(lambda: self._set_leading(True))

    def _lost(self) -> None:
        log.info("services.following", lease="services", node=self.node, mono=round(self._clock(), 6))
        self._enqueue(lambda: self._set_leading(False))

    def _lease_changed(self, key: ServiceKey, _leading: bool) -> None:
        self._enqueue(lambda: {key})

    def _no_lease(self, key: ServiceKey, waited: float) -> None:
        """Told by a Service's DHCP client (on its loop) that no server answered yet."""
        intent = self._picture.services.get(key)
        if self.events is not None and intent is not None:
            self.events.dhcp_no_lease(key.namespace, key.name, intent.uid,
                                      f"Service {key}: no DHCP lease for 0.0.0.0 after {waited:.0f} s; retrying")

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading
        return None  # every Service is re-decided

    def _reset_services(self, items: list[Obj]) -> None:
        picture = self._picture
        seen: set[ServiceKey] = set()
        for obj in items:
            seen.add(key_of(obj))
            self._service(obj)
        for key in set(picture.services) | set(picture.skipped) | set(picture.claimed):
            if key not in seen:
                self._service_gone(key)
        return None

    def _service_events(self, events: list[Event]) -> set[ServiceKey]:
        changed = set()
        for kind, obj in events:
            key = key_of(obj)
            changed.add(key)
            if kind == "DELETED":
                self._service_gone(key)
            else:
                self._service(obj)
        return changed

    def _service(self, obj: Obj) -> None:
        picture, key = self._picture, key_of(obj)
        found = interpret(obj, self.rules)
        if isinstance(found, ServiceIntent) and found.dhcp is not None and self._dhcp is None:
            found = Skipped(key, f"Service {key}: an address leased by DHCP (0.0.0.0) needs one holder; by BGP "
                                 "every node serves: use --servicesElection")
        if isinstance(found, ServiceIntent):
            picture.services[key] = found
            picture.skipped.pop(key, None)
            status = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            self.status.observed(key, status, annotations.get(VIP_HOST), annotations.get(REQUESTED_IP))
            return
        gone = picture.services.pop(key, None)
        if gone is not None and self.events is not None and key in picture.claimed and picture.claimed[key][1]:
            why = found.reason if isinstance(found, Skipped) else "no longer a LoadBalancer Service of ours"
            self._withdrawn_why[key] = (why, gone.uid)
        if isinstance(found, Skipped):
            if picture.skipped.get(key) != found.reason:
                log.warning("service.skipped", service=str(key), reason=found.reason)
                if self.events is not None:
                    self.events.service_skipped(key.namespace, key.name,
                                                str((obj.get("metadata") or {}).get("uid") or ""), found.reason)
            picture.skipped[key] = found.reason
        else:
            picture.skipped.pop(key, None)

    def _service_gone(self, key: ServiceKey) -> None:
        if self.events is not None:
            self.events.service_gone(key.namespace, key.name)
            self._withdrawn_why.pop(key, None)
        if self._elections is not None:
            self._elections.unwant(key)
        if self._dhcp is not None:
            self._dhcp.forget(key)
        self._picture.services.pop(key, None)
        self._picture.skipped.pop(key, None)
        self.status.forget(key)

    def _reset_slices(self, items: list[Obj]) -> None:
        picture = self._picture
        picture.slices.clear()
        picture.serving.clear()
        for obj in items:
            self._slice("ADDED", obj)
        return None

    def _slice_events(self, events: list[Event]) -> set[ServiceKey]:
        changed: set[ServiceKey] = set()
        for kind, obj in events:
            changed |= self._slice(kind, obj)
        return changed

    def _slice(self, kind: str, obj: Obj) -> set[ServiceKey]:
        picture = self._picture
        metadata = obj.get("metadata") or {}
        slice_id = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        changed = set()
        old = picture.slices.pop(slice_id, None)
        if old is not None:
            changed.add(old[0])
            by_slice = picture.serving.get(old[0], {})
            by_slice.pop(slice_id[1], None)
            if not by_slice:
                picture.serving.pop(old[0], None)
        if kind != "DELETED":
            key, nodes = serving_nodes(obj)
            if key is not None:
                picture.slices[slice_id] = (key, nodes)
                picture.serving.setdefault(key, {})[slice_id[1]] = nodes
                changed.add(key)
        return changed

    # -- deciding -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            change = self._queue.get()
            dirty: set[ServiceKey] | None = set()
            batch = [change]
            while True:  # drain: one pass for everything that arrived together
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if item is None:
                    self._stopped.set()
                    return
                try:
                    keys = item()
                except Exception as exc:  # a bug must not stop the controller; the next reset repairs
                    log.exception("services.change_failed", error=f"{type(exc).__name__}: {exc}")
                    keys = None
                if keys is None:
                    dirty = None
                elif dirty is not None:
                    dirty |= set(keys)
            try:
                self._decide(dirty)
            except Exception as exc:
                log.exception("services.decide_failed", error=f"{type(exc).__name__}: {exc}")
            self.passes += 1
            if self._queue.empty():
                self.idle.set()

    def _eligible(self, intent: ServiceIntent) -> bool:
        nodes = frozenset().union(*self._picture.serving.get(intent.key, {}).values())
        return self.node in nodes if intent.local else bool(nodes)

    def _decide(self, dirty: set[ServiceKey] | None) -> None:
        """Re-decide `dirty` Services (None: all of them) and apply the result in one batch."""
        if self._stopping:
            return
        picture = self._picture
        keys = set(picture.services) | set(picture.claimed) if dirty is None else dirty
        claims: dict[str, tuple[Iterable[Vip], bool] | None] = {}
        statuses: dict[ServiceKey, Wanted] = {}
        served: dict[tuple[str, str], frozenset[IPAddress] | None] = {}
        for key in keys:
            intent = picture.services.get(key)
            if intent is None:
                if key in picture.claimed:
                    vips_before, was_active = picture.claimed.pop(key)
                    claims[owner_of(key)] = None
                    served[(key.namespace, key.name)] = None
                    log.info("service.released", service=str(key))
                    told = self._withdrawn_why.pop(key, None)
                    if self.events is not None and was_active and told is not None:
                        self.events.service_withdrawn(key.namespace, key.name, told[1], vips_before, told[0])
                if self._dhcp is not None:  # no longer a DHCP Service of ours (deleted, or changed): released
                    self._dhcp.forget(key)
                continue
            eligible = self._eligible(intent)
            if self._elections is not None:  # a candidate only while eligible; losing eligibility releases
                if eligible:
                    self._elections.want(key)
                else:
                    self._elections.unwant(key)
                active = eligible and self._elections.leading(key)
            else:
                active = self._leading and eligible
            addresses = intent.addresses
            leased = self._leased(intent, active)
            if leased is not None:
                addresses = (leased, *addresses)
            vips = frozenset(Vip(a, self._prefix(a), self._interface_for(a)) for a in addresses)
            if picture.claimed.get(key) != (vips, active):
                before = picture.claimed.get(key)
                picture.claimed[key] = (vips, active)
                claims[owner_of(key)] = (vips, active)
                served[(key.namespace, key.name)] = frozenset(v.address for v in vips) if active and vips else None
                # served = active with an address (a DHCP Service held here has none until its lease)
                shown, shown_before = active and bool(vips), before is not None and before[1] and bool(before[0])
                if shown != shown_before:
                    named = vips if shown or before is None else before[0]
                    log.info("service.serving" if shown else "service.not_serving", service=str(key),
                             vips=[str(v) for v in sorted(named, key=str)], local=intent.local,
                             mono=round(self._clock(), 6))
                    self._tell(intent, named, shown, was_active=shown_before, eligible=eligible,
                               unleased=active and not vips)
            if active and (intent.dhcp is None or leased is not None):  # a DHCP Service: once leased
                statuses[key] = _status_of(intent, addresses, self.node if self._write_vip_host else None,
                                           None if leased is None else str(leased))
        if claims:
            self.vips.claim_many(claims)
        if served and self.on_served is not None:
            try:
                self.on_served(served)
            except Exception as exc:  # a listener only queues; the worker must go on
                log.warning("service.listener_failed", error=f"{type(exc).__name__}: {exc}")
        for key, wanted in statuses.items():
            self.status.want(key, wanted)

    def _leased(self, intent: ServiceIntent, active: bool) -> IPAddress | None:
        """A DHCP Service's leased address: while held here, its client runs and this is what it holds now;
        otherwise it is released and this is the address last leased here (claimed inactive, so a stray copy is
        removed)."""
        if self._dhcp is None:
            return None
        if intent.dhcp is None:  # (no longer) a DHCP Service: a client left from 0.0.0.0 is released
            self._dhcp.forget(intent.key)
            return None
        if active:
            return self._dhcp.want(intent.key, intent.dhcp, self._interface_for(_ANY_V4))
        self._dhcp.unwant(intent.key)
        return self._dhcp.last(intent.key)

    @property
    def dhcp(self) -> ServiceLeases | None:
        """The Services' DHCP leases (`0.0.0.0`), for tests and metrics; None until a DHCP Service was seen."""
        return self._dhcp

    def _tell(self, intent: ServiceIntent, vips: frozenset[Vip], active: bool, *, was_active: bool,
              eligible: bool, unleased: bool = False) -> None:
        """The Service's Event for a change of who serves it here (none for a Service never served here)."""
        if self.events is None:
            return
        key = intent.key
        if active:
            self.events.service_served(key.namespace, key.name, intent.uid, vips)
        elif was_active:
            if unleased:
                why = "its DHCP lease ended (expired or taken back by the server)"
            elif not eligible:
                why = "no ready endpoint on this node" if intent.local else "no ready endpoint"
            elif self._elections is not None:
                why = "this node no longer holds the Service's Lease"
            else:
                why = "this node no longer holds the Services Lease"
            self.events.service_withdrawn(key.namespace, key.name, intent.uid, vips, why)

    def serving(self) -> dict[ServiceKey, bool]:
        """Each known Service of ours and whether this node serves it now (for tests and the lab)."""
        return {key: active for key, (_vips, active) in self._picture.claimed.items()}


def _status_of(intent: ServiceIntent, addresses: Iterable[IPAddress], vip_host: str | None,
               requested_ip: str | None) -> Wanted:
    ports = [{"port": p.port, "protocol": p.protocol} for p in intent.ports]
    ingress = tuple({"ip": str(a), "ipMode": "VIP", **({"ports": ports} if ports else {})} for a in addresses)
    return Wanted(ingress, vip_host, requested_ip)


_ANY_V4 = ipaddress.IPv4Address("0.0.0.0")  # the interface for a Service's leased IPv4 address


def _apis(api: Any) -> tuple[Any, Any]:
    from kubernetes import client

    return client.CoreV1Api(api), client.DiscoveryV1Api(api)


def rules_of(config: Any) -> ClassRules:
    services = config.services
    return ClassRules(services.lb_class_name, services.lb_class_only, services.lb_class_legacy)


def describe(serving: Mapping[ServiceKey, bool]) -> list[str]:
    return [str(key) for key, active in sorted(serving.items()) if active]
