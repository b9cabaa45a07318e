"""`--address NAME` with real managers in the namespace rig, the name served by dnsmasq in the router namespace
(each node resolves through it by its own resolv.conf): the record changes and the VIP moves on the leader, the
client reaches the new address at the leader's MAC, the old one is gone from every node; with dnsmasq stopped the
VIP stays where it is and the managers say so; a new leader takes the name's current address."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from kubevip_testbed.dns import DnsLab, dnsmasq_missing
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.lab_support import settled as lab_settled
from tests.realapi_support import tier_backend
from tests.rig_support import require, require_rig

TIMERS = (2.0, 1.5, 0.4)
INTERVAL = 0.5  # --dnsInterval: the test waits on events, never on this


def _ping(lab: DnsLab, address: str) -> bool:
    return lab.rig.run("client", ["ping", "-c1", "-W1", address], check=False).returncode == 0


def settled(lab: DnsLab) -> str:
    """lab_support.settled, and every started node has looked the name up (a leader can be elected before the
    last node's first lookup, which would then see a change made now as its first answer and never move);
    printing the managers' logs when it times out (pytest shows a failed test's output)."""
    try:
        leader = lab_settled(lab)
        for node in lab.managers:
            wait_for(lambda: any(e["event"] == "dns.resolved" for e in lab.events(node)), timeout=10)  # noqa: B023
        return leader
    except AssertionError:
        for node in lab.nodes:
            print(node, lab.log_path(node).read_text() if lab.log_path(node).exists() else "(no log)")
        raise


def _moved(lab: DnsLab, node: str) -> bool:
    return any(e["event"] == "dns.moved" for e in lab.events(node))


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[DnsLab]:
    require_rig()
    require("dnsmasq", dnsmasq_missing())
    backend = tier_backend(request)
    with DnsLab(timers=TIMERS, api=backend, extra_args=["--dnsInterval", str(INTERVAL)]) as cluster:
        for node in cluster.nodes:
            cluster.start(node)
        yield cluster


@pytest.mark.parametrize("lab", ["emulator", "kube-apiserver"], indirect=True)
def test_a_changed_record_moves_the_vip_on_the_leader_and_the_client_follows(lab: DnsLab) -> None:
    old = lab.vip
    leader = settled(lab)
    assert _ping(lab, old)
    lab.move("198.51.100.20")
    wait_for(lambda: lab.holders() == [leader], timeout=10)  # the new address, on the same node
    assert lab.holders(old) == []  # the old one is gone from every node
    wait_for(lambda: _ping(lab, lab.vip), timeout=5)
    assert lab.node_of_mac(lab.client_mac()) == leader  # the client's ARP entry: the leader's MAC
    assert not _ping(lab, old)
    # dns.moved is logged once the claim and its announcement are done: the kernel answered the client first
    wait_for(lambda: _moved(lab, leader), timeout=10)
    moved = [e for e in lab.events(leader) if e["event"] == "dns.moved"]
    assert [(e["old"], e["new"]) for e in moved] == [(old, "198.51.100.20")]
    for node in lab.nodes:  # every node followed the name; only the leader's claim is active
        wait_for(lambda: _moved(lab, node), timeout=10)  # noqa: B023 (called at once, in this iteration)


def test_a_dead_dns_server_keeps_the_vip_and_is_said(lab: DnsLab) -> None:
    assert lab.dns is not None
    leader = settled(lab)
    lab.dns.stop()
    wait_for(lambda: any(e["event"] == "dns.lookup_failed" for e in lab.events(leader)), timeout=15)
    failed = next(e for e in lab.events(leader) if e["event"] == "dns.lookup_failed")
    assert failed["kept"] == lab.vip and failed["level"] == "warning"
    assert lab.holders() == [leader] and _ping(lab, lab.vip)
    time.sleep(3 * INTERVAL)  # failures go on: one warning, not one per lookup
    assert sum(e["event"] == "dns.lookup_failed" for e in lab.events(leader)) == 1
    lab.dns.records[lab.name] = ("198.51.100.21",)
    lab.dns.restart()
    lab.vip = "198.51.100.21"
    wait_for(lambda: lab.holders() == [leader], timeout=10)
    assert any(e["event"] == "dns.lookup_recovered" for e in lab.events(leader))


def test_a_new_leader_takes_the_names_current_address(lab: DnsLab) -> None:
    old = lab.vip
    leader = settled(lab)
    lab.move("198.51.100.22")
    wait_for(lambda: lab.holders() == [leader], timeout=10)
    for node in lab.nodes:  # every follower has the new answer before the hand-over
        wait_for(lambda: _moved(lab, node), timeout=10)  # noqa: B023 (called at once, in this iteration)
    assert lab.terminate(leader) == 0
    # one read per look: the old leader may still hold the address at one read and none at the next
    successor = wait_for_value(lambda: now[0] if len(now := lab.holders()) == 1 and now != [leader] else None,
                               timeout=10)  # the holder the wait saw: a second read could see none and raise
    assert lab.holders(old) == []
    assert not any(e["event"] == "vip.added" and e["vip"].startswith(old + "/")
                   for e in lab.events(successor))  # never the stale address, not even briefly
    wait_for(lambda: _ping(lab, lab.vip), timeout=5)
    assert lab.node_of_mac(lab.client_mac()) == successor


def test_by_bgp_a_changed_record_moves_the_route_at_the_router() -> None:
    """BGP mode: the leader withdraws the old host route and announces the new one; BIRD's kernel FIB and the
    client's traffic (routed through the router) follow."""
    import ipaddress

    from kubevip_testbed import bird as bird_driver
    from kubevip_testbed.bird import Bird, BirdPeer

    require_rig()
    require("dnsmasq", dnsmasq_missing())
    require("BIRD 2", bird_driver.missing())
    old, new = "203.0.113.10", "203.0.113.20"  # outside the LAN: reachable only through the router's routes
    cluster = DnsLab(first=old, timers=TIMERS, extra_args=["--dnsInterval", str(INTERVAL)])
    router = cluster.rig.ipv4("router")
    cluster.mode_args = ["--bgp", "--leaderElection", "--bgppeers", f"{router}:65000", "--localAS", "65001",
                         "--bgpHoldTimer", "9"]
    with cluster as lab:
        bird = Bird(lab.rig, "router", peers=[BirdPeer(n, lab.rig.ipv4(n), 65001) for n in lab.nodes],
                    asn=65000).start()
        try:
            lab.rig.run("client", ["ip", "route", "replace", "203.0.113.0/24", "via", router])
            for node in lab.nodes:
                lab.start(node)

            def hops(address: str) -> list[str]:
                return sorted(bird.fib(4).get(ipaddress.ip_network(f"{address}/32"), []))

            # the holder the wait saw: a second read of the Lease could name another holder or none
            leader = wait_for_value(lambda: holder if (holder := lab.lease_holder())
                                    and hops(old) == [lab.rig.ipv4(holder)] else None, timeout=30)
            assert _ping(lab, old)
            lab.move(new)
            wait_for(lambda: hops(new) == [lab.rig.ipv4(leader)] and hops(old) == [], timeout=15)
            assert lab.holders() == [leader] and lab.holders(old) == []
            wait_for(lambda: _ping(lab, new), timeout=5)
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            bird.stop()


