"""Services of type LoadBalancer with real managers in the rig, on the emulator and on the real kube-apiserver
(each manager with its own token of the rendered RBAC): the VIP reachable from the client by ARP (the Services
Lease holder serves) and by BGP (BIRD's kernel FIB: every node with a serving endpoint, Local policy only the
endpoint's node), status written, delete removes it everywhere, the Lease holder's crash moves every Service, and
a Service on the control plane's own VIP shares it."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubevip_testbed import bird as bird_driver
from kubevip_testbed.bird import Bird, BirdPeer
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.realapi_support import tier_backend
from tests.rig_support import require, require_rig

TIMERS = (2.0, 1.5, 0.4)
ROUTER_AS, NODE_AS = 65000, 65001
NAMESPACE = "default"


class Api:
    """The test's own writes (as the user, the kube-vip cloud provider and the EndpointSlice controller)."""

    def __init__(self, lab: LabCluster) -> None:
        self.client = lab.api.admin_client()
        self.core: Any = client.CoreV1Api(self.client)
        self.discovery: Any = client.DiscoveryV1Api(self.client)
        self.created: list[str] = []

    def service(self, name: str, address: str, *, local: bool = False) -> None:
        body = {"metadata": {"name": name, "annotations": {"kube-vip.io/loadbalancerIPs": address}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                         "externalTrafficPolicy": "Local" if local else "Cluster"}}
        self.core.create_namespaced_service(NAMESPACE, body)
        self.created.append(name)

    def endpoints(self, service: str, nodes: list[str]) -> None:
        name = f"{service}-slice"
        body = {"metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": [f"10.244.0.{i + 1}"], "nodeName": node,
                               "conditions": {"ready": True, "serving": True}} for i, node in enumerate(nodes)]}
        try:
            self.discovery.replace_namespaced_endpoint_slice(name, NAMESPACE, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(NAMESPACE, body)

    def delete(self, name: str) -> None:
        self.core.delete_namespaced_service(name, NAMESPACE)
        self.created.remove(name)

    def status_ips(self, name: str) -> list[str]:
        found = self.core.read_namespaced_service_status(name, NAMESPACE)
        ingress = found.status.load_balancer.ingress if found.status and found.status.load_balancer else None
        return [str(i.ip) for i in ingress or []]

    def close(self) -> None:
        for name in list(self.created):  # the real API server outlives the cluster
            with contextlib.suppress(client.ApiException):
                self.delete(name)
            with contextlib.suppress(client.ApiException):
                self.discovery.delete_namespaced_endpoint_slice(f"{name}-slice", NAMESPACE)
        self.client.close()


@pytest.fixture(params=["emulator", "kube-apiserver"])
def arp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Api]]:
    require_rig()
    cluster = LabCluster(vip="198.51.100.10", timers=TIMERS, api=tier_backend(request),
                         extra_args=["--services"])
    with cluster as lab:
        api = Api(lab)
        try:
            yield lab, api
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            api.close()


def _services_holder(lab: LabCluster) -> str:
    return lab.api.lease_holder("kube-system", "plndr-svcs-lock")


def test_arp_the_services_lease_holder_serves_and_a_crash_moves_every_service(
        arp_lab: tuple[LabCluster, Api]) -> None:
    lab, api = arp_lab
    for node in lab.nodes:
        lab.start(node)
    api.service("web", "198.51.100.50")
    api.service("dns", "198.51.100.51")
    api.service("cp-too", "198.51.100.10")  # on the control plane's own VIP: shared, never taken away
    for name in ("web", "dns", "cp-too"):
        api.endpoints(name, ["n2", "n3"])
    holder = wait_for_value(lambda: _services_holder(lab), timeout=20)  # the holder seen, not a later read
    wait_for(lambda: lab.holders("198.51.100.50") == [holder] and lab.holders("198.51.100.51") == [holder],
             timeout=20)
    assert lab.rig.run("client", ["ping", "-c1", "-W1", "198.51.100.50"]).returncode == 0
    assert lab.node_of_mac(lab.client_mac("198.51.100.50")) == holder
    wait_for(lambda: api.status_ips("web") == ["198.51.100.50"], timeout=10)
    wait_for(lambda: _vip_host(api, "web") == holder, timeout=10)

    api.delete("dns")
    wait_for(lambda: lab.holders("198.51.100.51") == [], timeout=10)  # gone everywhere

    cp_leader = lab.lease_holder()
    lab.rig.link_down(holder)  # a crash of the Services Lease holder
    lab.kill(holder)
    # the holder seen by the wait: a Lease read after it could name another holder (or none)
    successor = wait_for_value(lambda: now if (now := _services_holder(lab)) != holder else None, timeout=20)
    wait_for(lambda: successor in lab.holders("198.51.100.50"), timeout=10)
    # the GARP leaves from the announcer's thread after the address is added (a fixed 0.5 s was too short on a
    # busy machine); without one the client's entry would name the dead node's MAC for far longer than 5 s
    wait_for(lambda: lab.rig.run("client", ["ping", "-c1", "-W1", "198.51.100.50"], check=False).returncode == 0,
             timeout=5)
    if cp_leader != holder:  # the shared address stayed where the control plane leads
        assert cp_leader in lab.holders("198.51.100.10")
    wait_for(lambda: _vip_host(api, "web") == successor, timeout=10)


def _vip_host(api: Api, name: str) -> str | None:
    annotations = api.core.read_namespaced_service(name, NAMESPACE).metadata.annotations or {}
    return annotations.get("kube-vip.io/vipHost")


