"""Which Services are ours and what they want (kubevip_metal.services.model): kube-vip's class rules, its
annotations, status never an input, and EndpointSlices' serving nodes."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from kubevip_metal.services.model import ClassRules, Port, ServiceIntent, ServiceKey, Skipped, interpret, serving_nodes

LEGACY = ClassRules("kube-vip.io/kube-vip-class", only=False, legacy=True)


PORTS = [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]


def svc(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "web", "uid": "u1", "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", "ports": PORTS, **spec}}


@pytest.mark.parametrize(("klass", "rules", "ours"), [
    (None, LEGACY, True),
    ("kube-vip.io/kube-vip-class", LEGACY, True),
    ("example.com/other", LEGACY, False),
    (None, ClassRules("kube-vip.io/kube-vip-class", only=True, legacy=True), False),  # --lbClassOnly
    (None, ClassRules("kube-vip.io/kube-vip-class", only=False, legacy=False), False),  # no legacy handling
    ("kube-vip.io/kube-vip-class", ClassRules("kube-vip.io/kube-vip-class", only=True, legacy=False), True),
])
def test_load_balancer_class_rules(klass: str | None, rules: ClassRules, ours: bool) -> None:
    spec: dict[str, Any] = {"loadBalancerIP": "192.0.2.5"} | ({"loadBalancerClass": klass} if klass else {})
    assert isinstance(interpret(svc(**spec), rules), ServiceIntent) is ours


def test_the_annotation_wins_over_the_spec_and_status_is_never_read() -> None:
    found = interpret(svc({"kube-vip.io/loadbalancerIPs": "192.0.2.7,2001:db8::7"}, loadBalancerIP="192.0.2.5",
                          externalTrafficPolicy="Local"), LEGACY)
    assert found == ServiceIntent(ServiceKey("ns", "web"), "u1",
                                  (ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7")),
                                  (Port(80, "TCP"), Port(53, "UDP")), local=True)
    with_status = svc() | {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}}
    assert interpret(with_status, LEGACY) is None  # someone else's address: not adopted, waiting for our IPAM


def test_not_ours_ignored_and_malformed() -> None:
    assert interpret(svc(loadBalancerIP="192.0.2.5") | {"spec": {"type": "ClusterIP"}}, LEGACY) is None
    assert interpret(svc({"kube-vip.io/ignore": "true"}, loadBalancerIP="192.0.2.5"), LEGACY) is None
    bad = interpret(svc({"kube-vip.io/loadbalancerIPs": "192.0.2.300"}), LEGACY)
    assert isinstance(bad, Skipped) and "ns/web" in bad.reason and "kube-vip.io/loadbalancerIPs" in bad.reason
    two = interpret(svc({"kube-vip.io/loadbalancerIPs": "192.0.2.1,192.0.2.2"}), LEGACY)
    assert isinstance(two, Skipped) and "two IPv4" in two.reason
    dhcp6 = interpret(svc(loadBalancerIP="::"), LEGACY)  # 0.0.0.0: tests/test_services_dhcp.py
    assert isinstance(dhcp6, Skipped) and "DHCP" in dhcp6.reason


def test_serving_nodes_count_serving_and_terminating_endpoints() -> None:
    slice_obj = {"metadata": {"namespace": "ns", "name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                 "endpoints": [
                     {"nodeName": "n1", "conditions": {"ready": True, "serving": True}},
                     {"nodeName": "n2", "conditions": {"ready": False, "serving": True, "terminating": True}},
                     {"nodeName": "n3", "conditions": {"ready": False, "serving": False}},
                     {"nodeName": "n4", "conditions": {}},  # nil means ready
                 ]}
    assert serving_nodes(slice_obj) == (ServiceKey("ns", "web"), frozenset({"n1", "n2", "n4"}))
    assert serving_nodes({"metadata": {"name": "orphan"}}) == (None, frozenset())
