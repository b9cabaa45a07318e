"""BGP settings from the Equinix Metal API (`--metal --bgp`): make sure this device has its sessions, then peer with
every router Metal names.

    found = discover_bgp(client, project_id, device, families=(4, 6))   # a peering.settings.Discovered

Three steps, each answering a question an operator would otherwise debug by hand:

1. **Is BGP enabled on the project?** (`GET /projects/{id}/bgp-config`.) Metal creates no session and reports no
   neighbour without it, and waiting does not enable it, so "never enabled" and "disabled" are fatal, with one line
   naming the project and the fix. A global request still under Equinix's review is worth waiting for (NotReady).
2. **Does this device have a session per wanted family?** (`GET`, then `POST /devices/{id}/bgp/sessions`.) Created
   only when missing, so a restart or a second discovery never POSTs again. Another writer (the CCM, a second
   replica) may create the same session between our read and our POST; Metal then answers 422 "already has
   session", so a 422 is followed by a re-read and counts as done when the session is there, and is a fatal
   refusal (with the API's reason) when it is not.
3. **Whom to peer with?** (`GET /devices/{id}/bgp/neighbors`.) Every neighbour of every family, and every one of its
   peer IPs as its own peer with that neighbour's AS, password and multihop, sourced from the neighbour's
   `customer_ip` (kube-vip used `neighbours[0]` only and dropped the IPv6 routers). A wanted family whose session
   exists but whose neighbour Metal does not show yet is NotReady: Metal fills it in shortly after the session.

The local AS is the neighbours' `customer_as` (they must agree); the router ID is the IPv4 `customer_ip` (none when
only IPv6 is peered: the daemon derives one). Peers come sorted by address family, then address, so the same
answer always gives the same configuration and no needless re-peering.

Errors: transient API failures (5xx, 429, a dropped connection, after the client's own retries) are
`MetalSetupPending` (NotReady: the daemon retries); other 4xx are `MetalSetupFatal` with the operation and status
(setup's classification). Neighbours that contradict each other are a `PeeringError`. No error, log line or repr
carries the token or the MD5 password (`Secret`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from generic.bgp.peers import BgpPeer, PeerSource
from generic.logfmt import get_logger
from kubevip_metal.metal.client import BgpNeighbor, Device, MetalClient, ProjectBgpConfig
from kubevip_metal.metal.retry import MetalApiError
from kubevip_metal.metal.setup import MetalSetupFatal, MetalSetupPending, classify
from kubevip_metal.peering.settings import Discovered, PeeringError

log = get_logger("kubevip_metal.metal")

FAMILIES = (4, 6)


class MetalBgpNotEnabled(MetalSetupFatal):
    """The project has no enabled BGP configuration: nothing on this node can fix that, a person must enable it."""


def discover_bgp(client: MetalClient, project_id: str, device: Device, families: Sequence[int] = (4,)) -> Discovered:
    """This device's BGP peers and identity as the Metal API gives them, creating its missing sessions first.

    `families`: the address families (4, 6) that must have a session; neighbours of other families that already
    exist are peered with too. Raises MetalBgpNotEnabled / MetalSetupFatal, MetalSetupPending or PeeringError
    (see the module docstring)."""
    wanted = _wanted(families)
    try:
        _require_enabled(client.project_bgp_config(project_id), project_id)
        _ensure_sessions(client, device, wanted)
        neighbours = client.bgp_neighbors(device.id)
    except MetalApiError as exc:
        raise classify(exc) from None
    _require_neighbours(neighbours, wanted, device)
    found = _discovered(neighbours, device)
    log.info("metal.bgp_discovered", device=device.id, families=sorted({n.family for n in neighbours}),
             peers=[str(p.address) for p in found.peers], local_as=found.local_as,
             router_id=str(found.router_id) if found.router_id else None)
    return found


def _wanted(families: Sequence[int]) -> tuple[int, ...]:
    wanted = tuple(sorted(set(families)))
    if not wanted or any(f not in FAMILIES for f in wanted):
        raise ValueError(f"BGP address families must be some of 4 and 6, got {list(families)}")
    return wanted


def _require_enabled(config: ProjectBgpConfig | None, project_id: str) -> None:
    fix = (f"enable local BGP on the project in the Metal console (IPs & Networks > BGP) or with `metal project "
           f"bgp-enable --project-id {project_id} --deployment-type local --asn 65000`")
    if config is None:
        raise MetalBgpNotEnabled(f"BGP is not enabled on Metal project {project_id}; {fix}")
    if config.status == "requested":
        raise MetalSetupPending(f"BGP on Metal project {project_id} is requested ({config.deployment_type}) and "
                                "waits for Equinix's review")
    if config.status != "enabled":
        raise MetalBgpNotEnabled(f"BGP is {config.status or 'not enabled'} on Metal project {project_id}; {fix}")


def _ensure_sessions(client: MetalClient, device: Device, wanted: Sequence[int]) -> None:
    """Create the missing sessions; an existing one is never POSTed again."""
    existing = {s.family for s in client.bgp_sessions(device.id)}
    for family in wanted:
        if family not in existing:
            _create_session(client, device, family)


def _create_session(client: MetalClient, device: Device, family: int) -> None:
    try:
        client.create_bgp_session(device.id, family)
    except MetalApiError as exc:
        if exc.status != 422 or family not in {s.family for s in client.bgp_sessions(device.id)}:
            raise
        log.info("metal.bgp_session_exists", device=device.id, family=family, detail="created concurrently")
        return
    log.info("metal.bgp_session_created", device=device.id, family=family)


def _require_neighbours(neighbours: Sequence[BgpNeighbor], wanted: Sequence[int], device: Device) -> None:
    missing = [f for f in wanted if not any(n.family == f for n in neighbours)]
    if missing:
        names = " and ".join(f"IPv{f}" for f in missing)
        raise MetalSetupPending(f"Metal shows no {names} BGP neighbour for device {device.id} yet (its session "
                                "exists; the neighbour follows)")


def _discovered(neighbours: Sequence[BgpNeighbor], device: Device) -> Discovered:
    by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, BgpPeer] = {}
    for neighbour in neighbours:
        for address in neighbour.peer_ips:
            peer = BgpPeer(address=address, asn=neighbour.peer_as, password=neighbour.md5,
                           multihop=neighbour.multihop, source=PeerSource.METAL_API,
                           local_address=neighbour.customer_ip)
            kept = by_address.setdefault(address, peer)
            if kept != peer:
                raise PeeringError(f"the Metal API names BGP peer {address} twice for device {device.id}, with "
                                   "different settings")
    peers = tuple(sorted(by_address.values(), key=lambda p: (p.address.version, int(p.address))))
    return Discovered(PeerSource.METAL_API, peers, _local_as(neighbours, device), _router_id(neighbours))


def _local_as(neighbours: Sequence[BgpNeighbor], device: Device) -> int:
    found = sorted({n.customer_as for n in neighbours})
    if len(found) > 1:
        said = ", ".join(f"IPv{n.family} says {n.customer_as}" for n in sorted(neighbours, key=lambda n: n.family))
        raise PeeringError(f"the Metal API's BGP neighbours of device {device.id} disagree on the local AS: {said}")
    return found[0]


def _router_id(neighbours: Sequence[BgpNeighbor]) -> ipaddress.IPv4Address | None:
    """The IPv4 neighbour's customer_ip (Metal's private address of this device), as kube-vip and the CCM use it."""
    for neighbour in sorted(neighbours, key=lambda n: n.family):
        if isinstance(neighbour.customer_ip, ipaddress.IPv4Address):
            return neighbour.customer_ip
    return None
