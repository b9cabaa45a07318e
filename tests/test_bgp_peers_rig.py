"""The BGP control plane's peer settings, end to end: real `kube-vip-metal manager` processes (leader election on the
API emulator, ExaBGP as their speaker) against real BIRD 2 routers in the rig, asserted on the routers (BIRD's
protocol state and routes, the router namespace's kernel FIB and TCP counters), never on the managers' own view.

* TCP MD5: the right password peers; a wrong one never does, the manager says which peer and why, and no password
  (neither the right nor the wrong one, in clear or base64) is in anything a manager wrote to stdout or stderr.
* Two peers: two routers on the LAN in namespaces of their own both get the leader's route, and both move on a
  failover.
* Multihop: a BIRD behind the router (its own namespace, on a link of its own: the nodes reach it through the
  router's forwarding only, a TTL of 1 expires at the router) peers and gets the route; a manager whose peer
  entry says single-hop does not reach it.
* `--sourceIP`: the router sees each session from the node's second address, and forwards to it.

The extra routers come from the rig's added hosts (`Rig.add_lan_host`, `Rig.add_routed_host`), checked last.
Each test takes a few seconds (the MD5 mismatch about 13: it waits out several hold times and the speaker's
10 s stuck-session warning).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kubevip_metal.options import OPTIONS
from kubevip_testbed import bird as bird_driver
from kubevip_testbed.bird import Bird, BirdPeer
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.rig import Rig, RigError, netns
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.rig_support import require, require_rig

TIMERS = (2.0, 1.5, 0.4)  # lease, renew deadline, retry
VIP = "203.0.113.10"  # outside the LAN: reachable only through a router's routing table
ROUTE = ipaddress.ip_network(f"{VIP}/32")
ROUTER_AS, ROUTER2_AS, NODE_AS = 65000, 65002, 65001
HOLD = 9
STUCK_WARNING = "bgp.session_not_established"  # the speaker's line for a session that does not come up
DEBUG = ("--log-level", "debug")  # the most a manager ever writes (ExaBGP's own lines included): leak checks use it


def _clean_environment() -> dict[str, str]:
    """The environment without any of the manager's own variables (so only the flags given here count)."""
    names = {name for option in OPTIONS for name in option.env}
    return {key: value for key, value in os.environ.items() if key not in names}


class PeersLab:
    """A three-node LabCluster plus BIRD routers; managers are started here (not by `LabCluster.start`) so each
    node may get flags of its own and so their stdout is kept too, not only their stderr (the JSON log)."""

    def __init__(self, cluster: LabCluster) -> None:
        self.cluster = cluster
        self.rig = cluster.rig
        self.birds: list[Bird] = []

    @property
    def nodes(self) -> list[str]:
        return self.cluster.nodes

    def bird(self, role: str, peers: Sequence[BirdPeer], asn: int = ROUTER_AS, **kw: Any) -> Bird:
        instance = Bird(self.rig, role, peers=peers, asn=asn, **kw)
        self.birds.append(instance)
        return instance.start()

    def stdout_path(self, node: str) -> str:
        return str(self.cluster.workdir / f"{node}.stdout")

    def start(self, node: str, peers: str, *extra: str, hold: int = HOLD) -> None:
        """`kube-vip-metal manager --bgp --leaderElection --bgppeers PEERS ...` on `node`."""
        self.cluster.mode_args = ["--bgp", "--leaderElection", "--bgppeers", peers, "--localAS", str(NODE_AS),
                                  "--bgpHoldTimer", str(hold)]
        argv = [*self.cluster.manager_argv(node), *extra]
        with open(self.stdout_path(node), "a") as out, self.cluster.log_path(node).open("a") as err:
            process = self.rig.spawn(node, argv, stdout=out, stderr=err, env=_clean_environment())
        self.cluster.managers[node] = process

    def start_all(self, peers: str, per_node: Callable[[str], Sequence[str]] = lambda _node: (),
                  hold: int = HOLD) -> None:
        for node in self.nodes:
            self.start(node, peers, *per_node(node), hold=hold)

    def output(self, node: str) -> str:
        """Everything the manager on `node` wrote, stdout and stderr."""
        with open(self.stdout_path(node)) as out:
            stdout = out.read()
        return stdout + self.cluster.log_path(node).read_text()

    def warnings(self, node: str) -> list[dict[str, Any]]:
        return [event for event in self.cluster.events(node) if event.get("event") == STUCK_WARNING]

    def close(self) -> None:
        for node in list(self.cluster.managers):
            try:
                self.cluster.terminate(node)
            except subprocess.TimeoutExpired:
                self.cluster.kill(node)
        for instance in self.birds:
            instance.stop()


