"""The control-plane Elastic IP through the real SDK against the spec-validating Metal emulator: one
assignment on the leader, no writes when nothing changes, 429 storms and outages survived, drift repaired."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import pytest

from generic.secret import Secret
from kubevip_metal.metal.client import Device, MetalClient
from kubevip_metal.metal.eip import ElasticIp
from kubevip_metal.metal.retry import MetalApiError
from kubevip_testbed.waiting import wait_for
from tests.metal_support import MetalWorld

EIP = ipaddress.IPv4Address("198.51.100.200")




def writes(metal: MetalWorld) -> int:
    return sum(1 for method, _path, status, _t in metal.emulator.requests() if method in ("POST", "DELETE")
               and status < 400)


def controller(metal: MetalWorld, node: str, *, period: float = 0.3,
               sleep: Callable[[float], None] = time.sleep) -> ElasticIp:
    client = MetalClient(Secret(metal.token), metal.api_url, sleep=sleep)
    eip = ElasticIp(client, metal.project_id, Device(metal.device_ids[node], node), EIP, period=period)
    eip.start()
    return eip


def test_leader_change_leaves_exactly_one_assignment_on_the_new_leader(metal: MetalWorld) -> None:
    n1, n2 = controller(metal, "n1"), controller(metal, "n2")
    try:
        n1.set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]])
        n1.set_leading(False)  # crash or hand-over: the old leader writes nothing
        n2.set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n2"]])
        time.sleep(1.0)
        assert metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n2"]]
    finally:
        n1.stop()
        n2.stop()


def test_regaining_leadership_on_the_same_node_makes_no_write(metal: MetalWorld) -> None:
    n1 = controller(metal, "n1")
    try:
        n1.set_leading(True)
        wait_for(lambda: n1.converged_at is not None)
        before = writes(metal)
        n1.set_leading(False)
        time.sleep(0.5)
        n1.set_leading(True)
        wait_for(lambda: n1.converged_at is not None)
        time.sleep(1.0)  # several reconcile periods
        assert writes(metal) == before
    finally:
        n1.stop()


def test_extra_assignments_are_all_removed(metal: MetalWorld) -> None:
    metal.emulator.assign(str(EIP), metal.device_ids["n2"], exclusive=False)
    metal.emulator.assign(str(EIP), metal.device_ids["n3"], exclusive=False)
    n1 = controller(metal, "n1")
    try:
        n1.set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]])
    finally:
        n1.stop()


def test_a_429_storm_ends_correct_and_waits_honour_retry_after(metal: MetalWorld) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    metal.emulator.set_fault(rate_429=0.5, retry_after=0.3)
    n1 = controller(metal, "n1", sleep=sleep)
    try:
        n1.set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]], timeout=60)
        wait_for(lambda: len(slept) >= 3, timeout=60)  # reconciling through the storm keeps meeting 429s
        assert metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]]
    finally:
        n1.stop()
    assert slept and min(slept) >= 0.3  # every wait after a 429 was at least what the server asked for
    assert any(status == 429 for _m, _p, status, _t in metal.emulator.requests())


def test_api_down_during_a_move_is_retried_until_it_works(metal: MetalWorld) -> None:
    metal.emulator.assign(str(EIP), metal.device_ids["n2"])
    metal.emulator.set_fault(down=True)
    n1 = controller(metal, "n1")
    try:
        n1.set_leading(True)
        time.sleep(2.0)
        assert metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n2"]]
        assert n1.leading  # leadership is not given up because the API is down
        metal.emulator.clear_fault()
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]], timeout=40)
    finally:
        n1.stop()


def test_eip_moved_away_by_hand_is_moved_back_within_one_period(metal: MetalWorld) -> None:
    n1 = controller(metal, "n1", period=0.5)
    try:
        n1.set_leading(True)
        wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]])
        metal.emulator.assign(str(EIP), metal.device_ids["n3"])  # someone moved it in the console
        took = wait_for(lambda: metal.emulator.assignments_of(str(EIP)) == [metal.device_ids["n1"]], timeout=10)
        assert took <= 0.5 + 1.0
    finally:
        n1.stop()


def test_a_follower_never_writes(metal: MetalWorld) -> None:
    metal.emulator.assign(str(EIP), metal.device_ids["n2"])
    n1 = controller(metal, "n1")
    try:
        time.sleep(1.0)
        assert writes(metal) == 0
    finally:
        n1.stop()


def test_an_address_outside_the_project_is_a_clear_error(metal: MetalWorld) -> None:
    client = MetalClient(Secret(metal.token), metal.api_url)
    with pytest.raises(MetalApiError, match=r"198\.51\.100\.201 is not an IP reservation"):
        client.reservation(metal.project_id, ipaddress.IPv4Address("198.51.100.201"))


def test_a_wrong_token_is_not_retried_and_not_shown(metal: MetalWorld) -> None:
    client = MetalClient(Secret("wrong-t0ken"), metal.api_url)
    with pytest.raises(MetalApiError) as info:
        client.reservation(metal.project_id, EIP)
    assert info.value.status == 401 and "t0ken" not in str(info.value)
    assert client.calls == 1
