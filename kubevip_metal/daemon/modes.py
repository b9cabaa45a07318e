"""How VIPs reach the network in each announcement mode: the mode -> announcers table.

A mode is where the address is held when `--interface` is not given, plus the announcers that tell the network:

| mode        | address held on                        | announcers                              |
|-------------|----------------------------------------|-----------------------------------------|
| ARP         | the default route's interface          | gratuitous ARP / unsolicited NA         |
| Metal EIP   | `lo` (Metal routes the EIP to us)      | the Elastic IP assignment (Metal API)   |
| BGP         | `lo` (the router routes it to us)      | host routes through the BGP speaker     |

In BGP mode the speaker's peers come from the flags, plus the Metal API (`--metal`) and this node's annotations
(`--annotations`), and follow those sources live (kubevip_metal.peering).

A mode missing from the table is a `FatalError`, never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from generic.addresses import Addresses, Vip
from generic.announce import Announcer, GarpAnnouncer
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.errors import FatalError

Priority = Callable[[Vip], int | None]  # a VIP's MED now: lower for a newer leadership term (None: no MED)
ApiClient = Callable[[], Any]  # the daemon's one Kubernetes API client (made on first call)


@dataclass(frozen=True)
class ModeSpec:
    """What a mode contributes to the daemon: where a VIP is held when `--interface` is not given, and how its
    announcers are built (which may need the outside world: the Metal API; `NotReady` until it answers)."""

    default_interface: Callable[[Addresses, int], str | None]  # (addresses, IP version) -> interface
    announcers: Callable[[Config, Dependencies, Priority, ApiClient], list[Announcer]]


def _default_route(addresses: Addresses, version: int) -> str | None:
    return addresses.default_route_interface(version)


def _loopback(_addresses: Addresses, _version: int) -> str:
    return "lo"


def _arp(config: Config, deps: Dependencies, _priority: Priority, _api: ApiClient) -> list[Announcer]:
    follow_up = config.election.timers.renew_deadline + 0.5
    return [GarpAnnouncer(config.vip.arp_rate_ms / 1000, deps.addresses, clock=deps.clock, follow_up=follow_up)]


def _metal_eip(config: Config, deps: Dependencies, _priority: Priority, _api: ApiClient) -> list[Announcer]:
    from kubevip_metal.metal.announcer import ElasticIpAnnouncer
    from kubevip_metal.metal.setup import elastic_ip

    announcer = ElasticIpAnnouncer([elastic_ip(config, deps.metal_client())])
    announcer.start()
    return [announcer]


def _bgp(config: Config, deps: Dependencies, priority: Priority, api: ApiClient) -> list[Announcer]:
    """The speaker with the flags' peers, or, with --annotations / --metal, with peers that follow those sources
    (NotReady until each source has given something to peer with)."""
    from generic.bgp.announcer import BgpAnnouncer
    from generic.bgp.exabgp import KernelResolver
    from kubevip_metal.daemon.bgp import discovered_sources, flag_settings, settings_maker, speaker_settings

    resolver = deps.bgp_resolver or KernelResolver()
    sources = discovered_sources(config, api, deps.metal_client)
    if not sources:
        return [BgpAnnouncer(deps.bgp_speaker(speaker_settings(config, resolver)), med=priority)]
    from kubevip_metal.peering.controller import PeeredSpeaker, Peering

    peering = Peering(flag_settings(config), sources, settings_maker(config, resolver))
    try:
        settings = peering.initial()
    except BaseException:
        peering.close()
        raise
    return [BgpAnnouncer(PeeredSpeaker(deps.bgp_speaker(settings), peering), med=priority)]


MODES: Mapping[Mode, ModeSpec] = {Mode.ARP: ModeSpec(_default_route, _arp),
                                  Mode.METAL_EIP: ModeSpec(_loopback, _metal_eip),
                                  Mode.BGP: ModeSpec(_loopback, _bgp)}


def mode_spec(config: Config, modes: Mapping[Mode, ModeSpec] = MODES) -> ModeSpec:
    spec = modes.get(config.mode)
    if spec is None:
        raise FatalError(f"the {config.mode.value} mode is not available in this version")
    return spec
