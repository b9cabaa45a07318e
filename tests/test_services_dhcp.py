"""Services asking for `0.0.0.0` (kube-vip §7.3): the holder leases an address per Service with a fake DHCP client
(pyroute2's AsyncDHCPClient's surface, driving the real hooks; a fake server that keys leases on the client id),
over real HTTP against the Kubernetes API emulator: the lease becomes the VIP and the status, the address is
recorded in `kube-vip.io/requestedIP` and asked for by the next holder, delete / losing the Lease / stop release,
an expiry withdraws, a server that never answers is reported by an Event, all clients share one loop thread."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pyroute2.dhcp.hooks import Trigger

from kubevip_metal.daemon.vips import VipController
from kubevip_metal.services.controller import ServicesController
from kubevip_metal.services.dhcp import LeaseCounts
from kubevip_metal.services.model import Dhcp, ServiceIntent, Skipped, interpret
from kubevip_testbed.waiting import wait_for
from tests.ddns_support import FakeClient, lease
from tests.fakes import FakeAddresses, RecordingAnnouncer
from tests.memory_lock import MemoryStore
from tests.test_services_controller import RULES, TIMERS, Cluster, Node

POOL = [f"198.51.100.{i}" for i in range(150, 160)]


class FakeServer(FakeClient):
    """A FakeClient whose server keys leases on the client id (as dnsmasq does) and honours a requested
    address while it is free."""

    leases: ClassVar[dict[bytes, str]] = {}
    made: ClassVar[list[FakeClient]] = []

    def _offer(self, wanted: str | None) -> str:
        cid = self.config.client_id
        if cid not in FakeServer.leases:
            taken = set(FakeServer.leases.values())
            free = [a for a in POOL if a not in taken]
            FakeServer.leases[cid] = wanted if wanted in free else free[0]
        return FakeServer.leases[cid]

    async def bootstrap(self) -> None:
        self.sent.append("discover")
        if FakeServer.answering:
            await self.fire(Trigger.BOUND, lease(self._offer(None)))

    async def transition(self, to: Any, send: Any = None) -> None:
        wanted = send.dhcp["options"]["requested_ip"]
        self.sent.append(f"discover {wanted}")
        if FakeServer.answering:
            await self.fire(Trigger.BOUND, lease(self._offer(wanted)))

    async def __aexit__(self, *exc: object) -> None:
        if self.lease is not None and self.state.name == "BOUND":
            FakeServer.leases.pop(self.config.client_id, None)  # DHCPRELEASE
        await super().__aexit__(*exc)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        FakeServer.made.append(self)


class Recorded:
    """The Events the controller sends, by reason."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((name, args))


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    FakeServer.leases, FakeServer.made, FakeServer.answering = {}, [], True
    found = Cluster()
    yield found
    found.stop()


@pytest.fixture
def nodes(cluster: Cluster) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []
    store = MemoryStore()

    def start(name: str, events: Any = None, report_after: float = 60) -> Node:
        node = Node(cluster, name, store.client(name), events=events, dhcp_client=FakeServer,
                    dhcp_report_after=report_after)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _annotations(cluster: Cluster, name: str) -> dict[str, str]:
    return dict(cluster.core.read_namespaced_service(name, "default").metadata.annotations or {})


def _uid(cluster: Cluster, name: str) -> str:
    return str(cluster.core.read_namespaced_service(name, "default").metadata.uid)


