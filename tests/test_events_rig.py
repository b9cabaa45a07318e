"""Kubernetes Events from real managers in the rig, on the emulator and on the real kube-apiserver (where each
manager has a token of the rendered RBAC, so its `create` and `patch` on events are proven enough): BecameLeader
on the Lease from the leader; the VIP deleted by hand twice gives one VipDriftRepaired whose count is PATCHed to 2;
a Service gets VipServed from the node serving it, a malformed one ServiceSkipped naming the key; a leader cut off
from its API server steps down with the reason, written once the server answers again, and its successor's
BecameLeader; SIGTERM gives SteppedDown "shutting down"; by BGP, the router ending and restoring the session gives
BgpPeerDown and BgpPeerUp on the Node (the second Up bumps the first one's count). Every wait is for a condition."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig

TIMERS = (2.0, 1.5, 0.4)
VIP = "198.51.100.10"
LEASE = "plndr-cp-lock"


class Events:
    """The test's view of the Events, only those created since it started (the real API server outlives tests)."""

    def __init__(self, lab: LabCluster) -> None:
        self.client = lab.api.admin_client()
        self.core: Any = client.CoreV1Api(self.client)
        self.before = {e.metadata.uid for ns in ("kube-system", "default")
                       for e in self.core.list_namespaced_event(ns).items}
        self.services: list[str] = []

    def find(self, namespace: str, kind: str, name: str, reason: str, host: str | None = None) -> list[Any]:
        found = []
        for event in self.core.list_namespaced_event(namespace).items:
            ref = event.involved_object
            if (event.metadata.uid not in self.before and ref.kind == kind and ref.name == name
                    and event.reason == reason and (host is None or event.reporting_instance == host)):
                found.append(event)
        return found

    def lease(self, reason: str, host: str | None = None) -> list[Any]:
        return self.find("kube-system", "Lease", LEASE, reason, host)

    def service(self, name: str, address: str, annotations: dict[str, str] | None = None) -> Any:
        body = {"metadata": {"name": name, "annotations": annotations or {"kube-vip.io/loadbalancerIPs": address}},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}}
        self.services.append(name)
        return self.core.create_namespaced_service("default", body)

    def endpoints(self, service: str, nodes: list[str]) -> None:
        labels = {"kubernetes.io/service-name": service}
        body = {"metadata": {"name": f"{service}-slice", "labels": labels},
                "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": [f"10.244.0.{i + 1}"], "nodeName": node,
                               "conditions": {"ready": True, "serving": True}} for i, node in enumerate(nodes)]}
        discovery: Any = client.DiscoveryV1Api(self.client)
        discovery.create_namespaced_endpoint_slice("default", body)

    def close(self) -> None:
        discovery = client.DiscoveryV1Api(self.client)
        for name in self.services:
            with contextlib.suppress(client.ApiException):
                self.core.delete_namespaced_service(name, "default")
            with contextlib.suppress(client.ApiException):
                discovery.delete_namespaced_endpoint_slice(f"{name}-slice", "default")
        self.client.close()


@pytest.fixture(params=["emulator", "kube-apiserver"])
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Events]]:
    require_rig()
    backend = tier_backend(request)
    with LabCluster(vip=VIP, timers=TIMERS, api=backend, extra_args=["--services"]) as cluster:
        events = Events(cluster)
        try:
            yield cluster, events
        finally:
            for node in list(cluster.managers):
                cluster.terminate(node)
            events.close()


