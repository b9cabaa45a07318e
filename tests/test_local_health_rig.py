"""The control-plane VIP follows the nodes' own API servers (`--controlPlaneHealthCheckAddress`), with real managers
in the namespace rig, on the emulator and on a real kube-apiserver: each node checks its "local API server"
(`kubevip_testbed.lab.local_api`: 127.0.0.1:16443 in its namespace, forwarding to the lab's API), which a test
stops and heals one node at a time while the Leases keep working.

- the leader's API server stops: it hands the Lease and the VIP to a healthy node (claimed, then released: never two
  holders), the client follows; healed, it does not take the VIP back, but leads again when it is the healthy one;
- every node's API server fails: nobody yields, the leader keeps the VIP for many lease durations; the first node to
  heal then takes over;
- by BGP (BIRD on the router, emulator only): without election the node whose endpoint stops withdraws its route
  and advertises again healed; with election the route follows the hand-over.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kubevip_testbed import bird as bird_driver
from kubevip_testbed.bird import Bird, BirdPeer
from kubevip_testbed.lab.cluster import API_PORT, LabCluster
from kubevip_testbed.lab.local_api import PORT, LocalApi
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.lab_support import Sampler, settled
from tests.realapi_support import tier_backend
from tests.rig_support import require, require_rig
from tests.test_bgp_controlplane import NODE_AS, ROUTER_AS, VIP, _next_hops

TIMERS = (2.0, 1.5, 0.4)
# a stopped endpoint refuses at once, so a generous timeout costs nothing and keeps a loaded machine's slow answers
# from counting as failures
CHECK = ["--controlPlaneHealthCheckPeriodSeconds", "0.3", "--controlPlaneHealthCheckTimeoutSeconds", "3",
         "--controlPlaneHealthCheckFailureThreshold", "3", "--controlPlaneHealthCheckSuccessThreshold", "2"]
EVENTS = ("localhealth.changed", "election.started_leading", "election.stopped_leading", "election.offer",
          "election.claimed", "election.released", "election.last_resort")

Lab = tuple[LabCluster, dict[str, LocalApi]]


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Three managers checking their own local API endpoint: plain HTTP to the emulator, or HTTPS verified with the
    test CA (the name `kubernetes`, as for a kubeadm API server on 127.0.0.1) through the real API's fault proxy."""
    require_rig()
    backend = tier_backend(request)
    address = ["--controlPlaneHealthCheckAddress", f"http://127.0.0.1:{PORT}/readyz"]
    if backend is not None:
        real = request.getfixturevalue("real_api")
        address = ["--controlPlaneHealthCheckAddress", f"https://127.0.0.1:{PORT}",
                   "--controlPlaneHealthCheckCAPath", str(real.pki.ca_cert)]
    with LabCluster(timers=TIMERS, api=backend, extra_args=address + CHECK) as cluster:
        apis = {node: LocalApi(cluster.rig, node, (cluster.rig.ipv4("router"), API_PORT)).start()
                for node in cluster.nodes}
        try:
            for node in cluster.nodes:
                cluster.start(node)
            yield cluster, apis
        finally:
            for api in apis.values():
                api.stop()
            print(timeline(cluster))  # shown when the test failed


def timeline(lab: LabCluster) -> str:
    """The hand-over's events of every node, in order, for a failure's report."""
    rows = sorted((e.get("mono", 0.0), node, e["event"], e.get("state") or e.get("reason") or e.get("successor")
                   or "") for node in lab.nodes for e in lab.events(node) if e["event"] in EVENTS)
    return "\n".join(f"{mono:.3f} {node} {event} {detail}" for mono, node, event, detail in rows)


BOTH_APIS = pytest.mark.parametrize("lab", ["emulator", "kube-apiserver"], indirect=True)


def health(lab: LabCluster, node: str) -> str:
    """The node's check state as its manager last logged it."""
    states = [e["state"] for e in lab.events(node) if e["event"] == "localhealth.changed"]
    return states[-1] if states else "unknown"


def count(lab: LabCluster, node: str, event: str) -> int:
    return sum(1 for e in lab.events(node) if e["event"] == event)


def all_healthy(lab: LabCluster) -> None:
    wait_for(lambda: all(health(lab, n) == "healthy" for n in lab.nodes), timeout=15)