def test_dual_moves_the_ipv6_address_alone_and_the_client_reaches_it_by_ndp() -> None:
    """`--dnsMode dual`: one VIP per family; the AAAA record changes, the IPv6 VIP moves (unsolicited NA), the
    IPv4 one stays untouched."""
    require_rig()
    require("dnsmasq", dnsmasq_missing())
    v4, v6, v6_new = "198.51.100.10", "2001:db8:100::10", "2001:db8:100::20"
    with DnsLab(first=v4, also=[v6], timers=TIMERS, extra_args=["--dnsInterval", str(INTERVAL),
                                                                  "--dnsMode", "dual"]) as lab:
        assert lab.dns is not None
        for node in lab.nodes:
            lab.start(node)
        leader = settled(lab)
        wait_for(lambda: lab.holders(v6) == [leader], timeout=10)
        lab.dns.set(lab.name, v4, v6_new)
        wait_for(lambda: lab.holders(v6_new) == [leader] and lab.holders(v6) == [], timeout=10)
        assert lab.holders(v4) == [leader]
        wait_for(lambda: lab.rig.run("client", ["ping", "-6", "-c1", "-W1", v6_new], check=False).returncode == 0,
                 timeout=5)
        # the kernel answers for the new address as soon as it is added: the move's own log line may come later
        with contextlib.suppress(AssertionError):
            wait_for(lambda: _moved(lab, leader), timeout=5)
        story = [e for e in lab.events(leader) if e["event"].startswith(("dns.", "leader", "vip."))]
        moved = [e for e in story if e["event"] == "dns.moved"]
        assert [(e["old"], e["new"]) for e in moved] == [(f"{v4},{v6}", f"{v4},{v6_new}")], \
            "\n".join(" ".join(f"{k}={v}" for k, v in e.items() if k not in ("ts", "level", "logger")) for e in story)
        assert not any(e["event"] == "vip.withdrawn" and e["vip"].startswith(v4 + "/") for e in lab.events(leader))