@pytest.fixture
def lab() -> Iterator[PeersLab]:
    require_rig()
    require("BIRD 2", bird_driver.missing())
    with LabCluster(vip=VIP, timers=TIMERS) as cluster:
        pieces = PeersLab(cluster)
        try:
            yield pieces
        finally:
            pieces.close()


def _next_hops(router: Bird) -> list[str]:
    return sorted(router.fib(4).get(ROUTE, []))


def _leader_everywhere(lab: PeersLab, routers: Sequence[Bird], next_hop: Callable[[str], str] | None = None,
                       not_node: str | None = None, timeout: float = 20) -> str:
    """Wait until a node holds the Lease and every router's kernel FIB sends the VIP to it alone (`next_hop`:
    the address the route goes to, the node's LAN address unless said); return that node."""
    address = next_hop or lab.rig.ipv4

    def settled() -> str | None:
        holder = lab.cluster.lease_holder()
        return holder if holder and holder != not_node and all(_next_hops(r) == [address(holder)] for r in routers) \
            else None

    return wait_for_value(settled, timeout=timeout, step=0.05)  # the holder seen, not a second read of the Lease


def _only_leader_routes(router: Bird, leader: str, nodes: Sequence[str]) -> None:
    """BIRD's own table: the VIP came from the leader's session, from nobody else's."""
    for node in nodes:
        assert router.routes(node) == ({ROUTE} if node == leader else set()), (node, router.birdc("show", "route"))


def _kernel_counters(lab: PeersLab, role: str, path: str, group: str) -> dict[str, int]:
    """One group of /proc/net/snmp or /proc/net/netstat in `role`'s namespace (those files are per namespace)."""
    lines = [line.split() for line in lab.rig.run(role, ["cat", path]).stdout.splitlines()]
    rows = [words[1:] for words in lines if words and words[0] == f"{group}:"]
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=True)}


def _md5_counters(lab: PeersLab, role: str) -> tuple[int, int]:
    """(segments whose MD5 signature was wrong, segments that lacked one although the peer has a key)."""
    tcp = _kernel_counters(lab, role, "/proc/net/netstat", "TcpExt")
    return tcp["TCPMD5Failure"], tcp["TCPMD5NotFound"]


def _bgp_sessions(lab: PeersLab, role: str) -> set[str]:
    """The remote addresses of the established TCP connections to `role`'s port 179, by the kernel's socket table."""
    out = lab.rig.run(role, ["ss", "-tnH", "state", "established", "( sport = :179 )"]).stdout
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def _assert_never_logged(lab: PeersLab, secrets: Sequence[str]) -> None:
    forms = [form for secret in secrets for form in (secret, base64.b64encode(secret.encode()).decode())]
    for node in lab.nodes:
        text = lab.output(node)
        assert text.strip(), f"{node} wrote nothing: nothing was checked"
        for form in forms:
            assert form not in text, f"{node}'s stdout/stderr holds a password ({form[:2]}...)"


# -- TCP MD5 ------------------------------------------------------------------------------------------------------

RIGHT = "md5:right one,1"  # a ':' and a ',' need the quoted field of --bgppeers
WRONG = "md5:wrong one,2"


