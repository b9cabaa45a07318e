"""ElasticIpMoved on the control-plane Lease when the leader takes the Elastic IP (through the real SDK against the
Metal emulator), naming the device it was removed from; nothing while the assignment is already here."""

from __future__ import annotations

import ipaddress

from generic.secret import Secret
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import build_config
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.events import ObjectRef
from kubevip_metal.metal.announcer import ElasticIpAnnouncer
from kubevip_metal.metal.client import Device, MetalClient
from kubevip_metal.metal.eip import ElasticIp
from kubevip_testbed.waiting import wait_for
from tests.metal_support import MetalWorld

EIP = ipaddress.IPv4Address("198.51.100.200")


class ListRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[ObjectRef, str, str, str]] = []

    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = "Normal") -> None:
        self.seen.append((ref, reason, message, kind))


def _hooks(node: str) -> tuple[DaemonEvents, ListRecorder]:
    command, given = parse_command_line(["manager", "--controlplane", "--metal", "--address", str(EIP),
                                         "--nodeName", node, "--metalKey", "x",
                                         "--metalProjectID", "00000000-0000-4000-8000-000000000001"])
    assert command is not None
    recorded = ListRecorder()
    return DaemonEvents(build_config(given, command), recorded), recorded


def test_taking_the_elastic_ip_is_an_event_on_the_lease(metal: MetalWorld) -> None:
    eips = {}
    recorders = {}
    for node in ("n1", "n2"):
        client = MetalClient(Secret(metal.token), metal.api_url)
        eips[node] = ElasticIp(client, metal.project_id, Device(metal.device_ids[node], node), EIP, period=0.3)
        hooks, recorders[node] = _hooks(node)
        hooks.attach([ElasticIpAnnouncer([eips[node]])])  # as the daemon hooks the mode's announcers
        eips[node].start()
    try:
        eips["n1"].set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]])
        wait_for(lambda: eips["n1"].converged_at is not None)
        eips["n1"].set_leading(False)
        eips["n2"].set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n2"]])
        wait_for(lambda: eips["n2"].converged_at is not None)
        (first,) = recorders["n1"].seen
        (second,) = recorders["n2"].seen
        for ref, reason, _message, kind in (first, second):
            assert (ref.kind, ref.namespace, ref.name, reason, kind) == (
                "Lease", "kube-system", "plndr-cp-lock", "ElasticIpMoved", "Normal")
        assert second[2] == (f"Elastic IP {EIP} assigned to device {metal.device_ids['n2']} (n2), removed from "
                             f"{metal.device_ids['n1']}")
    finally:
        for eip in eips.values():
            eip.stop()
