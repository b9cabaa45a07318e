"""BGP settings from three sources, one model: what a source found (`Discovered`) and how sources combine.

The sources are the flags (`--bgppeers`, `--peerAddress`, `--localAS`, `--bgpRouterID`, `--sourceIP`,
`--sourceIF`), the Equinix Metal API (`--metal --bgp`, kubevip_metal.metal.bgp) and the node annotations the CCM
writes (`--annotations PREFIX`, kubevip_metal.peering.annotations). Each discovered source yields a `Discovered`
value; `combine` makes the one peer list the speaker runs with. The rules, in order:

1. **Peers add up**: the flags' peers first in the order given, then each discovered source's peers in its own
   deterministic order (Metal: by address family, then address; annotations: by index, then address).
2. **A flag overrides a discovered peer** with the same address: the operator's explicit word wins (logged).
3. **The same peer from two discovered sources** is merged when both say the same thing, and is an error naming
   both sources and the fields that differ (never a password) when they do not: guessing which one is right
   would peer with the wrong AS or password at 3 a.m.
4. **Local AS**: `--localAS` (or `bgp_as`) when given, else the discovered sources' (which must agree), else
   kube-vip's default 65000.
5. **Router ID**: `--bgpRouterID` when given, else the discovered one (Metal's `customer_ip`, the CCM's `src-ip`),
   else this node's own IPv4 source address towards its peers (kubevip_metal.daemon.bgp).
6. **Source address**: `--sourceIP` / `--sourceIF` when given apply to every session (the discovered per-peer
   source addresses are dropped); else each discovered peer keeps the source its source gave (`customer_ip`,
   `src-ip`), and flag peers use the kernel's choice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace

from generic.bgp.peers import BgpPeer, PeerSource
from generic.logfmt import get_logger

log = get_logger("kubevip_metal.peering")

DEFAULT_LOCAL_AS = 65000


class PeeringError(ValueError):
    """Settings that cannot be combined or parsed. Safe to log: it never holds a password or a token."""


@dataclass(frozen=True)
class Discovered:
    """What one source (the Metal API, or one node's annotations) says about this node's BGP: its peers, each
    with its own AS, password, multihop and source address, and the node's own AS and router ID if it says."""

    origin: PeerSource
    peers: tuple[BgpPeer, ...]
    local_as: int | None = None
    router_id: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class FlagBgp:
    """The flags' part of the BGP settings, with whether each overridable value was given explicitly."""

    peers: tuple[BgpPeer, ...]
    local_as: int | None  # None: not given, so a discovered local AS (or the default) applies
    router_id: ipaddress.IPv4Address | None
    source_given: bool  # --sourceIP or --sourceIF: discovered per-peer source addresses are dropped


@dataclass(frozen=True)
class Combined:
    """The speaker's peers and identity after the rules above; the router ID may still be None (derived later)."""

    local_as: int
    router_id: ipaddress.IPv4Address | None
    peers: tuple[BgpPeer, ...]


_COMPARED = ("asn", "password", "multihop", "port", "local_address")


def _differences(a: BgpPeer, b: BgpPeer) -> list[str]:
    diff = []
    for name in _COMPARED:
        left, right = getattr(a, name), getattr(b, name)
        if name == "password":  # compare the secrets' values, print only the field name
            left = left.reveal() if left is not None else None
            right = right.reveal() if right is not None else None
        if left != right:
            diff.append(name)
    return diff


def _agreed(values: Sequence[tuple[PeerSource, object]], what: str) -> object | None:
    found = [(origin, value) for origin, value in values if value is not None]
    distinct = {value for _origin, value in found}
    if len(distinct) > 1:
        said = ", ".join(f"{origin.value} says {value}" for origin, value in found)
        raise PeeringError(f"the BGP sources disagree on the {what}: {said}")
    return found[0][1] if found else None


def combine(flags: FlagBgp, discovered: Sequence[Discovered]) -> Combined:
    """The rules of the module docstring. Raises PeeringError on a conflict between discovered sources."""
    by_address: dict[object, BgpPeer] = {}
    order: list[BgpPeer] = []
    for peer in flags.peers:
        by_address[peer.address] = peer
        order.append(peer)
    for found in discovered:
        for peer in found.peers:
            if flags.source_given and peer.local_address is not None:
                peer = replace(peer, local_address=None)
            kept = by_address.get(peer.address)
            if kept is None:
                by_address[peer.address] = peer
                order.append(peer)
            elif kept.source is PeerSource.FLAG:
                if _differences(kept, peer):
                    log.info("bgp.peer_overridden", peer=str(peer.address), by="flag", source=peer.source.value,
                             fields=_differences(kept, peer))
            elif differences := _differences(kept, peer):
                raise PeeringError(f"BGP peer {peer.address} from {kept.source.value} and from {peer.source.value} "
                                   f"differ in {', '.join(differences)}; fix one of them or override the peer "
                                   "with --bgppeers")
    local_as = flags.local_as
    if local_as is None:
        agreed = _agreed([(d.origin, d.local_as) for d in discovered], "local AS")
        local_as = int(agreed) if isinstance(agreed, int) else DEFAULT_LOCAL_AS
    router_id = flags.router_id
    if router_id is None:
        agreed_id = _agreed([(d.origin, d.router_id) for d in discovered], "router ID")
        router_id = agreed_id if isinstance(agreed_id, ipaddress.IPv4Address) else None
    return Combined(local_as, router_id, tuple(order))
