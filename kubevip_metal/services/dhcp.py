"""Service addresses leased by DHCP (`0.0.0.0`, kube-vip §7.3): one DHCP client per Service this node holds.

The holder of a Service (the Services Lease's holder, or the winner of the Service's own Lease) runs a
`DdnsClient` (kubevip_metal.daemon.ddns, pyroute2's AsyncDHCPClient) for it on the Service's interface, all of
them on **one** shared asyncio loop and one claims worker (`DhcpLoop`): no thread per Service.

Identity: the client identifier (option 61) is `kube-vip.io/loadbalancerHostname` or `kube-vip-metal/<uid>`,
sent from the node's own MAC. The server keys the lease on the client id, so whichever node holds the Service
(after a failover, a crash, a restart) is given the same lease; the address last leased is also written to
`kube-vip.io/requestedIP` and asked for first (option 50), which gets it back after a release too. kube-vip gives
each Service a macvlan with a random MAC recorded in `kube-vip.io/hwaddr` for the same purpose; a client id needs
no extra interface, no MAC the switch has to learn and no rp_filter change (`kube-vip.io/hwaddr` and
`kube-vip.io/macvlanName` are therefore not read).

Lifecycle: `want` starts the client (DISCOVER); BOUND/RENEWED/REBOUND tell the controller (`changed(key)`), which
re-decides the Service: its VIP is the leased address, its status shows it, `kube-vip.io/requestedIP` records it.
EXPIRED or a NAK: the address goes. `unwant` (the Service deleted, no longer held here, no endpoint) and `stop`
(SIGTERM) send DHCPRELEASE. A server that does not answer is retried by the client's backoff and reported
(`ddns.no_lease` and a `DhcpNoLease` Event on the Service), never a crash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.daemon.ddns import RELEASE_WAIT, REPORT_AFTER, DdnsClient, DhcpLoop
from kubevip_metal.services.model import Dhcp, ServiceKey

log = get_logger("kubevip_metal.services.dhcp")


@dataclass(frozen=True)
class LeaseCounts:
    """What the metrics show of the Services' DHCP leases on this node. The counters include the clients of
    Services deleted since (a Prometheus counter never goes down)."""

    bound: int  # Services whose address is leased here now
    waiting: int  # Services held here whose client runs without a lease yet (no server answered)
    leases: int  # leases granted (BOUND)
    renewals: int  # renewed (T1) or rebound (T2)
    expiries: int  # leases that ended without a renewal


class ServiceLeases:
    """The DHCP clients of the Services held here, keyed by Service."""

    def __init__(self, changed: Callable[[ServiceKey], None], *, factory: Any = None,
                 no_lease: Callable[[ServiceKey, float], None] | None = None,
                 report_after: float = REPORT_AFTER, clock: Callable[[], float] = time.monotonic) -> None:
        self._changed, self._factory, self._no_lease = changed, factory, no_lease
        self._report_after, self._clock = report_after, clock
        self._loop = DhcpLoop("service-dhcp")
        self._clients: dict[ServiceKey, tuple[Dhcp, str, DdnsClient]] = {}
        self._retired = (0, 0, 0)  # leases, renewals and expiries of the clients dropped since the start
        self._lock = threading.Lock()

    def want(self, key: ServiceKey, dhcp: Dhcp, interface: str) -> IPAddress | None:
        """The Service is held here: its client runs (started if need be). Returns the address leased now."""
        with self._lock:
            found = self._clients.get(key)
            if found is not None and (found[0].host, found[0].client_id, found[1]) != \
                    (dhcp.host, dhcp.client_id, interface):
                found[2].end_term(None)  # another identity: the old lease goes, a new one is asked for
                self._retire(found[2])
                found = None
            if found is None:
                client = self._client(key, dhcp, interface)
                self._clients[key] = (dhcp, interface, client)
            else:
                client = found[2]
        if not client.running():
            client.hint = dhcp.requested or client.last
            client.start_term()  # waits (up to 2 s) only for a release of this Service still in flight
        return client.address

    def unwant(self, key: ServiceKey) -> None:
        """Not held here any more: DHCPRELEASE (on the loop; not waited for)."""
        with self._lock:
            found = self._clients.get(key)
        if found is not None:
            found[2].end_term(None)

    def forget(self, key: ServiceKey) -> None:
        """The Service is deleted: released, and its client dropped."""
        with self._lock:
            found = self._clients.pop(key, None)
            if found is not None:
                self._retire(found[2])
        if found is not None:
            found[2].end_term(None)

    def counts(self) -> LeaseCounts:
        with self._lock:
            clients = [client for _d, _i, client in self._clients.values()]
            leases, renewals, expiries = self._retired
        return LeaseCounts(bound=sum(1 for c in clients if c.address is not None),
                           waiting=sum(1 for c in clients if c.address is None and c.running()),
                           leases=leases + sum(c.leases for c in clients),
                           renewals=renewals + sum(c.renewals for c in clients),
                           expiries=expiries + sum(c.expiries for c in clients))

    def _retire(self, client: DdnsClient) -> None:
        """Under the lock: a dropped client's counts stay in the totals. A release still in flight after this is
        a release, never a lease, so nothing it does later is lost."""
        leases, renewals, expiries = self._retired
        self._retired = (leases + client.leases, renewals + client.renewals, expiries + client.expiries)

    def address(self, key: ServiceKey) -> IPAddress | None:
        found = self._clients.get(key)
        return None if found is None else found[2].address

    def last(self, key: ServiceKey) -> IPAddress | None:
        """The address last leased here (kept after a release, so a stray copy is still removed)."""
        found = self._clients.get(key)
        return None if found is None else found[2].last

    def running(self) -> list[ServiceKey]:
        with self._lock:
            return sorted(key for key, (_d, _i, client) in self._clients.items() if client.running())

    def stop(self, timeout: float = RELEASE_WAIT) -> None:
        """SIGTERM: every lease released, waiting `timeout` in all, then the loop's thread ends."""
        with self._lock:
            clients = [client for _d, _i, client in self._clients.values()]
        for client in clients:
            client.end_term(None)
        deadline = time.monotonic() + timeout
        for client in clients:
            if client.running():
                client.end_term(max(0.01, deadline - time.monotonic()))
        self._loop.stop()

    def _client(self, key: ServiceKey, dhcp: Dhcp, interface: str) -> DdnsClient:
        def no_lease(waited: float) -> None:
            if self._no_lease is not None:
                self._no_lease(key, waited)

        kwargs = {} if self._factory is None else {"factory": self._factory}
        return DdnsClient(interface, dhcp.host, lambda _ip: self._changed(key), client_id=dhcp.client_id,
                          shared=self._loop, no_lease=no_lease, report_after=self._report_after,
                          clock=self._clock, log_fields={"service": str(key)}, **kwargs)
