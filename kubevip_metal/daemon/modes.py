"""How VIPs reach the network in each announcement mode: the mode -> announcers table.

A mode is where the address is held when `--interface` is not given, plus the announcers that tell the network:

| mode        | address held on                        | announcers                              |
|-------------|----------------------------------------|-----------------------------------------|
| ARP         | the default route's interface          | gratuitous ARP / unsolicited NA         |
| Metal EIP   | `lo` (Metal routes the EIP to us)      | the Elastic IP assignment (Metal API)   |

BGP joins the table when its speaker lands; until then the configuration refuses `--bgp` at start, and a mode
missing from the table is a `FatalError`, never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from generic.addresses import Addresses
from generic.announce import Announcer, GarpAnnouncer
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.errors import FatalError


@dataclass
class Announcement:
    """What a mode contributes to the daemon."""

    default_interface: Callable[[Addresses, int], str | None]  # (addresses, IP version) -> interface
    announcers: list[Announcer] = field(default_factory=list)


ModeFactory = Callable[[Config, Dependencies], Announcement]


def _default_route(addresses: Addresses, version: int) -> str | None:
    return addresses.default_route_interface(version)


def _loopback(_addresses: Addresses, _version: int) -> str:
    return "lo"


def _arp(config: Config, deps: Dependencies) -> Announcement:
    return Announcement(_default_route, [GarpAnnouncer(config.vip.arp_rate_ms / 1000, deps.addresses,
                                                       clock=deps.clock)])


def _metal_eip(config: Config, deps: Dependencies) -> Announcement:
    from kubevip_metal.metal.announcer import ElasticIpAnnouncer
    from kubevip_metal.metal.setup import elastic_ip

    announcer = ElasticIpAnnouncer([elastic_ip(config, deps.metal_client())])
    announcer.start()
    return Announcement(_loopback, [announcer])


MODES: Mapping[Mode, ModeFactory] = {Mode.ARP: _arp, Mode.METAL_EIP: _metal_eip}


def announcement_for(config: Config, deps: Dependencies, modes: Mapping[Mode, ModeFactory] = MODES) -> Announcement:
    factory = modes.get(config.mode)
    if factory is None:
        raise FatalError(f"the {config.mode.value} mode is not available in this version")
    return factory(config, deps)