def test_md5_password_match_peers_and_the_leader_route_reaches_the_router(lab: PeersLab) -> None:
    """BIRD and the managers hold the same password (with a `:` and a `,`, so in --bgppeers' quoted field): every
    node peers, the leader's route is in the router's FIB and the client reaches the VIP through it. The password
    is in no manager output, and the speaker's work directory (its ExaBGP configuration holds the password) is
    private while the manager runs and gone once it stopped."""
    router_ip = lab.rig.ipv4("router")
    router = lab.bird("router", [BirdPeer(n, lab.rig.ipv4(n), NODE_AS, password=RIGHT) for n in lab.nodes])
    assert f'password "{RIGHT}";' in router.render()  # BIRD keys its listening socket for every node
    lab.start_all(f'{router_ip}:{ROUTER_AS}:"{RIGHT}"', per_node=lambda _node: DEBUG)
    for node in lab.nodes:
        router.wait_established(node, timeout=40)  # managers and ExaBGP starting, busy machine
    leader = _leader_everywhere(lab, [router])
    _only_leader_routes(router, leader, lab.nodes)
    assert _bgp_sessions(lab, "router") == {lab.rig.ipv4(n) for n in lab.nodes}
    # Every segment the router's kernel took was signed with the key it holds: none failed, none lacked one.
    assert _md5_counters(lab, "router") == (0, 0)
    assert lab.rig.run("client", ["ip", "route", "replace", f"{VIP}/32", "via", router_ip]).returncode == 0
    assert lab.rig.run("client", ["ping", "-c1", "-W1", VIP]).returncode == 0
    _assert_never_logged(lab, [RIGHT])
    def workdirs_logged() -> list[Path]:
        return [Path(event["workdir"]) for node in lab.nodes for event in lab.cluster.events(node)
                if event.get("event") == "bgp.speaker_started"]

    # logged once the speaker is spawned, which may be after ExaBGP has already peered
    wait_for(lambda: len(workdirs_logged()) >= len(lab.nodes), timeout=10)
    workdirs = workdirs_logged()
    assert len(workdirs) == len(lab.nodes)
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o700 for path in workdirs)
    for node in lab.nodes:
        assert lab.cluster.terminate(node) == 0
    assert not any(path.exists() for path in workdirs)


def test_md5_password_mismatch_never_peers_says_which_peer_and_leaks_no_password(lab: PeersLab) -> None:
    """BIRD holds the right password, every manager the wrong one: the router's kernel drops their SYNs (the MD5
    failure counter proves they arrive), so no session comes up for several hold times; each manager logs the
    peer's address with an MD5 hint, and neither password is in its output (at debug level)."""
    hold = 3  # the shortest BGP allows, so "several hold times" stays short
    router_ip = lab.rig.ipv4("router")
    router = lab.bird("router", [BirdPeer(n, lab.rig.ipv4(n), NODE_AS, password=RIGHT) for n in lab.nodes],
                      hold_time=hold)
    failures_before = _md5_counters(lab, "router")[0]
    lab.start_all(f'{router_ip}:{ROUTER_AS}:"{WRONG}"', per_node=lambda _node: DEBUG, hold=hold)
    started = time.monotonic()
    while time.monotonic() - started < 4 * hold or not all(lab.warnings(n) for n in lab.nodes):
        silent = [n for n in lab.nodes if not lab.warnings(n)]
        # the warning comes 10 s after each speaker started: 25 s was tight for three managers starting on a busy
        # machine (failure latency only: the loop proves no session all along)
        assert time.monotonic() - started < 45, f"no {STUCK_WARNING} from {silent}"
        states = router.protocols()
        assert not any(states[n].established for n in lab.nodes), states
        assert ROUTE not in router.fib(4)
        time.sleep(0.2)
    assert lab.cluster.lease_holder() in lab.nodes  # a leader was elected: it had a route to announce
    assert _md5_counters(lab, "router")[0] > failures_before  # the SYNs reached the router, signed wrongly
    assert _bgp_sessions(lab, "router") == set()
    for node in lab.nodes:
        warning = lab.warnings(node)[0]
        assert warning["peer"] == router_ip and warning["md5"] is True and "password" in warning["hint"], warning
        assert warning["level"] == "warning"
    _assert_never_logged(lab, [RIGHT, WRONG])


# -- two peers ----------------------------------------------------------------------------------------------------


