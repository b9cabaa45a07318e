"""BGP settings discovered where they live, with real managers and a real BIRD 2 router in the rig.

Two routers play Equinix Metal's two BGP peers: `router` holds 169.254.255.1 and `router2` (another host on the
LAN) 169.254.255.2 on their loopbacks, each with its own BIRD, AS and password; the nodes reach them through a
static route, as Metal's nodes do through their gateway. (A BIRD per router address, as Metal's routers are
separate boxes: BIRD 2.0.12 matches an incoming session by the remote address only, so one BIRD cannot hold two
sessions with the same node, and Linux keys TCP MD5 by the remote address only.)

- From node annotations (`--annotations PREFIX`, written CCM-style on the Node through the API, on the emulator
  and on the real kube-apiserver with the rendered RBAC): a node without them waits and says what is missing;
  two peers with different ASNs and passwords both come up; a password rotated in the annotations and at the
  router brings that session back without a restart while the other never drops; a peer added by annotation
  comes up with no other session dropping.
- From the Metal API (`--metal --bgp`, the emulator holding the project's BGP config): every node peers with both
  neighbours, from its `customer_ip`, with the project's password, and the leader's route is at both.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator, Sequence

import pytest

from kubevip_testbed import bird as bird_driver
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.metal_routers import (
    NODE_AS,
    MetalPeer,
    Routers,
    all_established,
    ccm_annotations,
    flapped,
    give_routers_the_peer_addresses,
    node_address,
    protocol,
    sessions,
)
from kubevip_testbed.nodes import replace_node_annotations
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.realapi_support import tier_backend
from tests.rig_support import require, require_rig

TIMERS = (2.0, 1.5, 0.4)
VIP = "203.0.113.10"
ROUTE = ipaddress.ip_network(f"{VIP}/32")
PREFIX = "bgp.example.net"  # a CCM fork's own prefix: the contract is the same under any prefix


def _leader_at_every_peer(lab: LabCluster, routers: Routers, peers: Sequence[MetalPeer]) -> str:
    """The leader's route reached each peer through its session, and the router's FIB forwards to the leader."""
    def settled() -> str | None:
        holder = lab.lease_holder()
        if not holder or sorted(routers.birds["router"].fib(4).get(ROUTE, [])) != [lab.rig.ipv4(holder)]:
            return None
        return holder if all(ROUTE in routers.of(peer).routes(protocol(holder, peer)) for peer in peers) else None

    return wait_for_value(settled, timeout=20)  # the holder seen, not a second read of the Lease


def _no_secret_in_logs(lab: LabCluster, secrets: Sequence[str]) -> None:
    for node in lab.nodes:
        text = lab.log_path(node).read_text()
        for secret in secrets:
            assert secret not in text, f"{node}'s log holds a password"
            assert base64.b64encode(secret.encode()).decode() not in text, f"{node}'s log holds a base64 password"


@pytest.fixture(params=["emulator", "kube-apiserver"])
def annotated_lab(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    require_rig()
    require("BIRD 2", bird_driver.missing())
    backend = tier_backend(request)
    cluster = LabCluster(vip=VIP, timers=TIMERS, api=backend,
                         mode_args=["--bgp", "--leaderElection", "--annotations", PREFIX, "--bgpHoldTimer", "9"])
    with cluster as lab:
        lab.rig.run("client", ["ip", "route", "replace", f"{VIP}/32", "via", lab.rig.ipv4("router")])
        try:
            yield lab
        finally:
            for node in list(lab.managers):
                lab.terminate(node)


def test_annotations_give_each_peer_its_own_as_and_password_and_follow_changes_live(
        annotated_lab: LabCluster) -> None:
    lab = annotated_lab
    lab.rig.add_lan_host("router2", 2)
    alpha = MetalPeer(1, "169.254.255.1", 65530, "alpha-Pass1")
    beta = MetalPeer(2, "169.254.255.2", 65531, "beta-Pass2", role="router2")
    lab.rig.add_lan_host("router3", 3)
    gamma = MetalPeer(3, "169.254.255.3", 65532, None, role="router3")
    peers = [alpha, beta]
    give_routers_the_peer_addresses(lab, [*peers, gamma])
    router = Routers(lab, [*peers, gamma])
    router.reconfigure(peers)  # router3 has no session yet: the peer is added later
    try:
        with lab.api.admin_client() as api:
            late = lab.nodes[0]
            for node in lab.nodes[1:]:
                replace_node_annotations(api, node, PREFIX, ccm_annotations(PREFIX, peers, lab.rig.ipv4(node)))
            replace_node_annotations(api, late, PREFIX, {})  # the CCM has not annotated this one yet
            for node in lab.nodes:
                lab.start(node)
            wait_for(lambda: "waiting for the BGP annotations" in lab.log_path(late).read_text(), timeout=20)
            assert f"{PREFIX}/bgp-peers-N-" in lab.log_path(late).read_text()  # it says what is missing
            assert lab.managers[late].poll() is None  # waiting, not crashed
            replace_node_annotations(api, late, PREFIX, ccm_annotations(PREFIX, peers, lab.rig.ipv4(late)))
            all_established(router, lab, peers, timeout=40)  # the late node retries with backoff (up to 8 s)
            _leader_at_every_peer(lab, router, peers)
            pids = {node: process.pid for node, process in lab.managers.items()}

            # a password rotated at the router and in the annotations: that session comes back, the other stays
            before = sessions(router, lab, [alpha])
            old_beta = sessions(router, lab, [beta])
            rotated = [alpha, MetalPeer(2, beta.address, beta.asn, "gamma-Pass3", role="router2")]
            router.reconfigure(rotated)
            for node in lab.nodes:
                replace_node_annotations(api, node, PREFIX, ccm_annotations(PREFIX, rotated, lab.rig.ipv4(node)))
            # BIRD drops the old sessions (a fixed 1 s was a guess: the wait below could pass on an old session,
            # which then flapped during the next step's no-drop check)
            wait_for(lambda: flapped(old_beta, sessions(router, lab, [beta])) == sorted(old_beta), timeout=20)
            all_established(router, lab, rotated)
            dropped = flapped(before, sessions(router, lab, [alpha]))
            assert not dropped, f"a session whose settings did not change dropped: {dropped}"

            # a peer added by annotation: a new session, no other drops
            before = sessions(router, lab, rotated)
            added = [*rotated, gamma]
            router.reconfigure(added)
            for node in lab.nodes:
                replace_node_annotations(api, node, PREFIX, ccm_annotations(PREFIX, added, lab.rig.ipv4(node)))
            all_established(router, lab, added)
            assert not flapped(before, sessions(router, lab, rotated))
            leader = _leader_at_every_peer(lab, router, added)
            assert {node: process.pid for node, process in lab.managers.items()} == pids  # never restarted
            assert all(process.poll() is None for process in lab.managers.values())
            assert lab.rig.run("client", ["ping", "-c1", "-W1", VIP]).returncode == 0
            assert leader in lab.nodes
    finally:
        router.stop()
    _no_secret_in_logs(lab, ["alpha-Pass1", "beta-Pass2", "gamma-Pass3"])


def _metal_peers(md5: str | None) -> list[MetalPeer]:
    """Metal's two routers, each an IPv4 and an IPv6 peer (the emulator's neighbours, as Metal reported them)."""
    return [MetalPeer(1, "169.254.255.1", 65530, md5), MetalPeer(2, "169.254.255.2", 65530, md5, role="router2"),
            MetalPeer(3, "fc00::e", 65530, md5), MetalPeer(4, "fc00::f", 65530, md5, role="router2")]


@pytest.fixture
def metal_bgp_lab() -> Iterator[LabCluster]:
    require_rig()
    require("BIRD 2", bird_driver.missing())
    cluster = LabCluster(vip=VIP, timers=TIMERS, metal=True,
                         mode_args=["--bgp", "--leaderElection", "--bgpHoldTimer", "9"])
    with cluster as lab:
        lab.rig.run("client", ["ip", "route", "replace", f"{VIP}/32", "via", lab.rig.ipv4("router")])
        try:
            yield lab
        finally:
            for node in list(lab.managers):
                lab.terminate(node)


def test_metal_api_two_neighbours_two_families_four_sessions_from_the_customer_ip(metal_bgp_lab: LabCluster) -> None:
    """The IPv4 session is created by the daemon (once per device); an IPv6 one made out of band (the CCM, a
    person) is peered with too: each node has four sessions, each from its own address of the family."""
    lab = metal_bgp_lab
    md5 = "metal-Md5-pass"
    peers = _metal_peers(md5)
    lab.enable_metal_bgp(asn=NODE_AS, md5=md5)
    for device in lab.metal_devices.values():
        lab.metal_api.emulator.add_bgp_session(device, "ipv6")
    lab.rig.add_lan_host("router2", 2)
    give_routers_the_peer_addresses(lab, peers)
    routers = Routers(lab, peers, multihop=True)
    try:
        for node in lab.nodes:
            lab.start(node)
        all_established(routers, lab, peers, timeout=30)
        _leader_at_every_peer(lab, routers, [p for p in peers if ":" not in p.address])  # the VIP is IPv4
        sessions = lab.metal_api.emulator.request_counts()
        assert sessions.get("createBgpSession", 0) == len(lab.nodes)  # one IPv4 session per device, created once
        for peer in peers:
            seen = routers.of(peer).birdc("show", "protocols", "all", protocol(lab.nodes[0], peer))
            assert f"Neighbor address: {node_address(lab, lab.nodes[0], peer)}" in seen  # from its customer_ip
        assert lab.rig.run("client", ["ping", "-c1", "-W1", VIP]).returncode == 0
    finally:
        routers.stop()
    _no_secret_in_logs(lab, [md5])



def test_metal_bgp_not_enabled_is_one_clear_line_and_exit_1(metal_bgp_lab: LabCluster) -> None:
    lab = metal_bgp_lab
    node = lab.nodes[0]
    code = lab.start(node).wait(timeout=30)
    del lab.managers[node]
    text = lab.log_path(node).read_text()
    assert code == 1, text
    failed = [line for line in text.splitlines() if '"manager.failed"' in line]
    assert len(failed) == 1 and "BGP is not enabled on Metal project" in failed[0]
    assert "metal project bgp-enable" in failed[0]
    assert "metal-token" not in failed[0]
