"""The BGP speaker's settings, from the validated configuration and the discovered sources: who we are, and whom
we peer with.

The flags give a `FlagBgp`; `--annotations PREFIX` adds the node-annotation source and `--metal` the Metal API
source (kubevip_metal.peering). The combination rules are kubevip_metal.peering.settings'.

The router ID is `--bgpRouterID`, else the discovered one (Metal's `customer_ip`, the CCM's `src-ip`), else this
node's IPv4 source address (`--sourceIP`, the `--sourceIF` interface's address, a peer's discovered source
address, or the address the kernel would use towards the first IPv4 peer), since ExaBGP needs one and a router ID
that follows the node's address is what operators expect to see in `show protocols`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Protocol

from generic.bgp.speaker import SpeakerSettings
from generic.parse import IPAddress
from kubevip_metal.config import Config
from kubevip_metal.errors import FatalError
from kubevip_metal.peering.controller import Source
from kubevip_metal.peering.settings import Combined, FlagBgp


class SourceResolver(Protocol):
    def interface_address(self, name: str, family: int) -> IPAddress | None: ...

    def route_source(self, peer: IPAddress) -> IPAddress | None: ...


def flag_settings(config: Config) -> FlagBgp:
    bgp = config.bgp
    return FlagBgp(peers=bgp.peers, local_as=bgp.local_as if bgp.local_as_given else None,
                   router_id=bgp.router_id, source_given=bgp.source_ip is not None or bgp.source_if is not None)


def router_id(config: Config, combined: Combined, resolver: SourceResolver) -> ipaddress.IPv4Address:
    if combined.router_id is not None:
        return combined.router_id
    bgp = config.bgp
    candidates: list[IPAddress | None] = [bgp.source_ip]
    if bgp.source_if is not None:
        candidates.append(resolver.interface_address(bgp.source_if, 4))
    candidates += [peer.local_address for peer in combined.peers]
    candidates += [resolver.route_source(peer.address) for peer in combined.peers if peer.address.version == 4]
    for candidate in candidates:
        if isinstance(candidate, ipaddress.IPv4Address):
            return candidate
    raise FatalError("no BGP router ID: this node has no IPv4 source address towards its peers; give --bgpRouterID")


def settings_maker(config: Config, resolver: SourceResolver) -> Callable[[Combined], SpeakerSettings]:
    """Combined settings -> the speaker's, with the router ID derived and the flags' timers and source."""
    bgp = config.bgp

    def make(combined: Combined) -> SpeakerSettings:
        return SpeakerSettings(router_id=router_id(config, combined, resolver), local_as=combined.local_as,
                               peers=combined.peers, hold_time=bgp.hold_time, source_ip=bgp.source_ip,
                               source_if=bgp.source_if)

    return make


def speaker_settings(config: Config, resolver: SourceResolver) -> SpeakerSettings:
    """The settings from the flags alone (no discovered source)."""
    from kubevip_metal.peering.settings import combine

    if not config.bgp.peers:
        raise FatalError("no BGP peer to announce the VIP to (--bgppeers, --peerAddress)")
    return settings_maker(config, resolver)(combine(flag_settings(config), ()))


def discovered_sources(config: Config, api: Callable[[], Any], metal: Callable[[], Any]) -> list[Source]:
    """The sources the configuration asks for, in the order they combine: the Metal API, then the annotations."""
    sources: list[Source] = []
    if config.metal.enabled:
        from kubevip_metal.metal.bgp_source import MetalBgpSource

        sources.append(MetalBgpSource(config, metal()))
    if config.bgp.annotations:
        from kubevip_metal.peering.annotation_source import AnnotationSource

        assert config.node_name is not None  # the manager always has one
        sources.append(AnnotationSource(api(), config.node_name, config.bgp.annotations))
    return sources
