"""What the daemon is given rather than builds: the outside world, so tests can hand it fakes in-process.

`production(config)` is the real set (the official Kubernetes client, netlink, the Metal SDK). Each factory is
called once, when the daemon first needs it, and may raise `NotReady` (the manager retries) or `FatalError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generic.addresses import Addresses
from generic.election.lock import Lock
from kubevip_metal.config import Config

LockFactory = Callable[[Any, str, str], Lock]  # (API client, namespace, name) -> a lock on that Lease


@dataclass
class Dependencies:
    api_client: Callable[[], Any]  # the one Kubernetes API client of the process, shared by every elector
    addresses: Addresses  # netlink: the VIPs on interfaces
    metal_client: Callable[[], Any]  # kubevip_metal.metal.client.MetalClient (only the Metal modes call it)
    lease_lock: LockFactory
    clock: Callable[[], float] = time.monotonic


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