def test_leadership_drift_and_services_become_events(lab: tuple[LabCluster, Events]) -> None:
    cluster, events = lab
    for node in cluster.nodes:
        cluster.start(node)
    leader = wait_for_value(cluster.lease_holder, timeout=30)  # the holder seen, not a later read
    wait_for(lambda: events.lease("BecameLeader", leader), timeout=30)
    (elected,) = events.lease("BecameLeader", leader)
    assert elected.source.component == "kube-vip-metal" and elected.source.host == leader
    assert VIP in elected.message
    # `kubectl describe lease` finds it: the field selector it sends, with the Lease's own uid
    coordination: Any = client.CoordinationV1Api(events.client)
    lease_uid = coordination.read_namespaced_lease(LEASE, "kube-system").metadata.uid
    selector = (f"involvedObject.kind=Lease,involvedObject.name={LEASE},involvedObject.namespace=kube-system,"
                f"involvedObject.uid={lease_uid}")
    described = events.core.list_namespaced_event("kube-system", field_selector=selector).items
    assert elected.metadata.uid in {e.metadata.uid for e in described}

    # the VIP deleted by hand, twice: one Event, its count bumped by PATCH (the RBAC's second verb)
    for count in (1, 2):
        wait_for(lambda: cluster.holders() == [leader], timeout=20)
        cluster.rig.run(leader, ["ip", "addr", "del", f"{VIP}/32", "dev", "eth0"])
        wait_for(lambda: any(e.count == count for e in events.lease("VipDriftRepaired", leader)),  # noqa: B023
                 timeout=30)
    (repaired,) = events.lease("VipDriftRepaired", leader)
    assert repaired.type == "Warning" and "re-added" in repaired.message

    web = events.service("ev-web", "198.51.100.60")
    events.endpoints("ev-web", ["n1", "n2", "n3"])
    wait_for(lambda: bool(cluster.api.lease_holder("kube-system", "plndr-svcs-lock")), timeout=30)
    wait_for(lambda: events.find("default", "Service", "ev-web", "VipServed"), timeout=30)
    serving = cluster.api.lease_holder("kube-system", "plndr-svcs-lock")
    (served,) = events.find("default", "Service", "ev-web", "VipServed")
    assert served.reporting_instance == serving and "198.51.100.60" in served.message
    assert served.involved_object.uid == web.metadata.uid

    events.service("ev-bad", "", {"kube-vip.io/loadbalancerIPs": "not-an-address"})
    wait_for(lambda: events.find("default", "Service", "ev-bad", "ServiceSkipped"), timeout=30)
    skipped = events.find("default", "Service", "ev-bad", "ServiceSkipped")[0]
    assert skipped.type == "Warning" and "kube-vip.io/loadbalancerIPs" in skipped.message

    # the leader cut off from its API server: it steps down, another takes over; its Event once the API is back
    cluster.api.set_fault(leader, outage="refuse")
    # the holder seen by the wait: a Lease read after it could name another holder (or none)
    successor = wait_for_value(lambda: now if (now := cluster.lease_holder()) != leader else None, timeout=30)
    wait_for(lambda: events.lease("BecameLeader", successor), timeout=30)
    cluster.api.clear_fault(leader)
    wait_for(lambda: events.lease("SteppedDown", leader), timeout=60)
    (lost,) = events.lease("SteppedDown", leader)
    assert lost.type == "Warning" and "not renewed within the renew deadline" in lost.message

    # a clean shutdown of the new leader: SteppedDown, Normal, "shutting down"
    assert cluster.terminate(successor) == 0
    wait_for(lambda: events.lease("SteppedDown", successor), timeout=30)
    (stopped,) = events.lease("SteppedDown", successor)
    assert stopped.type == "Normal" and stopped.message.endswith("shutting down")


BGP_VIP = "203.0.113.10"
ROUTER_AS, NODE_AS = 65000, 65001


@pytest.fixture(params=["emulator", "kube-apiserver"])
def bgp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Any, Events]]:
    """One manager by BGP without leader election (so there is no Lease: the sessions' Events are the Node's) and
    BIRD on the router."""
    from kubevip_testbed import bird as bird_driver
    from kubevip_testbed.bird import Bird, BirdPeer
    from tests.rig_support import require

    require_rig()
    require("BIRD 2", bird_driver.missing())
    backend = tier_backend(request)
    cluster = LabCluster(vip=BGP_VIP, timers=TIMERS, api=backend)
    router = cluster.rig.ipv4("router")
    cluster.mode_args = ["--bgp", "--bgppeers", f"{router}:{ROUTER_AS}", "--localAS", str(NODE_AS),
                         "--bgpHoldTimer", "9"]
    with cluster as lab:
        router_bird = Bird(lab.rig, "router", peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)],
                           asn=ROUTER_AS).start()
        events = Events(lab)
        try:
            yield lab, router_bird, events
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            router_bird.stop()
            events.close()


def test_bgp_sessions_going_down_and_up_are_node_events(bgp_lab: tuple[LabCluster, Any, Events]) -> None:
    lab, router, events = bgp_lab
    router_ip = lab.rig.ipv4("router")
    lab.start("n1")
    router.wait_established("n1", timeout=30)
    wait_for(lambda: events.find("default", "Node", "n1", "BgpPeerUp", "n1"), timeout=30)
    (up,) = events.find("default", "Node", "n1", "BgpPeerUp", "n1")
    assert up.involved_object.uid == "n1" and f"{router_ip} (AS {ROUTER_AS}) established" in up.message

    router.birdc("disable", "n1")  # the router ends the session (a Cease NOTIFICATION)
    wait_for(lambda: events.find("default", "Node", "n1", "BgpPeerDown", "n1"), timeout=30)
    (down,) = events.find("default", "Node", "n1", "BgpPeerDown", "n1")
    assert down.type == "Warning" and str(router_ip) in down.message

    router.birdc("enable", "n1")
    router.wait_established("n1", timeout=30)
    # the same Event again: its count is bumped (PATCH), no second object
    wait_for(lambda: [e.count for e in events.find("default", "Node", "n1", "BgpPeerUp", "n1")] == [2], timeout=30)