@BOTH_APIS
def test_a_leader_whose_api_server_stops_hands_the_vip_to_a_healthy_node(lab: Lab) -> None:
    cluster, apis = lab
    with Sampler(cluster) as sampler:
        leader = settled(cluster)
        all_healthy(cluster)
        apis[leader].stop()
        # the holder seen by the wait: a Lease read after it could name another holder (or none)
        successor = wait_for_value(lambda: now if (now := cluster.lease_holder()) != leader else None, timeout=15)
        wait_for(lambda: cluster.holders() == [successor])
        assert health(cluster, leader) == "unhealthy" and health(cluster, successor) == "healthy"
        # each line is logged after its write: the leader may release on the claim, and the other healthy node take
        # the Lease and the VIP, before the claimer has logged its claim or the leader its release
        wait_for(lambda: any(count(cluster, n, "election.claimed") for n in cluster.nodes)
                 and count(cluster, leader, "election.released") > 0, timeout=10)
        # one claim won the race; the release names the claimer, and the claimer or the other healthy node, whichever
        # is faster, takes the released Lease
        claimers = [n for n in cluster.nodes if count(cluster, n, "election.claimed")]
        assert len(claimers) == 1 and count(cluster, claimers[0], "election.claimed") == 1
        released = [e for e in cluster.events(leader) if e["event"] == "election.released"]
        assert [e.get("successor") for e in released] == claimers
        wait_for(lambda: cluster.rig.run("client", ["ping", "-c1", "-W1", cluster.vip], check=False).returncode == 0)
        assert cluster.node_of_mac(cluster.client_mac()) == successor
        third = next(n for n in cluster.nodes if n not in (leader, successor))

        # healed: it does not take the VIP back from a healthy leader ...
        apis[leader].start()
        wait_for(lambda: health(cluster, leader) == "healthy", timeout=15)
        time.sleep(2 * TIMERS[0])
        assert cluster.holders() == [successor] and cluster.lease_holder() == successor
        # ... but it leads again when it is the healthy one
        apis[third].stop()
        wait_for(lambda: health(cluster, third) == "unhealthy", timeout=15)
        apis[successor].stop()
        wait_for(lambda: cluster.lease_holder() == leader, timeout=15)
        wait_for(lambda: cluster.holders() == [leader])
        wait_for(lambda: cluster.rig.run("client", ["ping", "-c1", "-W1", cluster.vip], check=False).returncode == 0
                 and cluster.node_of_mac(cluster.client_mac()) == leader)
        for node in cluster.nodes:  # the managers never restarted
            assert cluster.managers[node].poll() is None
    print(sampler.report())
    assert not sampler.double_holders(), sampler.report()


@BOTH_APIS
def test_when_every_api_server_fails_nobody_yields(lab: Lab) -> None:
    cluster, apis = lab
    leader = settled(cluster)
    all_healthy(cluster)
    with Sampler(cluster) as sampler:
        # the followers' servers fail first and the leader's once they are unhealthy: stopped together, a follower
        # whose check runs later is still healthy when the leader offers, and rightly claims
        for node, api in apis.items():
            if node != leader:
                api.stop()
        wait_for(lambda: all(health(cluster, n) == "unhealthy" for n in cluster.nodes if n != leader), timeout=15)
        apis[leader].stop()
        wait_for(lambda: all(health(cluster, n) == "unhealthy" for n in cluster.nodes), timeout=15)
        observed = time.monotonic()
        while time.monotonic() - observed < 6 * TIMERS[0]:  # many lease durations
            assert cluster.lease_holder() == leader
            assert cluster.holders() == [leader]
            time.sleep(0.25)
        assert cluster.rig.run("client", ["ping", "-c1", "-W1", cluster.vip]).returncode == 0
        for node in cluster.nodes:
            assert count(cluster, node, "election.claimed") == 0
            assert count(cluster, node, "election.released") == 0
        assert [e["event"] for e in cluster.events(leader)].count("controlplane.leading") == 1
        assert not [h for n in cluster.nodes if n != leader for h in sampler.holds(n)]
        # the first node to heal takes over from the sick leader
        healed = next(n for n in cluster.nodes if n != leader)
        apis[healed].start()
        wait_for(lambda: cluster.lease_holder() == healed, timeout=15)
        wait_for(lambda: cluster.holders() == [healed])
        for node in list(cluster.managers):  # SIGTERM with checks failing or in flight: clean, within 2 s
            started = time.monotonic()
            assert cluster.terminate(node) == 0
            assert time.monotonic() - started < 2.0
        assert cluster.holders() == [] and cluster.lease_holder() == ""
    print(sampler.report())
    assert not sampler.double_holders(), sampler.report()


