"""How VIPs reach the network in each announcement mode: the mode -> announcers table.

A mode is where the address is held when `--interface` is not given, plus the announcers that tell the network:

| mode        | address held on                        | announcers                              |
|-------------|----------------------------------------|-----------------------------------------|
| ARP         | the default route's interface          | gratuitous ARP / unsolicited NA         |
| Metal EIP   | `lo` (Metal routes the EIP to us)      | the Elastic IP assignment (Metal API)   |
| BGP         | `lo` (the router routes it to us)      | host routes through the BGP speaker     |

A mode missing from the table is a `FatalError`, never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from generic.addresses import Addresses, Vip
from generic.announce import Announcer, GarpAnnouncer
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.errors import FatalError

Priority = Callable[[Vip], int | None]  # a VIP's MED now: lower for a newer leadership term (None: no MED)


@dataclass(frozen=True)
class ModeSpec:
    """What a mode contributes to the daemon: where a VIP is held when `--interface` is not given, and how its
    announcers are built (which may need the outside world: the Metal API; `NotReady` until it answers)."""

    default_interface: Callable[[Addresses, int], str | None]  # (addresses, IP version) -> interface
    announcers: Callable[[Config, Dependencies, Priority], list[Announcer]]


def _default_route(addresses: Addresses, version: int) -> str | None:
    return addresses.default_route_interface(version)


def _loopback(_addresses: Addresses, _version: int) -> str:
    return "lo"


def _arp(config: Config, deps: Dependencies, _priority: Priority) -> list[Announcer]:
    follow_up = config.election.timers.renew_deadline + 0.5
    return [GarpAnnouncer(config.vip.arp_rate_ms / 1000, deps.addresses, clock=deps.clock, follow_up=follow_up)]


def _metal_eip(config: Config, deps: Dependencies, _priority: Priority) -> list[Announcer]:
    from kubevip_metal.metal.announcer import ElasticIpAnnouncer
    from kubevip_metal.metal.setup import elastic_ip

    announcer = ElasticIpAnnouncer([elastic_ip(config, deps.metal_client())])
    announcer.start()
    return [announcer]


def _bgp(config: Config, deps: Dependencies, priority: Priority) -> list[Announcer]:
    from generic.bgp.announcer import BgpAnnouncer
    from generic.bgp.exabgp import KernelResolver
    from kubevip_metal.daemon.bgp import speaker_settings

    resolver = deps.bgp_resolver or KernelResolver()
    return [BgpAnnouncer(deps.bgp_speaker(speaker_settings(config, resolver)), med=priority)]


MODES: Mapping[Mode, ModeSpec] = {Mode.ARP: ModeSpec(_default_route, _arp),
                                  Mode.METAL_EIP: ModeSpec(_loopback, _metal_eip),
                                  Mode.BGP: ModeSpec(_loopback, _bgp)}


def mode_spec(config: Config, modes: Mapping[Mode, ModeSpec] = MODES) -> ModeSpec:
    spec = modes.get(config.mode)
    if spec is None:
        raise FatalError(f"the {config.mode.value} mode is not available in this version")
    return spec
