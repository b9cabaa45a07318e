"""--enableNodeLabeling: the kube-vip.io/has-ip value's encoding, and the labeller's decisions against the API
emulator (which validates labels as the real API server does): the leader's Node carries the label, a follower's
does not, the new leader removes a crashed leader's stale label, retries survive API failures, a refusal is logged
and never raised, and the daemon wires it to the control plane's claim."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from generic.addresses import Vip
from kubevip_metal.daemon.nodelabels import HAS_IP, NodeLabels
from kubevip_metal.node_requests import label_value
from kubevip_testbed.waiting import wait_for
from tests.kubeapi_support import EmulatedApi, api_error

_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # apimachinery's label value
V4, V6 = ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10")


def _vip(address: Any) -> Vip:
    return Vip(address, 32 if address.version == 4 else 128, "eth0")


def test_ipv4_is_written_as_is() -> None:
    assert label_value([V4]) == "192.0.2.10"


def test_ipv6_is_its_sixteen_bytes_in_hex() -> None:
    assert label_value([V6]) == "20010db8000000000000000000000010"
    assert label_value([ipaddress.ip_address("::")]) == "0" * 32


def test_two_addresses_are_joined_ipv4_first_whatever_the_order() -> None:
    assert label_value([V6, V4]) == "192.0.2.10_20010db8000000000000000000000010"
    assert label_value([V4, V6]) == label_value([V6, V4])
    assert label_value([]) == ""


@pytest.mark.parametrize("addresses", [["255.255.255.255"], ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
                                       ["255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
                                       ["10.0.0.1", "10.0.0.2", "fe80::1", "fe80::2"]])
def test_every_value_is_a_valid_label_value(addresses: list[str]) -> None:
    value = label_value(ipaddress.ip_address(a) for a in addresses)
    assert len(value) <= 63 and _VALUE.match(value), value
    assert value  # what does not fit is left out, never the first address


@pytest.fixture
def api() -> Iterator[EmulatedApi]:
    with EmulatedApi(["n1", "n2", "n3", "admin"]) as emulated:
        core = client.CoreV1Api(emulated.client("admin"))
        for node in ("n1", "n2", "n3"):
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                name=node, labels={"kubernetes.io/hostname": node})))
        yield emulated


def _labels(api: EmulatedApi, node: str) -> dict[str, str]:
    stored = api.kube.get_object("v1/nodes", None, node)
    assert stored is not None
    return dict(stored["metadata"].get("labels") or {})


def _carriers(api: EmulatedApi) -> dict[str, str]:
    return {n: _labels(api, n)[HAS_IP] for n in ("n1", "n2", "n3") if HAS_IP in _labels(api, n)}


@pytest.fixture
def labellers(api: EmulatedApi) -> Iterator[dict[str, NodeLabels]]:
    made = {node: NodeLabels(functools.partial(api.client, node), node, backoff=0.01) for node in ("n1", "n2", "n3")}
    for labeller in made.values():
        labeller.start()
    yield made
    for labeller in made.values():
        labeller.close(timeout=0)


def test_the_emulator_refuses_a_raw_ipv6_label_value_as_the_real_server(api: EmulatedApi) -> None:
    core = client.CoreV1Api(api.client("admin"))
    error = api_error(lambda: core.patch_node("n1", {"metadata": {"labels": {HAS_IP: "2001:db8::10"}}}))
    assert error.status == 422
    assert "a valid label must be an empty string" in (error.body or "")
    core.patch_node("n1", {"metadata": {"labels": {HAS_IP: label_value([V6])}}})  # the encoding passes


def test_leader_carries_the_label_and_a_follower_writes_nothing(api: EmulatedApi,
                                                                labellers: dict[str, NodeLabels]) -> None:
    api.kube.reset_request_counts()
    labellers["n1"].claimed(True, [_vip(V4)])
    labellers["n2"].claimed(False, [_vip(V4)])
    wait_for(lambda: labellers["n1"].idle() and labellers["n2"].idle())
    assert _carriers(api) == {"n1": "192.0.2.10"}
    assert _labels(api, "n1")["kubernetes.io/hostname"] == "n1"  # a merge patch: the other labels stay
    assert api.kube.request_counts().get("n2", 0) == 0  # never led: nothing to remove


def test_step_down_removes_it_and_a_new_leader_takes_it(api: EmulatedApi, labellers: dict[str, NodeLabels]) -> None:
    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"})
    labellers["n1"].claimed(False, [_vip(V4)])
    labellers["n2"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n2": "192.0.2.10"})


def test_new_leader_removes_a_crashed_leaders_stale_label_but_not_another_vips(
        api: EmulatedApi, labellers: dict[str, NodeLabels]) -> None:
    core = client.CoreV1Api(api.client("admin"))
    core.patch_node("n1", {"metadata": {"labels": {HAS_IP: "192.0.2.10"}}})  # n1 crashed holding it
    core.patch_node("n3", {"metadata": {"labels": {HAS_IP: "203.0.113.7"}}})  # another VIP's: not ours to touch
    labellers["n2"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n2": "192.0.2.10", "n3": "203.0.113.7"})
    assert labellers["n2"].idle()


def test_dual_stack_value_and_retarget(api: EmulatedApi, labellers: dict[str, NodeLabels]) -> None:
    labellers["n1"].claimed(True, [_vip(V4), _vip(V6)])
    wait_for(lambda: _carriers(api) == {"n1": label_value([V4, V6])})
    other = ipaddress.ip_address("192.0.2.20")
    labellers["n1"].claimed(True, [_vip(other)])  # a DNS --address moved
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.20"})
    labellers["n1"].claimed(True, [])  # --ddns before its lease: no VIP held, no label
    wait_for(lambda: _carriers(api) == {})


def test_transient_failures_are_retried_until_the_label_is_there(api: EmulatedApi,
                                                                 labellers: dict[str, NodeLabels]) -> None:
    api.kube.set_fault("n1", fail_next=3, fail_status=503)
    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"}, timeout=10)


def test_a_node_not_registered_yet_is_labelled_once_it_is(api: EmulatedApi) -> None:
    labeller = NodeLabels(lambda: api.client("n1"), "n4", backoff=0.01)
    labeller.start()
    try:
        labeller.claimed(True, [_vip(V4)])
        wait_for(lambda: labeller.writes == 0 and not labeller.idle())
        client.CoreV1Api(api.client("admin")).create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n4")))
        wait_for(lambda: HAS_IP in _labels(api, "n4"), timeout=15)
    finally:
        labeller.close(timeout=0)


def test_a_refusal_is_logged_once_and_never_raised(api: EmulatedApi, labellers: dict[str, NodeLabels],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    api.kube.forbid("n1")
    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(labellers["n1"].idle)
    assert _carriers(api) == {}
    refused = [r for r in caplog.records if r.getMessage().startswith("nodelabel.refused")]
    assert len(refused) == 1 and refused[0].name == "kubevip_metal.nodelabels"
    api.kube.allow("n1")
    labellers["n1"].claimed(False, [_vip(V4)])  # the next wish is written again
    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"})


def test_no_api_client_yet_is_waited_for(api: EmulatedApi) -> None:
    made: list[Any] = []
    labeller = NodeLabels(lambda: made[0] if made else None, "n1", backoff=0.01)
    labeller.start()
    try:
        labeller.claimed(True, [_vip(V4)])
        made.append(api.client("n1"))
        wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"}, timeout=10)
    finally:
        labeller.close(timeout=0)


def test_close_waits_for_the_removal_within_its_timeout(api: EmulatedApi, labellers: dict[str, NodeLabels]) -> None:
    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"})
    labellers["n1"].claimed(False, [])
    labellers["n1"].close(timeout=5)
    assert _carriers(api) == {}


def test_close_gives_up_on_an_unreachable_api_in_time(api: EmulatedApi, labellers: dict[str, NodeLabels]) -> None:
    import time

    labellers["n1"].claimed(True, [_vip(V4)])
    wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10"})
    api.kube.set_fault("n1", outage="refuse")
    labellers["n1"].claimed(False, [])
    began = time.monotonic()
    labellers["n1"].close(timeout=0.3)
    assert time.monotonic() - began < 1.0  # what is left of SIGTERM's 2 s is never spent here
    assert _carriers(api) == {"n1": "192.0.2.10"}  # left for the next leader's clean-up


def test_without_election_no_node_removes_anothers(api: EmulatedApi) -> None:
    core = client.CoreV1Api(api.client("admin"))
    core.patch_node("n1", {"metadata": {"labels": {HAS_IP: "192.0.2.10"}}})  # n1 serves too (BGP, no election)
    labeller = NodeLabels(lambda: api.client("n2"), "n2", clean_others=False, backoff=0.01)
    labeller.start()
    try:
        labeller.claimed(True, [_vip(V4)])
        wait_for(labeller.idle)
        wait_for(lambda: _carriers(api) == {"n1": "192.0.2.10", "n2": "192.0.2.10"})
    finally:
        labeller.close(timeout=0)
