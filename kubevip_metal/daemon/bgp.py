"""The BGP speaker's settings, from the validated configuration: who we are, and whom we peer with.

The router ID is `--bgpRouterID`, else this node's IPv4 source address (`--sourceIP`, the `--sourceIF`
interface's address, or the address the kernel would use towards the first IPv4 peer), since ExaBGP needs one and a
router ID that follows the node's address is what operators expect to see in `show protocols`.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from generic.bgp.speaker import SpeakerSettings
from generic.parse import IPAddress
from kubevip_metal.config import Config
from kubevip_metal.errors import FatalError


class SourceResolver(Protocol):
    def interface_address(self, name: str, family: int) -> IPAddress | None: ...

    def route_source(self, peer: IPAddress) -> IPAddress | None: ...


def router_id(config: Config, resolver: SourceResolver) -> ipaddress.IPv4Address:
    bgp = config.bgp
    if bgp.router_id is not None:
        return bgp.router_id
    candidates: list[IPAddress | None] = [bgp.source_ip]
    if bgp.source_if is not None:
        candidates.append(resolver.interface_address(bgp.source_if, 4))
    candidates += [resolver.route_source(peer.address) for peer in bgp.peers if peer.address.version == 4]
    for candidate in candidates:
        if isinstance(candidate, ipaddress.IPv4Address):
            return candidate
    raise FatalError("no BGP router ID: this node has no IPv4 source address towards its peers; give --bgpRouterID")


def speaker_settings(config: Config, resolver: SourceResolver) -> SpeakerSettings:
    bgp = config.bgp
    if not bgp.peers:
        raise FatalError("no BGP peer to announce the VIP to (--bgppeers, --peerAddress)")
    return SpeakerSettings(router_id=router_id(config, resolver), local_as=bgp.local_as, peers=bgp.peers,
                           hold_time=bgp.hold_time, source_ip=bgp.source_ip, source_if=bgp.source_if)
