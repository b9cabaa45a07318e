"""The Services controller over real HTTP against the Kubernetes API emulator, with the VIP controller on an
in-memory address table: which Services are served here and when, what is written back, sharing, cleanup, and
convergence after a watch break and a 410."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from generic.addresses import Vip
from generic.election.elector import Timers
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.services.controller import ServicesController
from kubevip_metal.services.model import ClassRules, ServiceKey
from kubevip_testbed.waiting import wait_for
from tests.fakes import FakeAddresses, RecordingAnnouncer
from tests.kubeapi_support import EmulatedApi
from tests.memory_lock import MemoryStore

RULES = ClassRules("kube-vip.io/kube-vip-class", only=False, legacy=True)
TIMERS = Timers(1.0, 0.6, 0.2)


class Cluster:
    def __init__(self) -> None:
        self.emulated = EmulatedApi(["n1", "n2", "admin"])
        self.kube = self.emulated.kube
        self.admin = self.api("admin")
        # typed in the client, but every model field is Optional: tests use them as Any
        self.core: Any = client.CoreV1Api(self.admin)
        self.discovery: Any = client.DiscoveryV1Api(self.admin)

    def api(self, identity: str) -> Any:
        return self.emulated.client(identity)

    def service(self, name: str, ips: str | None = None, *, local: bool = False, namespace: str = "default",
                spec_ip: str | None = None, klass: str | None = None, status_ip: str | None = None) -> None:
        annotations = {"kube-vip.io/loadbalancerIPs": ips} if ips is not None else None
        spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 443, "protocol": "TCP"}],
                                "externalTrafficPolicy": "Local" if local else "Cluster"}
        if spec_ip:
            spec["loadBalancerIP"] = spec_ip
        if klass:
            spec["loadBalancerClass"] = klass
        body = {"metadata": {"name": name, "namespace": namespace, "annotations": annotations}, "spec": spec}
        self.core.create_namespaced_service(namespace, body)
        if status_ip:
            self.core.patch_namespaced_service_status(name, namespace,
                                                      {"status": {"loadBalancer": {"ingress": [{"ip": status_ip}]}}})

    def endpoints(self, service: str, nodes: list[str], *, namespace: str = "default", serving: bool = True) -> None:
        name = f"{service}-slice"
        body = {"metadata": {"name": name, "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [f"10.0.0.{i + 1}"], "nodeName": node,
                               "conditions": {"ready": serving, "serving": serving}}
                              for i, node in enumerate(nodes)]}
        try:
            self.discovery.replace_namespaced_endpoint_slice(name, namespace, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(namespace, body)

    def status_ips(self, name: str, namespace: str = "default") -> list[str]:
        found = self.core.read_namespaced_service_status(name, namespace)
        ingress = (found.status.load_balancer.ingress if found.status and found.status.load_balancer else None)
        return [str(i.ip) for i in ingress or []]

    def stop(self) -> None:
        self.emulated.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = Cluster()
    yield found
    found.stop()


class Node:
    """One node's Services controller on fake netlink; `options` go to the controller as they are (events, DHCP)."""

    def __init__(self, cluster: Cluster, name: str, lock: Any = None, per_service: bool = False,
                 **options: Any) -> None:
        self.addresses = FakeAddresses(("eth0", "lo"))
        self.announcer = RecordingAnnouncer()
        self.vips = VipController(self.addresses, [self.announcer])
        self.controller = ServicesController(self.vips, cluster.api(name), name, RULES,
                                             interface_for=lambda _a: "eth0", lock=lock, timers=TIMERS,
                                             write_vip_host=lock is not None or per_service,
                                             prefix=lambda a: 32 if a.version == 4 else 128,
                                             per_service=per_service, **options)
        self.controller.start()

    def held(self) -> set[str]:
        return {str(v.address) for v in self.addresses.held}

    def stop(self) -> None:
        self.controller.stop()
        self.vips.stop()


@pytest.fixture
def nodes(cluster: Cluster) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(name: str, lock: Any = None, per_service: bool = False) -> Node:
        node = Node(cluster, name, lock, per_service)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def vip(address: str) -> Vip:
    return Vip(ipaddress.ip_address(address), 32, "eth0")