def _bgp_lab(request: pytest.FixtureRequest, election: list[str]) -> Iterator[tuple[LabCluster, Bird,
                                                                                    dict[str, LocalApi]]]:
    require_rig()
    require("BIRD 2", bird_driver.missing())
    address = ["--controlPlaneHealthCheckAddress", f"http://127.0.0.1:{PORT}/readyz"]
    cluster = LabCluster(vip=VIP, timers=TIMERS, extra_args=address + CHECK)
    router = cluster.rig.ipv4("router")
    cluster.mode_args = ["--bgp", *election, "--bgppeers", f"{router}:{ROUTER_AS}", "--localAS", str(NODE_AS),
                         "--bgpHoldTimer", "9"]
    with cluster as lab:
        apis = {node: LocalApi(lab.rig, node, (router, API_PORT)).start() for node in lab.nodes}
        bird = Bird(lab.rig, "router", peers=[BirdPeer(n, lab.rig.ipv4(n), NODE_AS) for n in lab.nodes],
                    asn=ROUTER_AS).start()
        try:
            lab.rig.run("client", ["ip", "route", "replace", f"{VIP}/32", "via", router])
            for node in lab.nodes:
                lab.start(node)
            yield lab, bird, apis
        finally:
            for node in list(lab.managers):
                lab.terminate(node)
            bird.stop()
            for api in apis.values():
                api.stop()


@pytest.fixture
def ecmp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Bird, dict[str, LocalApi]]]:
    yield from _bgp_lab(request, [])


@pytest.fixture
def elected_bgp_lab(request: pytest.FixtureRequest) -> Iterator[tuple[LabCluster, Bird, dict[str, LocalApi]]]:
    yield from _bgp_lab(request, ["--leaderElection"])


def test_bgp_without_election_a_node_whose_api_server_stops_withdraws(
        ecmp_lab: tuple[LabCluster, Bird, dict[str, LocalApi]]) -> None:
    """Every healthy node advertises (ECMP); the check, not the API client's /readyz, decides: the node whose own
    endpoint stops leaves the router's FIB although its Leases and API client still work, and comes back healed."""
    lab, router, apis = ecmp_lab
    everyone = sorted(lab.rig.ipv4(node) for node in lab.nodes)
    wait_for(lambda: _next_hops(router) == everyone, timeout=20)
    sick = lab.nodes[0]
    apis[sick].stop()
    wait_for(lambda: _next_hops(router) == [ip for ip in everyone if ip != lab.rig.ipv4(sick)], timeout=15)
    assert sick not in lab.holders()
    assert lab.rig.run("client", ["ping", "-c1", "-W1", VIP]).returncode == 0
    apis[sick].start()
    wait_for(lambda: _next_hops(router) == everyone, timeout=15)


def test_bgp_with_election_the_route_follows_the_handover(
        elected_bgp_lab: tuple[LabCluster, Bird, dict[str, LocalApi]]) -> None:
    lab, router, apis = elected_bgp_lab

    def route_on_holder() -> bool:
        holder = lab.lease_holder()
        return bool(holder) and _next_hops(router) == [lab.rig.ipv4(holder)]

    def routed_holder() -> str | None:
        holder = lab.lease_holder()
        return holder if holder and _next_hops(router) == [lab.rig.ipv4(holder)] else None

    leader = wait_for_value(routed_holder, timeout=20)  # the holder seen by the wait, not a second read
    all_healthy(lab)
    apis[leader].stop()
    wait_for(lambda: lab.lease_holder() not in ("", leader), timeout=15)
    wait_for(routed_holder, timeout=15)
    assert lab.rig.run("client", ["ping", "-c1", "-W1", VIP]).returncode == 0
