"""The Services controller, put together from the configuration: where a Service VIP is held, who elects.

ARP: the VIP goes on `--serviceInterface` (`auto`: the default route's interface), else `--interface`, else the
default route's interface, and the holder of the Services Lease (`--servicesLeaseName`, in `--namespace`)
serves every Service. BGP: the VIP goes on `lo` and every node serves (ECMP), no Lease. `--servicesElection`
(either mode): each Service is served by the holder of its own Lease. A `0.0.0.0` Service's address is leased
by its holder's DHCP client (`Dependencies.dhcp_client`, pyroute2's by default) on its interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generic.addresses import Addresses
from generic.parse import IPAddress
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.errors import NotReady
from kubevip_metal.services.controller import ServicesController, rules_of


def interface_chooser(config: Config, addresses: Addresses,
                      default_interface: Callable[[Addresses, int], str | None]) -> Callable[[IPAddress], str]:
    chosen = config.vip.service_interface
    if chosen == "auto":
        chosen = None
    fixed = chosen or (config.vip.interface if config.mode is Mode.ARP else None)

    def interface_for(address: IPAddress) -> str:
        if fixed is not None:
            return fixed
        found = default_interface(addresses, address.version)
        if found is None:
            raise NotReady(f"no interface for Service VIP {address}: give --serviceInterface")
        return found

    return interface_for


def build_services(config: Config, deps: Dependencies, vips: VipController, api: Any,
                   default_interface: Callable[[Addresses, int], str | None],
                   events: DaemonEvents | None = None,
                   on_served: Callable[[dict[tuple[str, str], frozenset[IPAddress] | None]], None] | None = None
                   ) -> ServicesController:
    assert config.node_name is not None
    election = config.election
    per_service = config.services.election
    lock = None
    if config.mode is Mode.ARP and not per_service:  # one holder serves them all; BGP: every node, ECMP
        lock = deps.lease_lock(api, election.namespace, election.services_lease_name)
    prefixes = {4: config.vip.prefix_v4, 6: config.vip.prefix_v6}
    return ServicesController(vips, api, config.node_name, rules_of(config),
                              interface_for=interface_chooser(config, deps.addresses, default_interface),
                              lock=lock, timers=election.timers, write_vip_host=lock is not None or per_service,
                              prefix=lambda address: prefixes[address.version], per_service=per_service,
                              clock=deps.clock, events=events, dhcp_client=deps.dhcp_client, on_served=on_served)
