"""The Services controller's Events, over real HTTP against the emulator: VipServed on the Service (its uid) when
this node starts serving it, VipWithdrawn with the reason when it stops while the Service stays (no endpoint, no
longer a LoadBalancer, its annotation broken), ServiceSkipped naming the malformed key, and nothing for a deleted
Service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import build_config
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.events import ObjectRef
from kubevip_metal.services.controller import ServicesController
from kubevip_testbed.waiting import wait_for
from tests.fakes import FakeAddresses
from tests.test_services_controller import RULES, TIMERS, Cluster


class ListRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[ObjectRef, str, str, str]] = []

    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = "Normal") -> None:
        self.seen.append((ref, reason, message, kind))

    def of(self, name: str, reason: str) -> list[tuple[ObjectRef, str, str, str]]:
        return [e for e in self.seen if e[0].name == name and e[1] == reason]


@pytest.fixture
def world() -> Iterator[tuple[Cluster, ListRecorder, FakeAddresses]]:
    cluster = Cluster()
    command, given = parse_command_line(["manager", "--services", "--bgp", "--nodeName", "n1",
                                         "--bgppeers", "192.0.2.1:65000::false"])
    assert command is not None
    recorded = ListRecorder()
    addresses = FakeAddresses(("eth0", "lo"))
    vips = VipController(addresses, [])
    controller = ServicesController(vips, cluster.api("n1"), "n1", RULES, interface_for=lambda _a: "lo",
                                    lock=None, timers=TIMERS, write_vip_host=False, prefix=lambda _a: 32,
                                    events=DaemonEvents(build_config(given, command), recorded))
    controller.start()
    try:
        yield cluster, recorded, addresses
    finally:
        controller.stop()
        vips.stop()
        cluster.stop()


def test_service_events(world: tuple[Cluster, ListRecorder, FakeAddresses]) -> None:
    cluster, recorded, addresses = world
    cluster.service("web", "192.0.2.50")
    cluster.endpoints("web", ["n2"])
    wait_for(lambda: recorded.of("web", "VipServed"), timeout=10)
    (ref, _reason, message, kind), = recorded.of("web", "VipServed")
    uid = cluster.core.read_namespaced_service("web", "default").metadata.uid
    assert (ref.kind, ref.namespace, ref.uid, kind) == ("Service", "default", uid, "Normal")
    assert message == "192.0.2.50 served by n1"

    cluster.endpoints("web", ["n2"], serving=False)
    wait_for(lambda: recorded.of("web", "VipWithdrawn"), timeout=10)
    assert recorded.of("web", "VipWithdrawn")[0][2] == "192.0.2.50 no longer served by n1: no ready endpoint"

    cluster.service("broken", "192.0.2.999")
    wait_for(lambda: recorded.of("broken", "ServiceSkipped"), timeout=10)
    (_ref, _reason, message, kind), = recorded.of("broken", "ServiceSkipped")
    assert kind == "Warning" and "kube-vip.io/loadbalancerIPs" in message and "192.0.2.999" in message

    cluster.service("moved", "192.0.2.51")
    cluster.endpoints("moved", ["n1"])
    wait_for(lambda: recorded.of("moved", "VipServed"), timeout=10)
    body: Any = {"spec": {"type": "ClusterIP"}}
    cluster.core.patch_namespaced_service("moved", "default", body)
    wait_for(lambda: recorded.of("moved", "VipWithdrawn"), timeout=10)
    assert recorded.of("moved", "VipWithdrawn")[0][2].endswith("no longer a LoadBalancer Service of ours")

    cluster.service("edited", "192.0.2.53")
    cluster.endpoints("edited", ["n1"])
    wait_for(lambda: recorded.of("edited", "VipServed"), timeout=10)
    broken: Any = {"metadata": {"annotations": {"kube-vip.io/loadbalancerIPs": "192.0.2.999"}}}
    cluster.core.patch_namespaced_service("edited", "default", broken)
    wait_for(lambda: recorded.of("edited", "VipWithdrawn"), timeout=10)
    withdrawn = recorded.of("edited", "VipWithdrawn")[0][2]
    assert "kube-vip.io/loadbalancerIPs" in withdrawn and "192.0.2.999" in withdrawn  # the same words as the skip
    assert recorded.of("edited", "ServiceSkipped")

    cluster.service("gone", "192.0.2.52")
    cluster.endpoints("gone", ["n1"])
    wait_for(lambda: recorded.of("gone", "VipServed"), timeout=10)
    cluster.core.delete_namespaced_service("gone", "default")
    wait_for(lambda: all(str(v.address) != "192.0.2.52" for v in addresses.held), timeout=10)
    assert recorded.of("gone", "VipWithdrawn") == []  # an Event on a deleted object helps nobody