def test_two_routers_both_get_the_leader_route_and_both_move_on_failover(lab: PeersLab) -> None:
    """A second router on the LAN (namespace `router2`, 198.51.100.2, its own BIRD in another AS, its own FIB)."""
    lab.rig.add_lan_host("router2", 2)
    peers = [BirdPeer(n, lab.rig.ipv4(n), NODE_AS) for n in lab.nodes]
    routers = [lab.bird("router", peers), lab.bird("router2", peers, asn=ROUTER2_AS)]
    lab.start_all(f"{lab.rig.ipv4('router')}:{ROUTER_AS},{lab.rig.ipv4('router2')}:{ROUTER2_AS}")
    for router in routers:
        for node in lab.nodes:
            router.wait_established(node, timeout=40)  # managers and ExaBGP starting, busy machine
    leader = _leader_everywhere(lab, routers)
    for router in routers:
        _only_leader_routes(router, leader, lab.nodes)
        assert _bgp_sessions(lab, router.role) == {lab.rig.ipv4(n) for n in lab.nodes}

    lab.cluster.kill(leader)  # a crash: ExaBGP goes with it, the kernel closes both sessions
    successor = _leader_everywhere(lab, routers, not_node=leader)
    assert successor != leader
    wait_for(lambda: not any(r.protocol(leader).established for r in routers), timeout=15)  # 5 s: tight when busy
    for router in routers:
        _only_leader_routes(router, successor, lab.nodes)


# -- multihop -----------------------------------------------------------------------------------------------------


def test_multihop_peer_two_hops_away_behind_the_router(lab: PeersLab) -> None:
    """BIRD in namespace `far`, behind the router on 192.0.2.0/30: no address on the LAN, reachable from the nodes
    through the router only. `multihop` on both sides: every session comes up and the leader's route is in `far`'s
    table (next hop: the leader) and kernel FIB (via the router, the first hop)."""
    far = lab.rig.add_routed_host("far")
    lan = ipaddress.ip_network("198.51.100.0/24")
    assert not any(ipaddress.ip_address(a) in lan for a in lab.rig.addresses("far"))
    for node in lab.nodes:  # two hops, by the network itself: a TTL of 1 dies at the router, 2 arrives
        one = lab.rig.run(node, ["ping", "-c1", "-W1", "-t", "1", far.ipv4], check=False)
        assert one.returncode != 0 and "Time to live exceeded" in one.stdout, one.stdout
        assert lab.rig.run(node, ["ping", "-c1", "-W1", "-t", "2", far.ipv4], check=False).returncode == 0
    router = lab.bird("far", [BirdPeer(n, lab.rig.ipv4(n), NODE_AS, multihop=True) for n in lab.nodes],
                      static_routes=[("198.51.100.0/24", far.router_ipv4)])
    lab.start_all(f"{far.ipv4}:{ROUTER_AS}::true")
    for node in lab.nodes:
        router.wait_established(node, timeout=40)  # managers and ExaBGP starting, busy machine
        assert "external multihop" in router.birdc("show", "protocols", "all", node)
    leader = _leader_everywhere(lab, [router], next_hop=lambda _node: far.router_ipv4)
    assert router.bgp_next_hops(ROUTE) == {leader: lab.rig.ipv4(leader)}
    _only_leader_routes(router, leader, lab.nodes)