@pytest.fixture(params=["emulator", "kube-apiserver"])
def bgp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Bird, Api]]:
    require_rig()
    require("BIRD 2", bird_driver.missing())
    cluster = LabCluster(vip="203.0.113.10", timers=TIMERS, api=tier_backend(request))
    router = cluster.rig.ipv4("router")
    cluster.mode_args = ["--bgp", "--leaderElection", "--services", "--bgppeers", f"{router}:{ROUTER_AS}",
                         "--localAS", str(NODE_AS), "--bgpHoldTimer", "9"]
    with cluster as lab:
        peers = [BirdPeer(node, lab.rig.ipv4(node), NODE_AS) for node in lab.nodes]
        bird = Bird(lab.rig, "router", peers=peers, asn=ROUTER_AS).start()
        api = Api(lab)
        try:
            for address in ("203.0.113.50", "203.0.113.51"):
                lab.rig.run("client", ["ip", "route", "replace", f"{address}/32", "via", router])
            for node in lab.nodes:
                lab.start(node)
            yield lab, bird, api
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            bird.stop()
            api.close()


def _hops(bird: Bird, address: str) -> list[str]:
    return sorted(bird.fib(4).get(ipaddress.ip_network(f"{address}/32"), []))


def test_bgp_every_serving_node_advertises_local_only_the_endpoints_node_delete_withdraws(
        bgp_lab: tuple[LabCluster, Bird, Api]) -> None:
    lab, bird, api = bgp_lab
    everyone = sorted(lab.rig.ipv4(node) for node in lab.nodes)
    # the control plane's route first (the managers were only just started): the end asserts it stayed untouched
    def routed_leader() -> str | None:
        leader = lab.lease_holder()
        return leader if leader and _hops(bird, "203.0.113.10") == [lab.rig.ipv4(leader)] else None

    wait_for_value(routed_leader, timeout=30)
    api.service("web", "203.0.113.50")
    api.endpoints("web", ["n3"])  # Cluster policy: any endpoint makes every node a next hop (kube-proxy forwards)
    api.service("local", "203.0.113.51", local=True)
    api.endpoints("local", ["n2"])
    wait_for(lambda: _hops(bird, "203.0.113.50") == everyone, timeout=20)
    wait_for(lambda: _hops(bird, "203.0.113.51") == [lab.rig.ipv4("n2")], timeout=20)
    assert lab.rig.run("client", ["ping", "-c1", "-W1", "203.0.113.51"]).returncode == 0  # n2 holds it on lo
    wait_for(lambda: api.status_ips("local") == ["203.0.113.51"], timeout=10)
    api.endpoints("local", ["n1"])  # the pod moved to n1
    wait_for(lambda: _hops(bird, "203.0.113.51") == [lab.rig.ipv4("n1")], timeout=20)
    api.delete("web")
    wait_for(lambda: _hops(bird, "203.0.113.50") == [], timeout=20)
    wait_for(lambda: lab.holders("203.0.113.50") == [], timeout=10)
    assert _hops(bird, "203.0.113.10") == [lab.rig.ipv4(lab.lease_holder())]  # the control plane untouched


@pytest.fixture(params=["emulator", "kube-apiserver"])
def per_service_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Api]]:
    require_rig()
    cluster = LabCluster(vip="198.51.100.10", timers=TIMERS, api=tier_backend(request),
                         extra_args=["--services", "--servicesElection"])
    with cluster as lab:
        api = Api(lab)
        try:
            yield lab, api
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            api.close()


def _service_lease_holder(api: Api, service: str) -> str:
    try:
        lease = client.CoordinationV1Api(api.client).read_namespaced_lease(f"kubevip-{service}", NAMESPACE)
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def test_per_service_election_each_service_its_holder_and_a_crash_moves_only_its_services(
        per_service_lab: tuple[LabCluster, Api]) -> None:
    lab, api = per_service_lab
    for node in lab.nodes:
        lab.start(node)
    addresses = {f"s{i}": f"198.51.100.{60 + i}" for i in range(6)}
    for name, address in addresses.items():
        api.service(name, address)
        api.endpoints(name, list(lab.nodes))

    def placement() -> dict[str, list[str]]:
        return {name: lab.holders(address) for name, address in addresses.items()}

    # the placement seen by the wait, not a later read (a Service could be moving at that one)
    def settled_placement() -> dict[str, list[str]] | None:
        now = placement()
        return now if all(len(held) == 1 for held in now.values()) else None

    before = wait_for_value(settled_placement, timeout=30)
    assert all(_service_lease_holder(api, name) == held[0] for name, held in before.items())
    victim = before["s0"][0]
    kept = {name: held for name, held in before.items() if held[0] != victim}
    lab.rig.link_down(victim)
    lab.kill(victim)
    moved = [name for name, held in before.items() if held[0] == victim]

    def alive(held: list[str]) -> list[str]:
        return [node for node in held if node != victim]  # the dead node keeps its addresses: it is cut off

    wait_for(lambda: all(len(alive(placement()[name])) == 1 for name in moved), timeout=TIMERS[0] + 10)
    assert all(_service_lease_holder(api, name) == alive(placement()[name])[0] for name in moved)
    assert {name: held for name, held in placement().items() if name in kept} == kept  # the others never moved
    assert lab.rig.run("client", ["ping", "-c1", "-W1", addresses["s0"]]).returncode == 0
