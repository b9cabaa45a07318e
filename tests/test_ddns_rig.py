"""`--ddns` with real managers in the namespace rig and Debian's dnsmasq in the router namespace as the DHCP and
DNS server: the leader leases an address for the host name `vip` and dnsmasq answers vip.rig.test with it; a
failover (graceful or a crash) gives the new leader the same address, and the client reaches it at the new
leader's MAC; short T1/T2 renew while leading; dnsmasq stopped mid-lease keeps the VIP until the lease really
ends, and it is leased again when dnsmasq is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubevip_testbed.ddns import DdnsLab
from kubevip_testbed.dns import dnsmasq_missing
from kubevip_testbed.waiting import wait_for
from tests.rig_support import require, require_rig

TIMERS = (2.0, 1.5, 0.4)
INTERVAL = 0.5  # --dnsInterval: how soon a follower learns the name's address (the test waits on events)


def _ping(lab: DdnsLab, address: str) -> bool:
    return lab.rig.run("client", ["ping", "-c1", "-W1", address], check=False).returncode == 0


def _events(lab: DdnsLab, node: str, name: str) -> list[dict[str, Any]]:
    return [e for e in lab.events(node) if e["event"] == name]


def _followed(lab: DdnsLab, address: str) -> None:
    """Every running node has seen the name answer `address` (what a new leader asks its server for)."""
    for node in lab.managers:
        wait_for(lambda: any(e.get("new") == address for e in _events(lab, node, "dns.moved")),  # noqa: B023
                 timeout=10)


def _dump(lab: DdnsLab) -> None:
    for node in lab.nodes:
        print(node, lab.log_path(node).read_text() if lab.log_path(node).exists() else "(no log)")
    if lab.dns is not None and lab.dns.log.exists():
        print("dnsmasq", lab.dns.log.read_text()[-6000:])


def _leased(lab: DdnsLab, timeout: float = 30, after: int = 0) -> tuple[str, str]:
    """The running node that holds a lease (more than `after` ddns.bound events), the Lease and, alone of the
    running nodes, the VIP."""
    result: list[tuple[str, str]] = []

    def found() -> bool:
        for node in lab.nodes:
            bound = _events(lab, node, "ddns.bound")
            if node in lab.managers and len(bound) > (after if node == lab.lease_holder() else 0):
                running = [n for n in lab.holders(bound[-1]["address"]) if n in lab.managers]  # a crash's copy
                if running == [node] and lab.lease_holder() == node:  # stays in its dead namespace
                    result.append((node, str(bound[-1]["address"])))
                    return True
        return False
    try:
        wait_for(found, timeout=timeout)
    except AssertionError:
        _dump(lab)
        raise
    return result[-1]


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[DdnsLab]:
    require_rig()
    require("dnsmasq", dnsmasq_missing())
    kwargs = getattr(request, "param", {})
    with DdnsLab(timers=TIMERS, extra_args=["--dnsInterval", str(INTERVAL)], **kwargs) as cluster:
        for node in cluster.nodes:
            cluster.start(node)
        failed = request.session.testsfailed
        yield cluster
        if request.session.testsfailed > failed:
            _dump(cluster)


def test_the_leader_leases_the_name_and_failovers_keep_the_address(lab: DdnsLab) -> None:
    assert lab.dns is not None
    leader, address = _leased(lab)
    lab.vip = address
    wait_for(lambda: lab.dns is not None and lab.dns.query(lab.name) == [address], timeout=10)  # registered
    wait_for(lambda: _ping(lab, address), timeout=10)
    bound = _events(lab, leader, "ddns.bound")[-1]
    assert bound["host_name"] == "vip" and bound["lease_time"] == 120
    for node in lab.nodes:
        if node != leader:
            assert _events(lab, node, "ddns.bound") == []  # only the leader asks
    # graceful: SIGTERM releases the lease; the new leader asks for the name's address and gets it back
    _followed(lab, address)
    assert lab.terminate(leader) == 0
    assert _events(lab, leader, "ddns.released")
    second, again = _leased(lab)
    assert second != leader and again == address
    wait_for(lambda: _ping(lab, address), timeout=10)
    assert lab.node_of_mac(lab.client_mac()) == second
    wait_for(lambda: lab.dns is not None and lab.dns.query(lab.name) == [address], timeout=10)
    # a crash: no release; the last node gets the same lease (the server still holds it for the client id)
    lab.kill(second)
    third, once_more = _leased(lab, timeout=40)
    assert third not in (leader, second) and once_more == address
    wait_for(lambda: _ping(lab, address) and lab.node_of_mac(lab.client_mac()) == third, timeout=10)


@pytest.mark.parametrize("lab", [{"nodes": 2, "t1": 2, "t2": 4}], indirect=True)
def test_renewals_and_a_stopped_server_keep_the_vip_until_the_lease_ends(lab: DdnsLab) -> None:
    assert lab.dns is not None
    leader, address = _leased(lab)
    lab.vip = address
    wait_for(lambda: len(_events(lab, leader, "ddns.renewed")) >= 2, timeout=30)  # T1 = 2 s: unicast renewals
    renewed = _events(lab, leader, "ddns.renewed")[-1]
    assert renewed["address"] == address
    lab.dns.stop()
    stopped = time.monotonic()
    last_renewal = max(e["mono"] for e in _events(lab, leader, "ddns.bound"))  # the lease as first granted...
    samples: list[tuple[float, list[str]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), lab.holders()))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_for(lambda: _events(lab, leader, "ddns.expired"), timeout=180)  # 120 s lease, renewed before the stop
    except AssertionError:
        _dump(lab)
        raise
    expired_at = time.monotonic()
    wait_for(lambda: lab.holders() == [], timeout=10)  # the lease ended: the VIP goes
    done.set()
    sampler.join()
    held_for = [t - stopped for t, holders in samples if holders == [leader]]
    assert held_for and max(held_for) > 100  # kept through T1, T2 and the retries, until the lease ran out
    assert all(holders == [leader] for t, holders in samples if t < expired_at - 2)  # never lost before
    assert last_renewal is not None
    assert lab.lease_holder() == leader  # still the leader: only the lease ended
    lab.dns.start()  # the server is back: a DISCOVER gets the address again (the client id's old lease)
    wait_for(lambda: len(_events(lab, leader, "ddns.bound")) >= 2, timeout=60)
    assert _events(lab, leader, "ddns.bound")[-1]["address"] == address
    wait_for(lambda: lab.holders() == [leader] and _ping(lab, address), timeout=10)
