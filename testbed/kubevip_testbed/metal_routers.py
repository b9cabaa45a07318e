"""Equinix Metal's BGP routers played in the rig, for tests, the lab and benchmarks.

On Metal a node peers with two routers, 169.254.255.1 and .2 (and fc00::e / ::f for IPv6), two hops away through
its gateway, each in AS 65530 with the project's MD5 password. Here each router address lives on the loopback of
a rig host of its own (`router`, or `router2`, `router3` added to the LAN with `Rig.add_lan_host`), each with its
own BIRD, and every node gets a static route to it, as Metal's users add one through the private gateway. One BIRD
per address, because BIRD 2.0.12 matches an incoming session by the remote address only (one BIRD cannot hold two
sessions with the same node) and Linux keys TCP MD5 by the remote address only.

`ccm_annotations` writes what the Equinix Metal CCM (v3.3+) puts on a Node for those peers.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubevip_testbed.bird import Bird, BirdPeer, same_since
from kubevip_testbed.lab.cluster import LabCluster

NODE_AS = 65001  # the nodes' AS in the rig (Metal's customer_as)
METAL_AS = 65530  # Metal's routers


@dataclass(frozen=True)
class MetalPeer:
    """One of the router's BGP speakers, as Metal's: its address on the router's loopback, its AS, its password."""

    index: int
    address: str
    asn: int
    password: str | None
    role: str = "router"  # the rig host that holds it


def ccm_annotations(prefix: str, peers: Sequence[MetalPeer], src_ip: str, node_asn: int = NODE_AS) -> dict[str, str]:
    """What the Equinix Metal CCM (v3.3+) writes: one index per peer, the password base64-encoded."""
    out: dict[str, str] = {}
    for n, peer in enumerate(peers):
        password = base64.b64encode(peer.password.encode()).decode() if peer.password else ""
        out |= {f"{prefix}/bgp-peers-{n}-node-asn": str(node_asn), f"{prefix}/bgp-peers-{n}-peer-asn": str(peer.asn),
                f"{prefix}/bgp-peers-{n}-peer-ip": peer.address, f"{prefix}/bgp-peers-{n}-src-ip": src_ip,
                f"{prefix}/bgp-peers-{n}-bgp-pass": password}
    return out


def protocol(node: str, peer: MetalPeer) -> str:
    return f"{node}_p{peer.index}"


def bird_peers(lab: LabCluster, peers: Sequence[MetalPeer], role: str, multihop: bool = False) -> list[BirdPeer]:
    """`role`'s BIRD protocols: one per node and peer that `role` holds."""
    return [BirdPeer(protocol(node, peer), node_address(lab, node, peer), NODE_AS, peer.password,
                     multihop=multihop, local=peer.address, local_asn=peer.asn)
            for node in lab.nodes for peer in peers if peer.role == role]


def node_address(lab: LabCluster, node: str, peer: MetalPeer) -> str:
    return lab.rig.ipv6(node) if ipaddress.ip_address(peer.address).version == 6 else lab.rig.ipv4(node)


def give_routers_the_peer_addresses(lab: LabCluster, peers: Sequence[MetalPeer]) -> None:
    for peer in peers:
        lab.rig.run(peer.role, ["ip", "addr", "replace", peer.address, "dev", "lo"])
        v6 = ipaddress.ip_address(peer.address).version == 6
        gateway = lab.rig.ipv6(peer.role) if v6 else lab.rig.ipv4(peer.role)
        for node in lab.nodes:  # as on Metal, where users route the peers through the private gateway
            lab.rig.run(node, ["ip", "route", "replace", f"{peer.address}/{128 if v6 else 32}", "via", gateway])


class Routers:
    """A BIRD per router role, each with the protocols of the peers it holds."""

    def __init__(self, lab: LabCluster, peers: Sequence[MetalPeer], multihop: bool = False) -> None:
        self.lab, self.multihop = lab, multihop
        self.birds = {role: Bird(lab.rig, role, peers=bird_peers(lab, peers, role, multihop), asn=METAL_AS).start()
                      for role in sorted({peer.role for peer in peers})}

    def of(self, peer: MetalPeer) -> Bird:
        return self.birds[peer.role]

    def reconfigure(self, peers: Sequence[MetalPeer]) -> None:
        for role, bird in self.birds.items():
            bird.reconfigure(bird_peers(self.lab, peers, role, self.multihop))

    def stop(self) -> None:
        for bird in self.birds.values():
            bird.stop()


def sessions(routers: Routers, lab: LabCluster, peers: Sequence[MetalPeer]) -> dict[str, str]:
    """Each session's BIRD timestamp of its last state change (a session that flapped has a new one)."""
    return {protocol(n, p): routers.of(p).protocol(protocol(n, p)).since for n in lab.nodes for p in peers}


def flapped(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The sessions of `before` whose last state change is not the same one in `after` (BIRD's jitter allowed)."""
    return sorted(name for name, since in before.items() if not same_since(since, after.get(name, "")))


def all_established(routers: Routers, lab: LabCluster, peers: Sequence[MetalPeer], timeout: float = 20) -> None:
    for node in lab.nodes:
        for peer in peers:
            routers.of(peer).wait_established(protocol(node, peer), timeout=timeout)
