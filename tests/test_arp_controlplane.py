"""The control-plane VIP over ARP/NDP with real managers in the namespace rig: the VIP is on exactly the leader,
drift is repaired both ways, a leader cut off from the API gives the VIP up before anyone else adds it, and
SIGTERM leaves nothing behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.lab_support import Sampler, settled
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig

TIMERS = (2.0, 1.5, 0.4)
RECONCILE = 1.0


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    """Three managers on the emulator; `@BOTH_APIS` runs a test again on the real kube-apiserver, where each
    manager authenticates with its own token of the `kube-vip` ServiceAccount (the rendered RBAC)."""
    require_rig()
    backend = tier_backend(request)
    with LabCluster(timers=TIMERS, api=backend) as cluster:
        for node in cluster.nodes:
            cluster.start(node)
        yield cluster


BOTH_APIS = pytest.mark.parametrize("lab", ["emulator", "kube-apiserver"], indirect=True)


@BOTH_APIS
def test_vip_on_exactly_the_leader_through_handover_and_crash(lab: LabCluster) -> None:
    with Sampler(lab) as sampler:
        leader = settled(lab)
        assert lab.rig.run("client", ["ping", "-c1", "-W1", lab.vip]).returncode == 0
        assert lab.terminate(leader) == 0  # graceful
        sampler.dead.add(leader)
        second = settled(lab)
        assert second != leader
        lab.kill(second)  # crash: power loss, the address stays on a dead node
        lab.rig.link_down(second)
        sampler.dead.add(second)
        # the holder seen by the wait: a second read of the holders may see another state than the one that passed
        third = wait_for_value(lambda: next((n for n in lab.holders() if n != second), None))
        assert third not in (leader, second)
        wait_for(lambda: lab.lease_holder() == third)
        # the GARP leaves from the announcer's thread after the address is added (a fixed 0.3 s was too short on
        # a busy machine); without one the client's entry would name the dead node's MAC for far longer than 5 s
        wait_for(lambda: lab.rig.run("client", ["ping", "-c1", "-W1", lab.vip], check=False).returncode == 0,
                 timeout=5)
        assert lab.node_of_mac(lab.client_mac()) == third
    print(sampler.report())
    assert sampler.sweeps > 100
    assert not sampler.double_holders(), sampler.report()


@BOTH_APIS
def test_stray_vip_on_a_follower_is_removed_within_one_period(lab: LabCluster) -> None:
    leader = settled(lab)
    follower = next(n for n in lab.nodes if n != leader)
    # a follower still starting would remove it as a crash's leftover (vip.leftover_removed): this is the reconciler
    wait_for(lambda: any(e["event"] == "daemon.started" for e in lab.events(follower)))
    lab.rig.run(follower, ["ip", "addr", "add", f"{lab.vip}/32", "dev", "eth0"])
    took = wait_for(lambda: follower not in lab.holders(), timeout=5)
    assert took <= RECONCILE + 0.5
    assert lab.holders() == [leader]
    # logged after the removal the test just saw: 2 s was tight for a busy machine (failure latency only)
    wait_for(lambda: any(e["event"] == "vip.stray_removed" for e in lab.events(follower)), timeout=10)


def test_deleted_vip_on_the_leader_heals_within_one_period(lab: LabCluster) -> None:
    leader = settled(lab)
    lab.rig.run(leader, ["ip", "addr", "del", f"{lab.vip}/32", "dev", "eth0"])
    took = wait_for(lambda: leader in lab.holders(), timeout=5)
    assert took <= RECONCILE + 0.5
    # logged after the repair the test just saw: 2 s was tight for a busy machine (failure latency only)
    wait_for(lambda: any(e["event"] == "reconcile.repaired" for e in lab.events(leader)), timeout=10)
    assert lab.rig.run("client", ["ping", "-c1", "-W1", lab.vip]).returncode == 0


@BOTH_APIS
def test_leader_cut_from_the_api_drops_the_vip_before_another_node_adds_it(lab: LabCluster) -> None:
    with Sampler(lab) as sampler:
        leader = settled(lab)
        pid = lab.managers[leader].pid
        cut = time.monotonic()
        lab.rig.block(leader, lab.rig.ipv4("router"), 6443)
        # the holder seen by the wait: a Lease read after it could name another holder (or none)
        successor = wait_for_value(lambda: holder if (holder := lab.lease_holder()) != leader else None, timeout=15)
        wait_for(lambda: lab.holders() == [successor])
        wait_for(lambda: any(hold.maybe[1] > cut for hold in sampler.holds(successor)))  # the sampler saw it too
        # from each node's own read windows: the latest the leader may have held, the earliest the successor may
        dropped = next(hold.maybe[1] for hold in sampler.holds(leader) if hold.maybe[1] > cut)
        added = next(hold.maybe[0] for hold in sampler.holds(successor) if hold.maybe[1] > cut)
        assert dropped < added
        assert dropped - cut <= TIMERS[1] + 0.3  # gone by the renew deadline, not when the lease expires
        lab.rig.unblock(leader)
        time.sleep(2 * TIMERS[0])
        assert lab.holders() == [successor]  # rejoined as a follower
        assert lab.managers[leader].pid == pid and lab.managers[leader].poll() is None  # without a restart
    print(sampler.report())
    assert not sampler.double_holders(), sampler.report()
    stops = [e for e in lab.events(leader) if e["event"] == "controlplane.following"]
    starts = [e for e in lab.events(successor) if e["event"] == "controlplane.leading"]
    assert stops and starts and stops[-1]["mono"] < starts[-1]["mono"]


def test_interface_flap_on_the_leader_keeps_the_vip_reachable(lab: LabCluster) -> None:
    leader = settled(lab)
    lab.rig.link_down(leader)
    time.sleep(0.5)  # shorter than the renew deadline: leadership survives
    lab.rig.link_up(leader)
    wait_for(lambda: lab.rig.run("client", ["ping", "-c1", "-W1", lab.vip], check=False).returncode == 0)
    assert lab.holders() == [lab.lease_holder()]
    assert lab.node_of_mac(lab.client_mac()) == lab.lease_holder()


@BOTH_APIS
def test_sigterm_leaves_no_address_and_an_empty_lease_holder(lab: LabCluster) -> None:
    settled(lab)
    for node in lab.managers:  # a follower may still be starting (its handlers not installed yet) once one leads
        wait_for(lambda: any(e["event"] == "daemon.started" for e in lab.events(node)), timeout=20)  # noqa: B023
    for node in list(lab.managers):
        started = time.monotonic()
        assert lab.terminate(node) == 0
        assert time.monotonic() - started < 2.0
    assert lab.holders() == []
    assert lab.lease_holder() == ""


def test_ipv6_vip_is_reached_from_the_client_after_failover() -> None:
    require_rig()
    with LabCluster(timers=TIMERS, vip="2001:db8:100::10") as lab:
        for node in lab.nodes:
            lab.start(node)
        leader = settled(lab)
        assert lab.rig.run("client", ["ping", "-6", "-c1", "-W1", lab.vip]).returncode == 0
        lab.kill(leader)
        lab.rig.link_down(leader)
        # the holder seen by the wait: a second read of the holders may see another state than the one that passed
        successor = wait_for_value(lambda: next((n for n in lab.holders() if n != leader), None))
        wait_for(lambda: lab.rig.run("client", ["ping", "-6", "-c1", "-W1", lab.vip], check=False).returncode == 0,
                 timeout=5)
        assert lab.node_of_mac(lab.client_mac()) == successor


class _NoInterfaceLab(LabCluster):
    """Managers started without --interface: they must find eth0 from the default route."""

    def manager_argv(self, node: str) -> list[str]:
        argv = super().manager_argv(node)
        index = argv.index("--interface")
        return argv[:index] + argv[index + 2:]


def test_interface_comes_from_the_default_route_and_the_vip_is_never_a_source_address() -> None:
    require_rig()
    with _NoInterfaceLab(timers=TIMERS) as lab:
        for node in lab.nodes:
            lab.start(node)
        leader = settled(lab)
        assert lab.vip in lab.rig.addresses(leader, "eth0")
        links = json.loads(lab.rig.run(leader, ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)
        (entry,) = [a for link in links for a in link["addr_info"] if a.get("local") == lab.vip]
        assert entry.get("deprecated") is True  # preferred_lft 0: never chosen as a source address
        assert entry["prefixlen"] == 32
        # the node's own traffic, on and off the subnet, never leaves from the VIP
        for target in (lab.rig.ipv4("router"), "192.0.2.1"):
            route = lab.rig.run(leader, ["ip", "-j", "route", "get", target]).stdout
            assert f'"prefsrc":"{lab.rig.ipv4(leader)}"' in route.replace(" ", ""), route