def test_a_single_hop_peer_entry_does_not_reach_a_router_two_hops_away(lab: PeersLab) -> None:
    """The control: the same BIRD behind the router, but the manager's entry leaves multihop off. A single-hop
    eBGP session leaves with a TTL of 1, so its SYNs expire at the router (which says so by ICMP) and the
    session never comes up, while BIRD would take it."""
    far = lab.rig.add_routed_host("far")
    router = lab.bird("far", [BirdPeer(n, lab.rig.ipv4(n), NODE_AS, multihop=True) for n in lab.nodes],
                      static_routes=[("198.51.100.0/24", far.router_ipv4)])
    expired_before = _kernel_counters(lab, "router", "/proc/net/snmp", "Icmp")["OutTimeExcds"]
    lab.start_all(f"{far.ipv4}:{ROUTER_AS}::false")
    wait_for(lambda: lab.cluster.lease_holder() in lab.nodes, timeout=60)  # three managers starting, busy machine
    wait_for(lambda: _kernel_counters(lab, "router", "/proc/net/snmp", "Icmp")["OutTimeExcds"] > expired_before,
             timeout=15, step=0.1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        states = router.protocols()
        assert not any(states[n].established for n in lab.nodes), states
        time.sleep(0.2)
    assert router.routes() == set() and ROUTE not in router.fib(4)


# -- source address -----------------------------------------------------------------------------------------------


def test_source_ip_is_the_address_the_router_sees(lab: PeersLab) -> None:
    """Each node gets a second LAN address (198.51.100.21x, secondary: the kernel's own choice of source stays
    .1x) and `--sourceIP` it; the router knows the nodes by those addresses only, so a session from anything else
    would not come up. It sees each session from the second address and forwards the VIP to the leader's."""
    second = {node: f"198.51.100.{200 + lab.rig.host(node).number}" for node in lab.nodes}
    router_ip = lab.rig.ipv4("router")
    for node, address in second.items():
        lab.rig.run(node, ["ip", "addr", "add", f"{address}/24", "dev", "eth0"])
        kernel_choice = lab.rig.run(node, ["ip", "-o", "route", "get", router_ip]).stdout
        assert f"src {lab.rig.ipv4(node)} " in kernel_choice, kernel_choice
    router = lab.bird("router", [BirdPeer(n, second[n], NODE_AS) for n in lab.nodes])
    lab.start_all(f"{router_ip}:{ROUTER_AS}", per_node=lambda node: ["--sourceIP", second[node]])
    for node in lab.nodes:
        router.wait_established(node, timeout=40)  # managers and ExaBGP starting, busy machine
        assert f"Neighbor address: {second[node]}" in router.birdc("show", "protocols", "all", node)
    assert _bgp_sessions(lab, "router") == set(second.values())
    leader = _leader_everywhere(lab, [router], next_hop=second.__getitem__)
    _only_leader_routes(router, leader, lab.nodes)


# -- the rig's added hosts themselves -----------------------------------------------------------------------------


def test_added_hosts_are_reachable_checked_and_go_with_the_rig() -> None:
    require_rig()
    rig = Rig(nodes=1)
    with rig:
        with pytest.raises(ValueError, match="exists already"):
            rig.add_lan_host("router", 2)
        with pytest.raises(ValueError, match="free one"):
            rig.add_lan_host("router2", 11)  # n1's number
        with pytest.raises(ValueError, match="lowercase"):
            rig.add_routed_host("far-1")  # a '-' would hide the namespace from stale clean-up
        rig.add_lan_host("router2", 2)
        far, far2 = rig.add_routed_host("far"), rig.add_routed_host("fartwo")
        assert (far.ipv4, far.router_ipv4, far2.ipv4, far2.router_ipv4) == ("192.0.2.2", "192.0.2.1",
                                                                            "192.0.2.6", "192.0.2.5")
        assert rig.ipv4("router2") == "198.51.100.2" and rig.mac("router2") == "02:00:00:00:00:02"
        for target in ("198.51.100.2", "2001:db8:100::2", far.ipv4, far.ipv6, far2.ipv4):
            family = "-6" if ":" in target else "-4"
            assert rig.run("n1", ["ping", family, "-c1", "-W1", target], check=False).returncode == 0, target
        assert rig.run("far", ["ping", "-c1", "-W1", far2.ipv4], check=False).returncode == 0  # via the router
        rig.link_down("router2")
        assert rig.run("n1", ["ping", "-c1", "-W1", "198.51.100.2"], check=False).returncode != 0
        added = [rig.ns(role) for role in ("router2", "far", "fartwo")]
        assert set(added) <= set(netns.names())
        sleeper = rig.spawn("far", ["sleep", "60"])
    assert sleeper.poll() is not None
    assert not set(added) & set(netns.names())
    assert rig.roles == ["n1", "client", "router", "sw"]  # forgotten: a later up() builds the planned rig
    with pytest.raises(RigError, match="up"):
        rig.add_routed_host("far")