def test_a_service_with_a_serving_endpoint_is_served_and_its_status_written(
        cluster: Cluster, nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    cluster.service("web", "192.0.2.50")
    time.sleep(0.3)
    assert node.held() == set()  # no endpoint serves it yet: nothing to send traffic to
    cluster.endpoints("web", ["n2"])  # Cluster policy: any node's endpoint will do
    wait_for(lambda: node.held() == {"192.0.2.50"}, timeout=5)
    assert vip("192.0.2.50") in node.announcer.announced
    wait_for(lambda: cluster.status_ips("web") == ["192.0.2.50"], timeout=5)
    found = cluster.core.read_namespaced_service_status("web", "default")
    ingress = found.status.load_balancer.ingress[0]
    assert ingress.ip_mode == "VIP" and [(p.port, p.protocol) for p in ingress.ports] == [(443, "TCP")]
    cluster.core.delete_namespaced_service("web", "default")
    wait_for(lambda: node.held() == set(), timeout=5)


def test_local_policy_follows_the_node_of_the_endpoint(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    n1, n2 = nodes("n1"), nodes("n2")
    cluster.service("local", "192.0.2.51", local=True)
    cluster.endpoints("local", ["n2"])
    wait_for(lambda: n2.held() == {"192.0.2.51"}, timeout=5)
    assert n1.held() == set()
    cluster.endpoints("local", ["n1"])  # the pod moved
    wait_for(lambda: n1.held() == {"192.0.2.51"} and n2.held() == set(), timeout=5)
    cluster.endpoints("local", ["n1"], serving=False)  # its last local endpoint stops serving
    wait_for(lambda: n1.held() == set(), timeout=5)


def test_status_written_by_another_controller_is_never_adopted(
        cluster: Cluster, nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    cluster.service("klipper", status_ip="198.51.100.77")  # no address of ours: only someone else's status
    cluster.endpoints("klipper", ["n1"])
    cluster.service("ours", spec_ip="192.0.2.52")  # spec.loadBalancerIP is an input
    cluster.endpoints("ours", ["n1"])
    wait_for(lambda: node.held() == {"192.0.2.52"}, timeout=5)
    time.sleep(0.3)
    assert node.held() == {"192.0.2.52"} and cluster.status_ips("klipper") == ["198.51.100.77"]


def test_class_rules_ignore_and_malformed_annotations(cluster: Cluster, nodes: Callable[..., Node],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    node = nodes("n1")
    cluster.service("other-class", "192.0.2.60", klass="example.com/other")
    cluster.service("our-class", "192.0.2.61", klass="kube-vip.io/kube-vip-class")
    cluster.service("broken", "192.0.2.999")
    cluster.service("dhcp", "0.0.0.0")
    for name in ("other-class", "our-class", "broken", "dhcp"):
        cluster.endpoints(name, ["n1"])
    wait_for(lambda: node.held() == {"192.0.2.61"}, timeout=5)

    def logged() -> str:
        return "\n".join(str(getattr(r, "kv_fields", "")) for r in list(caplog.records))

    # the Services are handled one by one: a skipped one's line may come after the served one is held
    wait_for(lambda: "default/broken" in (now := logged()) and "default/dhcp" in now, timeout=5)
    text = logged()
    assert "default/broken" in text and "kube-vip.io/loadbalancerIPs" in text and "192.0.2.999" in text
    assert "default/dhcp" in text and "DHCP" in text


def test_two_services_share_a_vip_until_the_last_one_goes(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    for name in ("https", "dns"):
        cluster.service(name, "192.0.2.53")
        cluster.endpoints(name, ["n1"])
    wait_for(lambda: node.vips.owners_of(vip("192.0.2.53")) == ["service:default/dns", "service:default/https"],
             timeout=5)
    assert node.held() == {"192.0.2.53"}
    cluster.core.delete_namespaced_service("https", "default")
    wait_for(lambda: node.vips.owners_of(vip("192.0.2.53")) == ["service:default/dns"], timeout=5)
    assert node.held() == {"192.0.2.53"}
    cluster.core.delete_namespaced_service("dns", "default")
    wait_for(lambda: node.held() == set(), timeout=5)


def test_one_lease_holder_serves_them_all_and_hands_over(cluster: Cluster, nodes: Callable[..., Node]) -> None:
    store = MemoryStore()
    n1 = nodes("n1", store.client("n1"))
    cluster.service("web", "192.0.2.54")
    cluster.endpoints("web", ["n1", "n2"])
    wait_for(lambda: n1.held() == {"192.0.2.54"}, timeout=5)
    wait_for(lambda: "n1" in str(cluster.core.read_namespaced_service("web", "default").metadata.annotations),
             timeout=5)  # kube-vip.io/vipHost
    n2 = nodes("n2", store.client("n2"))
    time.sleep(0.5)
    assert n2.held() == set()
    n1.stop()
    wait_for(lambda: n2.held() == {"192.0.2.54"} and n1.held() == set(), timeout=5)
    wait_for(lambda: "n2" in str(cluster.core.read_namespaced_service("web", "default").metadata.annotations),
             timeout=5)


def test_a_watch_break_and_a_410_in_the_middle_of_changes_converge(
        cluster: Cluster, nodes: Callable[..., Node]) -> None:
    node = nodes("n1")
    for i in range(5):
        cluster.service(f"s{i}", f"192.0.2.{70 + i}")
        cluster.endpoints(f"s{i}", ["n1"])
    wait_for(lambda: len(node.held()) == 5, timeout=5)
    cluster.kube.set_fault("n1", outage="refuse")  # the watches are cut and cannot come back for a while
    cluster.core.delete_namespaced_service("s0", "default")
    cluster.service("s5", "192.0.2.75")
    cluster.endpoints("s5", ["n1"])
    cluster.endpoints("s1", ["n2"], serving=False)
    for _ in range(3):
        cluster.core.patch_namespaced_service("s2", "default", {"metadata": {"labels": {"touch": str(time.time())}}})
    cluster.kube.compact()  # the version the watches would resume from is gone: 410, list again
    cluster.kube.clear_fault("n1")
    wait_for(lambda: node.held() == {"192.0.2.72", "192.0.2.73", "192.0.2.74", "192.0.2.75"}, timeout=20)
    assert any(informer.resets >= 2 for informer in node.controller._informers)  # it did list again
    assert node.controller.serving()[ServiceKey("default", "s2")]


def _lease_holder(cluster: Cluster, service: str) -> str:
    try:
        lease = client.CoordinationV1Api(cluster.admin).read_namespaced_lease(f"kubevip-{service}", "default")
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "") if lease.spec else ""


def test_per_service_election_one_holder_each_handover_and_local_policy(
        cluster: Cluster, nodes: Callable[..., Node]) -> None:
    import threading

    n1, n2 = nodes("n1", per_service=True), nodes("n2", per_service=True)
    threads = threading.active_count()
    for i in range(20):
        cluster.service(f"s{i}", f"192.0.2.{100 + i}")
        cluster.endpoints(f"s{i}", ["n1", "n2"])
    everything = {f"192.0.2.{100 + i}" for i in range(20)}
    # one read of each node per look: a second read could pair the union of one moment with the overlap of another
    wait_for(lambda: (one := n1.held()) | (two := n2.held()) == everything and not one & two, timeout=10)
    from kubevip_metal.services.elections import WRITERS

    # no thread per Service (or per Lease): at most the fixed pool of Lease writers each
    assert threading.active_count() <= threads + 2 * WRITERS
    held_by = {f"s{i}": ("n1" if f"192.0.2.{100 + i}" in n1.held() else "n2") for i in range(20)}
    assert all(_lease_holder(cluster, name) == node for name, node in held_by.items())
    wait_for(lambda: "n" in str(cluster.core.read_namespaced_service("s0", "default").metadata.annotations), 5)

    cluster.service("local", "192.0.2.150", local=True)
    cluster.endpoints("local", ["n2"])
    wait_for(lambda: "192.0.2.150" in n2.held() and _lease_holder(cluster, "local") == "n2", timeout=10)
    cluster.endpoints("local", ["n1"])  # n2 lost its last local endpoint: it lets go at once, n1 takes over
    wait_for(lambda: "192.0.2.150" in n1.held() and "192.0.2.150" not in n2.held(), timeout=10)

    n1.stop()  # a graceful stop releases every Lease it held: n2 takes them over without waiting them out
    wait_for(lambda: n2.held() >= everything, timeout=10)
    assert n1.held() == set()
