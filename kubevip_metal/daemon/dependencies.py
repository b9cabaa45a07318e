"""What the daemon is given rather than builds: the outside world, so tests can hand it fakes in-process.

`production(config)` is the real set (the official Kubernetes client, netlink, the Metal SDK). Each factory is
called once, when the daemon first needs it, and may raise `NotReady` (the manager retries) or `FatalError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generic.addresses import Addresses
from generic.bgp.speaker import Speaker, SpeakerSettings
from generic.dns import Lookup
from generic.election.lock import Lock
from kubevip_metal.config import Config, LocalHealthConfig

LockFactory = Callable[[Any, str, str], Lock]  # (API client, namespace, name) -> a lock on that Lease


@dataclass
class Dependencies:
    api_client: Callable[[], Any]  # the one Kubernetes API client of the process, shared by every elector
    addresses: Addresses  # netlink: the VIPs on interfaces
    metal_client: Callable[[], Any]  # kubevip_metal.metal.client.MetalClient (only the Metal modes call it)
    lease_lock: LockFactory
    bgp_speaker: Callable[[SpeakerSettings], Speaker] = field(default=lambda settings: _exabgp(settings))
    health_probe: Callable[[Any], Callable[[], bool]] = field(default=lambda api: _readyz(api))  # api -> probe
    # --controlPlaneHealthCheckAddress -> the check (daemon.localhealth.HttpCheck); returns None when healthy
    local_health_probe: Callable[[LocalHealthConfig], Callable[[], str | None]] = field(
        default=lambda settings: _http_check(settings))
    bgp_resolver: Any = None  # source addresses for the router ID (daemon.bgp.SourceResolver); None: the kernel's
    dns_lookup: Lookup | None = None  # a DNS --address's lookups (generic.dns); None: dnspython, /etc/resolv.conf
    dhcp_client: Any = None  # DHCP client factory (--ddns, 0.0.0.0 Services: ClientConfig -> client); None: pyroute2
    clock: Callable[[], float] = time.monotonic
    # (config, the daemon's API client getter) -> a kubevip_metal.events recorder (started and closed by the daemon)
    events: Callable[[Config, Callable[[], Any]], Any] = field(default=lambda config, api: _events(config, api))


def _exabgp(settings: SpeakerSettings) -> Speaker:
    from generic.bgp.exabgp import ExaBgpSpeaker

    return ExaBgpSpeaker(settings)


def production(config: Config) -> Dependencies:
    def api_client() -> Any:
        from kubevip_metal.kubeclient import build_api_client

        return build_api_client(config)

    def metal_client() -> Any:
        from kubevip_metal.metal.setup import metal_client

        return metal_client(config)

    def lease_lock(api: Any, namespace: str, name: str) -> Lock:
        from generic.election.lease_lock import LeaseLock

        return LeaseLock(api, namespace, name)

    return Dependencies(api_client=api_client, addresses=Addresses(), metal_client=metal_client,
                        lease_lock=lease_lock)


def _events(config: Config, api: Callable[[], Any]) -> Any:
    from kubevip_metal.daemon.events import recorder_for

    return recorder_for(config, api)


def _readyz(api: Any) -> Callable[[], bool]:
    from kubevip_metal.daemon.health import ReadyzProbe

    return ReadyzProbe(api)


def _http_check(settings: LocalHealthConfig) -> Callable[[], str | None]:
    from kubevip_metal.daemon.localhealth import HttpCheck

    return HttpCheck(settings.url, settings.timeout, settings.ca_path)