def test_a_dhcp_service_gets_a_lease_as_its_vip_status_and_requested_ip(cluster: Cluster,
                                                                        nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    cluster.service("web", "0.0.0.0")
    cluster.service("api", None, spec_ip="0.0.0.0")
    cluster.core.patch_namespaced_service("api", "default", {"metadata": {"annotations": {
        "kube-vip.io/loadbalancerHostname": "api-lb"}}})
    for name in ("web", "api"):
        cluster.endpoints(name, ["n1"])
    wait_for(lambda: len(node.held()) == 2, timeout=5)
    web, api = FakeServer.leases[f"kube-vip-metal/{_uid(cluster, 'web')}".encode()], FakeServer.leases[b"api-lb"]
    assert node.held() == {web, api} and web != api
    wait_for(lambda: cluster.status_ips("web") == [web] and cluster.status_ips("api") == [api], timeout=5)
    wait_for(lambda: _annotations(cluster, "web").get("kube-vip.io/requestedIP") == web, timeout=5)
    assert _annotations(cluster, "web")["kube-vip.io/vipHost"] == "n1"
    hosts = sorted(c.config.host_name for c in FakeServer.made)
    assert hosts == ["api-lb", "web"]
    loops = [t for t in threading.enumerate() if t.name == "service-dhcp"]
    assert len(loops) == 1  # every Service's client on one loop


def test_the_next_holder_asks_for_the_recorded_address_and_keeps_it(cluster: Cluster,
                                                                     nodes: Callable[..., Node]) -> None:
    n1 = nodes("n1")
    cluster.service("web", "0.0.0.0")
    cluster.endpoints("web", ["n1", "n2"])
    wait_for(lambda: len(n1.held()) == 1, timeout=5)
    (address,) = n1.held()
    wait_for(lambda: _annotations(cluster, "web").get("kube-vip.io/requestedIP") == address, timeout=5)
    n2 = nodes("n2")
    FakeServer.leases[b"someone-else"] = POOL[0] if address != POOL[0] else POOL[1]  # the pool moved on
    n1.stop()  # SIGTERM: VIP withdrawn, lease released, Lease released
    assert n1.held() == set() and "release" in FakeServer.made[0].sent
    wait_for(lambda: n2.held() == {address}, timeout=10)
    assert FakeServer.made[-1].sent == [f"discover {address}"]  # INIT-REBOOT-like: the recorded address asked
    wait_for(lambda: cluster.status_ips("web") == [address], timeout=5)


def test_delete_releases_and_an_expiry_withdraws(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    events = Recorded()
    node = nodes("n1", events=events)
    for name in ("web", "db"):
        cluster.service(name, "0.0.0.0")
        cluster.endpoints(name, ["n1"])
    wait_for(lambda: len(node.held()) == 2, timeout=5)
    web_client = next(c for c in FakeServer.made if c.config.host_name == "web")
    db_client = next(c for c in FakeServer.made if c.config.host_name == "db")
    web = str(web_client.lease.ip)  # type: ignore[union-attr]
    cluster.core.delete_namespaced_service("web", "default")
    wait_for(lambda: "release" in web_client.sent and web not in node.held(), timeout=5)
    assert web not in FakeServer.leases.values()
    assert node.controller.dhcp is not None and [str(k) for k in node.controller.dhcp.running()] == ["default/db"]
    db_client.fire_from_test(Trigger.EXPIRED, db_client.lease)  # type: ignore[arg-type]
    wait_for(lambda: node.held() == set(), timeout=5)
    # the metrics' view: web's lease still counted after its client was dropped (a counter never goes down);
    # db, still held here, asks for a new lease
    assert node.controller.dhcp is not None
    assert node.controller.dhcp.counts() == LeaseCounts(bound=0, waiting=1, leases=2, renewals=0, expiries=1)
    withdrawn = [args for name, args in events.calls if name == "service_withdrawn"]
    assert [(a[1], a[4]) for a in withdrawn] == [("db", "its DHCP lease ended (expired or taken back by the "
                                                  "server)")]
    served = [args for name, args in events.calls if name == "service_served"]
    assert sorted(a[1] for a in served) == ["db", "web"] and all(a[3] for a in served)  # only once leased


def test_no_endpoint_releases_and_an_endpoint_leases_again(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    cluster.service("web", "0.0.0.0")
    cluster.endpoints("web", ["n1"])
    wait_for(lambda: len(node.held()) == 1, timeout=5)
    (address,) = node.held()
    cluster.endpoints("web", ["n1"], serving=False)
    wait_for(lambda: node.held() == set() and "release" in FakeServer.made[0].sent, timeout=5)
    cluster.endpoints("web", ["n1"])
    wait_for(lambda: node.held() == {address}, timeout=5)
    assert len(FakeServer.made) == 2 and FakeServer.made[-1].sent == [f"discover {address}"]  # a new term


def test_a_service_changed_to_a_static_address_releases_its_lease(cluster: Cluster,
                                                                    nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    cluster.service("web", "0.0.0.0")
    cluster.endpoints("web", ["n1"])
    wait_for(lambda: len(node.held()) == 1, timeout=5)
    cluster.core.patch_namespaced_service("web", "default", {"metadata": {"annotations": {
        "kube-vip.io/loadbalancerIPs": "192.0.2.40"}}})
    wait_for(lambda: node.held() == {"192.0.2.40"} and "release" in FakeServer.made[0].sent, timeout=5)
    assert node.controller.dhcp is not None and node.controller.dhcp.running() == []
    wait_for(lambda: cluster.status_ips("web") == ["192.0.2.40"], timeout=5)


def test_a_server_that_never_answers_is_reported_not_fatal(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    FakeServer.answering = False
    events = Recorded()
    node = nodes("n1", events=events, report_after=0.2)
    cluster.service("web", "0.0.0.0")
    cluster.service("static", "192.0.2.9")
    for name in ("web", "static"):
        cluster.endpoints(name, ["n1"])
    wait_for(lambda: any(name == "dhcp_no_lease" for name, _ in events.calls), timeout=10)
    (args,) = {args for name, args in events.calls if name == "dhcp_no_lease"} or {()}
    assert args[:2] == ("default", "web") and "no DHCP lease" in args[3]
    assert node.held() == {"192.0.2.9"} and cluster.status_ips("web") == []  # nothing written before a lease
    assert node.controller.dhcp is not None
    assert node.controller.dhcp.counts() == LeaseCounts(bound=0, waiting=1, leases=0, renewals=0, expiries=0)


def test_bgp_without_one_holder_skips_dhcp_services(cluster: Cluster) -> None:
    addresses = FakeAddresses(("eth0", "lo"))
    vips = VipController(addresses, [RecordingAnnouncer()])
    events: Any = Recorded()
    controller = ServicesController(vips, cluster.api("n1"), "n1", RULES, interface_for=lambda _a: "lo",
                                    lock=None, timers=TIMERS, write_vip_host=False, prefix=lambda a: 32,
                                    events=events, dhcp_client=FakeServer)
    controller.start()
    try:
        cluster.service("web", "0.0.0.0")
        cluster.endpoints("web", ["n1"])
        wait_for(lambda: any(name == "service_skipped" for name, _ in events.calls), timeout=5)
        reason = next(args for name, args in events.calls if name == "service_skipped")[3]
        assert "DHCP" in reason and "--servicesElection" in reason
        assert FakeServer.made == [] and controller.dhcp is None
    finally:
        controller.stop()
        vips.stop()


def _svc(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "web", "uid": "u1", "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", **spec}}


def test_the_model_reads_kube_vips_dhcp_annotations() -> None:
    plain = interpret(_svc(loadBalancerIP="0.0.0.0"), RULES)
    assert isinstance(plain, ServiceIntent) and plain.addresses == ()
    assert plain.dhcp == Dhcp("web", "kube-vip-metal/u1", None)
    named = interpret(_svc({"kube-vip.io/loadbalancerIPs": "0.0.0.0,2001:db8::5",
                            "kube-vip.io/loadbalancerHostname": "shop",
                            "kube-vip.io/requestedIP": "198.51.100.151,2001:db8::9"}), RULES)
    assert isinstance(named, ServiceIntent) and named.addresses == (ipaddress.ip_address("2001:db8::5"),)
    assert named.dhcp == Dhcp("shop", "shop", ipaddress.ip_address("198.51.100.151"))
    stale = interpret(_svc({"kube-vip.io/requestedIP": "garbage"}, loadBalancerIP="0.0.0.0"), RULES)
    assert isinstance(stale, ServiceIntent) and stale.dhcp is not None and stale.dhcp.requested is None
    v6 = interpret(_svc(loadBalancerIP="::"), RULES)
    assert isinstance(v6, Skipped) and "DHCPv4 only" in v6.reason
    bad = interpret(_svc({"kube-vip.io/loadbalancerHostname": "no_such host"}, loadBalancerIP="0.0.0.0"), RULES)
    assert isinstance(bad, Skipped) and "kube-vip.io/loadbalancerHostname" in bad.reason
