"""The emulated Equinix Metal account: projects, devices, IP reservations and assignments, project BGP and device
BGP sessions, and their JSON.

An Elastic IP move is three calls on this state (find the reservation, delete the old assignment, create the new
one), so the state keeps exactly what those calls touch and renders it the way the API does: hrefs relative to
`/metal/v1`, nested objects as `{"href": ...}` unless `include`d, management addresses on every device.

Every device gets two management addresses, as on Metal: a public IPv4 /31 (203.0.113.0/24, then 192.0.2.0/24)
and a private IPv4 /31 (10.70.0.0/16), each in its own management reservation of the device's project; the device
holds the odd address, the even one is the gateway. They show in `GET /projects/{id}/ips` like real management
blocks, so a client that picks "the first public_ipv4 reservation" instead of the tagged EIP is caught. A device
added with `ipv6=True` also gets a public IPv6 management /127 (2001:db8:4111::/56), the customer address of its IPv6
BGP neighbour.

BGP follows Metal's model: a project's BGP configuration (local or global, ASN, MD5 password) and, per device, at
most one session per address family. A device's BGP neighbours are derived from both (see `derived_neighbors`)
unless a test set them explicitly with `set_bgp_neighbors`.

The lock is taken by the event loop (API calls) and by test threads (seeding, out-of-band moves); every method
holds it for a short, non-blocking critical section.
"""

from __future__ import annotations

import ipaddress
import math
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

__all__ = ["BASE", "METAL_PEER_AS", "METAL_PEER_IPS", "MetalError", "MetalState", "NotEmulated",
           "typical_bgp_neighbor"]

BASE = "/metal/v1"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESERVATION_TYPES = ("public_ipv4", "global_ipv4", "private_ipv4", "public_ipv6")

_METRO_ID = "5a9f2f4e-3bd8-4a5c-9c53-2b1a1d0c7a11"
METRO: dict[str, Any] = {"id": _METRO_ID, "code": "da", "name": "Dallas", "country": "US",
                         "href": f"{BASE}/locations/metros/{_METRO_ID}"}
_FACILITY_ID = "c1f0b5a6-8c1e-4d67-9a0e-6f1f0d3e2b44"
FACILITY: dict[str, Any] = {"id": _FACILITY_ID, "code": "da11", "name": "Dallas DA11",
                            "href": f"{BASE}/facilities/{_FACILITY_ID}", "metro": METRO}
_PLAN_ID = "e69c0169-4726-46ea-98f1-939c9e8a3607"
PLAN: dict[str, Any] = {"id": _PLAN_ID, "slug": "c3.small.x86", "name": "c3.small.x86", "class": "c3.small.x86",
                        "line": "baremetal", "type": "standard", "href": f"{BASE}/plans/{_PLAN_ID}"}
_OS_ID = "2b0e3a0e-7b1d-4a7f-8f4c-1e8d6c2b9a01"
OPERATING_SYSTEM: dict[str, Any] = {"id": _OS_ID, "slug": "ubuntu_22_04", "name": "Ubuntu 22.04 LTS",
                                    "distro": "ubuntu", "version": "22.04",
                                    "href": f"{BASE}/operating-systems/{_OS_ID}"}
_PUBLIC_MANAGEMENT_POOLS = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("192.0.2.0/24"))
_PRIVATE_MANAGEMENT_POOL = ipaddress.ip_network("10.70.0.0/16")
_IPV6_MANAGEMENT_POOL = ipaddress.ip_network("2001:db8:4111::/56")

# What Metal's neighbour data shows for every local-BGP session: its routers' AS and their addresses. The IPv4 pair is
# the spec's example; the IPv6 pair, written out in full as Metal wrote it, is from packethost/network-helpers'
# recorded API answers (routers/test_data), the only public record of Metal's IPv6 BGP peers.
METAL_PEER_AS = 65530
METAL_PEER_IPS: dict[str, tuple[str, ...]] = {
    "ipv4": ("169.254.255.1", "169.254.255.2"),
    "ipv6": ("fc00:0000:0000:0000:0000:0000:0000:000e", "fc00:0000:0000:0000:0000:0000:0000:000f"),
}
BGP_FAMILIES = ("ipv4", "ipv6")


class MetalError(Exception):
    """An API error: the status and the `Error` body (`{"error": ...}`, or `{"errors": [...]}` for 422s)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"errors": [self.message]} if self.status == 422 else {"error": self.message}


class NotEmulated(MetalError):
    """A valid request the emulator cannot answer faithfully (a filter it does not implement): 501, and a test
    failure, rather than a plausible but wrong answer."""

    def __init__(self, message: str) -> None:
        super().__init__(501, f"not emulated: {message}")


@dataclass
class ProjectBgp:
    """A project's BGP configuration; `status` is one of the spec's requested|enabled|disabled."""

    id: str
    asn: int
    md5: str | None
    deployment_type: str
    status: str
    created_at: str
    max_prefix: int = 10


@dataclass
class Project:
    id: str
    name: str
    organization_id: str
    created_at: str
    bgp: ProjectBgp | None = None  # None: never enabled (the API answers `{}`)


@dataclass
class Device:
    id: str
    project_id: str
    hostname: str
    state: str
    tags: list[str]
    created_at: str
    bgp_neighbors: list[dict[str, Any]] | None = None  # set by a test: served instead of the derived neighbours


@dataclass
class BgpSession:
    id: str
    device_id: str
    family: str  # "ipv4" | "ipv6", as the API spells it
    default_route: bool
    created_at: str


@dataclass
class Reservation:
    id: str
    project_id: str
    network: IPNetwork
    type: str
    tags: list[str]
    management: bool
    created_at: str


@dataclass
class Assignment:
    id: str
    reservation_id: str
    device_id: str
    address: IPAddress  # the device's address (the odd one of a management /31)
    network: IPNetwork
    created_at: str


def typical_bgp_neighbor(customer_ip: str, *, customer_as: int = 65000, peer_as: int = 65530,
                         peer_ips: Sequence[str] = ("169.254.255.1", "169.254.255.2"), multihop: bool = True,
                         md5_password: str | None = None, routes_in: Sequence[str] = (),
                         routes_out: Sequence[str] = ()) -> dict[str, Any]:
    """What `GET /devices/{id}/bgp/neighbors` shows for a device with local BGP enabled (IPv4, Metal's defaults)."""
    return {
        "address_family": 4 if ipaddress.ip_address(customer_ip).version == 4 else 6,
        "customer_as": customer_as,
        "customer_ip": customer_ip,
        "md5_enabled": md5_password is not None,
        "md5_password": md5_password or "",
        "multihop": multihop,
        "peer_as": peer_as,
        "peer_ips": list(peer_ips),
        "routes_in": [{"route": route, "exact": False} for route in routes_in],
        "routes_out": [{"route": route, "exact": True} for route in routes_out],
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _parse_network(address: str) -> tuple[IPAddress, IPNetwork]:
    """`198.51.100.200` or `198.51.100.200/32` → (address, network); a bare address is a single-address network."""
    try:
        interface = ipaddress.ip_interface(address.strip())
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address or CIDR") from None
    if "/" not in address:
        interface = ipaddress.ip_interface(f"{interface.ip}/{interface.max_prefixlen}")
    return interface.ip, interface.network


class MetalState:
    """Everything the emulated account holds, in creation order (the API lists oldest first)."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.RLock()
        self._ids = random.Random(seed)  # reproducible UUIDs: the same seeding gives the same ids
        self.projects: dict[str, Project] = {}
        self.devices: dict[str, Device] = {}
        self.reservations: dict[str, Reservation] = {}
        self.assignments: dict[str, Assignment] = {}
        self.bgp_sessions: dict[str, BgpSession] = {}

    def new_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # --- seeding and inspection (any thread) -------------------------------------------------------------------

    def add_project(self, name: str, *, fixed_id: str | None = None) -> str:
        with self._lock:
            project_id = self._fresh_id(fixed_id)
            self.projects[project_id] = Project(project_id, name, self.new_id(), _now())
            return project_id

    def add_device(self, project_id: str, hostname: str, *, fixed_id: str | None = None, state: str = "active",
                   tags: Sequence[str] = (), management: bool = True, ipv6: bool = False,
                   private_ipv4: str | None = None, public_ipv6: str | None = None) -> str:
        """A provisioned device; `management` gives it a public and a private management /31, as Metal does, and
        `ipv6` a public IPv6 management /127 as well (off by default so that existing address listings stay as
        they are; Metal gives every device one). `private_ipv4` makes the private management address that one
        (a /32 block), e.g. a rig node's own address, so its BGP `customer_ip` is where it really is; `public_ipv6`
        likewise the IPv6 management address (a /128 block; implies `ipv6`)."""
        with self._lock:
            self._project(project_id, api=False)
            device_id = self._fresh_id(fixed_id)
            self.devices[device_id] = Device(device_id, project_id, hostname, state, list(tags), _now())
            blocks: list[tuple[Sequence[IPNetwork], str, int]] = []
            if management:
                blocks.append((_PUBLIC_MANAGEMENT_POOLS, "public_ipv4", 31))
                if private_ipv4 is None:
                    blocks.append(((_PRIVATE_MANAGEMENT_POOL,), "private_ipv4", 31))
            if ipv6 and public_ipv6 is None:
                blocks.append(((_IPV6_MANAGEMENT_POOL,), "public_ipv6", 127))
            for pools, kind, prefix in blocks:
                network = self._free_subnet(pools, prefix)
                reservation_id = self._reserve(project_id, network, kind, (), management=True)
                self._add_assignment(reservation_id, device_id, network[1], network)
            for fixed, kind in ((private_ipv4, "private_ipv4"), (public_ipv6, "public_ipv6")):
                if management and fixed is not None:
                    network = ipaddress.ip_network(fixed)  # a host address: a /32 or /128 block
                    reservation_id = self._reserve(project_id, network, kind, (), management=True)
                    self._add_assignment(reservation_id, device_id, network[0], network)
            return device_id

    def add_reservation(self, project_id: str, address: str, tags: Iterable[str] = (), *,
                        type_: str = "public_ipv4", fixed_id: str | None = None) -> str:
        """An Elastic IP block (`198.51.100.200` means a /32) owned by the project, unassigned."""
        if type_ not in RESERVATION_TYPES:
            raise ValueError(f"reservation type must be one of {', '.join(RESERVATION_TYPES)}, got {type_!r}")
        _, network = _parse_network(address)
        with self._lock:
            self._project(project_id, api=False)
            return self._reserve(project_id, network, type_, tags, management=False, fixed_id=fixed_id)

    def set_bgp_neighbors(self, device_id: str, neighbors: Sequence[Mapping[str, Any]] | None) -> None:
        """The `BgpNeighborData` list the device reports instead of the derived one (see `typical_bgp_neighbor`);
        empty means none; None goes back to deriving them from the project's BGP and the device's sessions."""
        with self._lock:
            device = self._device(device_id, api=False)
            device.bgp_neighbors = None if neighbors is None else [dict(n) for n in neighbors]

    def enable_project_bgp(self, project_id: str, *, asn: int = 65000, md5: str | None = None,
                           deployment_type: str = "local", status: str = "enabled") -> None:
        """BGP on the project, as the console or `metal project bgp-enable` would set it (`status="requested"`
        is a global deployment waiting for Equinix's review). Enabling again keeps the config's id."""
        if deployment_type not in ("local", "global") or status not in ("requested", "enabled", "disabled"):
            raise ValueError(f"deployment_type local|global and status requested|enabled|disabled, got "
                             f"{deployment_type!r} and {status!r}")
        if not 0 <= asn <= 4294967295:
            raise ValueError(f"ASN {asn} is out of range")
        with self._lock:
            project = self._project(project_id, api=False)
            config_id = project.bgp.id if project.bgp is not None else self.new_id()
            created = project.bgp.created_at if project.bgp is not None else _now()
            project.bgp = ProjectBgp(config_id, asn, md5, deployment_type, status, created)

    def disable_project_bgp(self, project_id: str) -> None:
        """BGP disabled after being enabled: the config stays and says `disabled`, as the spec describes; sessions
        stay too, but the device shows no neighbours. A project that never had BGP is left as it is."""
        with self._lock:
            project = self._project(project_id, api=False)
            if project.bgp is not None:
                project.bgp.status = "disabled"

    def add_bgp_session(self, device_id: str, family: str = "ipv4", *, default_route: bool = False) -> str:
        """A session created out of band (by the CCM, Terraform or a person), bypassing the API's checks."""
        if family not in BGP_FAMILIES:
            raise ValueError(f"family must be ipv4 or ipv6, got {family!r}")
        with self._lock:
            self._device(device_id, api=False)
            return self._add_bgp_session(device_id, family, default_route).id

    def bgp_session_families(self, device_id: str) -> list[str]:
        """The address families of the device's sessions, in creation order."""
        with self._lock:
            return [s.family for s in self._sessions_of(device_id)]

    def addresses_of(self, device_id: str) -> dict[str, str]:
        """The device's management addresses by reservation type, e.g. {"private_ipv4": "10.70.0.1"}."""
        with self._lock:
            self._device(device_id, api=False)
            found: dict[str, str] = {}
            for a in self._assignments_of_device(device_id):
                reservation = self.reservations[a.reservation_id]
                if reservation.management:
                    found.setdefault(reservation.type, str(a.address))
            return found

    def assignments_of(self, address: str) -> list[str]:
        """The devices that hold `address` now, oldest assignment first."""
        ip, _ = _parse_network(address)
        with self._lock:
            return [a.device_id for a in self.assignments.values() if a.address == ip]

    def assign(self, address: str, device_id: str, *, exclusive: bool = True) -> str:
        """Assign out of band (a person in the portal): `exclusive` first removes every other holder, otherwise the
        address ends up on several devices (a state the CCM refuses to repair). Returns the assignment id."""
        ip, network = _parse_network(address)
        with self._lock:
            device = self._device(device_id, api=False)
            reservation = self._reservation_for(network, device.project_id)
            if reservation is None:
                raise KeyError(f"{address} is not in any reservation of project {device.project_id}")
            held = [a for a in self.assignments.values() if a.address == ip]
            for a in held:
                if a.device_id != device_id and exclusive:
                    del self.assignments[a.id]
            mine = next((a for a in held if a.device_id == device_id), None)
            if mine is not None:
                return mine.id
            return self._add_assignment(reservation.id, device_id, ip, network).id

    def unassign_all(self, address: str) -> int:
        """Remove every assignment of `address`; how many there were."""
        ip, _ = _parse_network(address)
        with self._lock:
            gone = [a.id for a in self.assignments.values() if a.address == ip]
            for assignment_id in gone:
                del self.assignments[assignment_id]
            return len(gone)

    def snapshot(self) -> dict[str, Any]:
        """A compact view for people and the lab: projects, devices, reservations and who holds each."""
        with self._lock:
            return {"projects": [{
                "id": p.id, "name": p.name,
                "bgp": None if p.bgp is None else {"status": p.bgp.status, "asn": p.bgp.asn,
                                                   "deployment_type": p.bgp.deployment_type,
                                                   "md5": p.bgp.md5 is not None},
                "devices": [{"id": d.id, "hostname": d.hostname, "state": d.state,
                             "bgp_sessions": [s.family for s in self._sessions_of(d.id)]}
                            for d in self.devices.values() if d.project_id == p.id],
                "reservations": [{
                    "id": r.id, "address": str(r.network), "type": r.type, "tags": list(r.tags),
                    "management": r.management,
                    "assigned_to": [a.device_id for a in self.assignments.values() if a.reservation_id == r.id],
                } for r in self.reservations.values() if r.project_id == p.id],
            } for p in self.projects.values()]}

    def seed(self, doc: Any) -> dict[str, Any]:
        """Load a seed document and return the ids it got, keyed like the document:

            {"projects": [{"name": "lab", "id": "<uuid, optional>",
                           "bgp": {"asn": 65000, "md5": "<optional>", "deployment_type": "local"},
                           "devices": [{"hostname": "n1", "id": "...", "ipv6": false,
                                        "bgp_sessions": ["ipv4"], "bgp_neighbors": [...] }],
                           "reservations": [{"address": "198.51.100.200/32", "tags": ["eip"],
                                             "assigned_to": "n1"}]}]}
        """
        if not isinstance(doc, Mapping) or not isinstance(doc.get("projects", []), list):
            raise ValueError('a seed document is {"projects": [...]}')
        ids: dict[str, Any] = {"projects": {}}
        for project in doc.get("projects", []):
            project_id = self.add_project(str(project["name"]), fixed_id=project.get("id"))
            bgp = project.get("bgp")
            if bgp:
                self.enable_project_bgp(project_id, asn=int(bgp.get("asn", 65000)), md5=bgp.get("md5"),
                                        deployment_type=str(bgp.get("deployment_type", "local")),
                                        status=str(bgp.get("status", "enabled")))
            devices: dict[str, str] = {}
            for device in project.get("devices", []):
                hostname = str(device["hostname"])
                devices[hostname] = self.add_device(project_id, hostname, fixed_id=device.get("id"),
                                                    tags=device.get("tags", ()), ipv6=bool(device.get("ipv6")))
                for family in device.get("bgp_sessions", ()):
                    self.add_bgp_session(devices[hostname], str(family))
                if device.get("bgp_neighbors"):
                    self.set_bgp_neighbors(devices[hostname], device["bgp_neighbors"])
            reservations: dict[str, str] = {}
            for reservation in project.get("reservations", []):
                address = str(reservation["address"])
                reservations[address] = self.add_reservation(project_id, address, reservation.get("tags", ()),
                                                             type_=reservation.get("type", "public_ipv4"),
                                                             fixed_id=reservation.get("id"))
                holder = reservation.get("assigned_to")
                if holder:
                    self.assign(address, devices.get(holder, holder))
            ids["projects"][project["name"]] = {"id": project_id, "devices": devices, "reservations": reservations}
        return ids

    # --- the API operations (event loop; inputs already validated against the spec) -----------------------------

    def find_projects(self, query: Mapping[str, Any], raw_query: Sequence[tuple[str, str]]) -> dict[str, Any]:
        with self._lock:
            name = query.get("name")
            projects = [p for p in self.projects.values() if name is None or p.name == name]
            page, meta = _paginate(projects, query, raw_query, f"{BASE}/projects")
            return {"projects": [self.project_json(p) for p in page], "meta": meta}

    def find_project(self, project_id: str) -> dict[str, Any]:
        with self._lock:
            return self.project_json(self._project(project_id, api=True))

    def find_project_devices(self, project_id: str, query: Mapping[str, Any],
                             raw_query: Sequence[tuple[str, str]]) -> dict[str, Any]:
        unsupported = sorted(set(query) & {"search", "categories", "facility", "metro", "reserved", "type",
                                           "has_termination_time", "mac_address"})
        if unsupported:
            raise NotEmulated(f"findProjectDevices filters {', '.join(unsupported)}")
        with self._lock:
            self._project(project_id, api=True)
            hostname, tag = query.get("hostname"), query.get("tag")
            devices = [d for d in self.devices.values() if d.project_id == project_id
                       and (hostname is None or hostname in d.hostname) and (tag is None or tag in d.tags)]
            page, meta = _paginate(devices, query, raw_query, f"{BASE}/projects/{project_id}/devices")
            include_project = "project" in query.get("include", ())
            return {"devices": [self.device_json(d, include_project) for d in page], "meta": meta}

    def find_device(self, device_id: str, query: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self.device_json(self._device(device_id, api=True), "project" in query.get("include", ()))

    def bgp_neighbors(self, device_id: str) -> dict[str, Any]:
        """What a test set, else what Metal would derive (`derived_neighbors`)."""
        with self._lock:
            device = self._device(device_id, api=True)
            if device.bgp_neighbors is not None:
                return {"bgp_neighbors": [dict(n) for n in device.bgp_neighbors]}
            return {"bgp_neighbors": self.derived_neighbors(device)}

    def derived_neighbors(self, device: Device) -> list[dict[str, Any]]:
        """One neighbour per session (IPv4 first) while the project's BGP is enabled: Metal's routers and AS, the
        project's ASN and MD5 password, multihop, and the device's own address of that family (the private
        management IPv4, as Metal documents it, or the public IPv6 management address)."""
        bgp = self.projects[device.project_id].bgp
        if bgp is None or bgp.status != "enabled":
            return []
        neighbours = []
        for family in BGP_FAMILIES:
            session = next((s for s in self._sessions_of(device.id) if s.family == family), None)
            customer_ip = self._bgp_address(device.id, family)
            if session is None or customer_ip is None:
                continue
            default = ("0.0.0.0/0",) if family == "ipv4" else ("::/0",)
            neighbours.append(typical_bgp_neighbor(
                customer_ip, customer_as=bgp.asn, peer_as=METAL_PEER_AS, peer_ips=METAL_PEER_IPS[family],
                multihop=True, md5_password=bgp.md5, routes_in=self._project_routes(device.project_id, family),
                routes_out=default if session.default_route else ()))
        return neighbours

    def find_bgp_config(self, project_id: str) -> dict[str, Any]:
        """`{}` until BGP is enabled ("When BGP configuration is not enabled empty structure is returned")."""
        with self._lock:
            project = self._project(project_id, api=True)
            return {} if project.bgp is None else self.bgp_config_json(project)

    def find_bgp_sessions(self, device_id: str) -> dict[str, Any]:
        with self._lock:
            self._session_device(device_id)
            return {"bgp_sessions": [self.bgp_session_json(s) for s in self._sessions_of(device_id)]}

    def create_bgp_session(self, device_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One session per family, only while the project's BGP is enabled and the device has an address of that
        family; every refusal is 422 (see metalapi.py's undocumented behaviour)."""
        family = body.get("address_family")
        with self._lock:
            device = self._session_device(device_id)
            if family not in BGP_FAMILIES:
                raise MetalError(422, "address_family is required (ipv4 or ipv6)")
            bgp = self.projects[device.project_id].bgp
            if bgp is None or bgp.status != "enabled":
                raise MetalError(422, f"BGP is not enabled on project {device.project_id}")
            if any(s.family == family for s in self._sessions_of(device_id)):
                raise MetalError(422, f"Device {device_id} already has session for address family {family}")
            if self._bgp_address(device_id, family) is None:
                which = "private IPv4" if family == "ipv4" else "IPv6"
                raise MetalError(422, f"Device {device_id} has no {which} address for a BGP session")
            session = self._add_bgp_session(device_id, str(family), bool(body.get("default_route", False)))
            return self.bgp_session_json(session)

    def find_ip_reservations(self, project_id: str, query: Mapping[str, Any],
                             raw_query: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """The spec has no `page` here (only `per_page`, default 250); a `page` is honoured as the API's generic
        pagination would, and meta.next says when there is more."""
        with self._lock:
            self._project(project_id, api=True)
            types = query.get("types")
            found = [r for r in self.reservations.values()
                     if r.project_id == project_id and (not types or r.type in types)]
            page, meta = _paginate(found, query, raw_query, f"{BASE}/projects/{project_id}/ips")
            include = "assignments" in query.get("include", ())
            return {"ip_addresses": [self.reservation_json(r, include) for r in page], "meta": meta}

    def find_ip(self, ip_id: str, query: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock:
            if ip_id in self.assignments:
                return self.assignment_json(self.assignments[ip_id])
            if ip_id in self.reservations:
                return self.reservation_json(self.reservations[ip_id], "assignments" in query.get("include", ()))
            raise MetalError(404, "Not found")

    def create_ip_assignment(self, device_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Assign an address of the device's project. Undocumented cases, decided here (see metalapi.py):
        already on this device → 422; on another device → 422 unless the reservation is global_ipv4 (anycast)."""
        address = str(body["address"])
        with self._lock:
            device = self._device(device_id, api=True)
            try:
                ip, network = _parse_network(address)
            except ValueError as exc:
                raise MetalError(422, f"Address {exc}") from None
            reservation = self._reservation_for(network, device.project_id)
            if reservation is None or reservation.management:
                raise MetalError(422, f"Address {network} is not available in this project")
            for a in self.assignments.values():
                if a.reservation_id != reservation.id or not a.network.overlaps(network):
                    continue
                if a.device_id == device_id:
                    raise MetalError(422, f"Address {network} is already assigned to this device")
                if reservation.type != "global_ipv4":
                    raise MetalError(422, f"Address {network} is already assigned to another device")
            return self.assignment_json(self._add_assignment(reservation.id, device_id, ip, network))

    def delete_ip(self, ip_id: str) -> None:
        """An assignment id unassigns; a reservation id deletes the block (and, here, its assignments with it)."""
        with self._lock:
            if ip_id in self.assignments:
                del self.assignments[ip_id]
                return
            if ip_id not in self.reservations:
                raise MetalError(404, "Not found")
            for a in [a for a in self.assignments.values() if a.reservation_id == ip_id]:
                del self.assignments[a.id]
            del self.reservations[ip_id]

    def find_ip_assignments(self, device_id: str) -> dict[str, Any]:
        with self._lock:
            self._device(device_id, api=True)
            return {"ip_addresses": [self.assignment_json(a) for a in self._assignments_of_device(device_id)]}

    # --- rendering (the JSON the API returns; tests replace these to prove the response check) -----------------

    def project_json(self, project: Project) -> dict[str, Any]:
        href = f"{BASE}/projects/{project.id}"
        return {
            "id": project.id, "name": project.name, "href": href, "type": "default",
            "created_at": project.created_at, "updated_at": project.created_at,
            "customdata": {}, "tags": [], "backend_transfer_enabled": False,
            "devices": [{"href": f"{BASE}/devices/{d.id}"} for d in self.devices.values()
                        if d.project_id == project.id],
            "organization": {"href": f"{BASE}/organizations/{project.organization_id}"},
            "bgp_config": {"href": f"{href}/bgp-config"},
            "members": [], "memberships": [], "invitations": [], "ssh_keys": [], "volumes": [],
        }

    def device_json(self, device: Device, include_project: bool = False) -> dict[str, Any]:
        project_href = {"href": f"{BASE}/projects/{device.project_id}"}
        return {
            "id": device.id, "short_id": device.id[:8], "hostname": device.hostname, "description": "",
            "href": f"{BASE}/devices/{device.id}", "state": device.state, "tags": list(device.tags),
            "created_at": device.created_at, "updated_at": device.created_at,
            "locked": False, "always_pxe": False, "billing_cycle": "hourly", "spot_instance": False,
            "network_frozen": False, "customdata": {}, "userdata": "",
            "metro": METRO, "facility": FACILITY, "plan": PLAN, "operating_system": OPERATING_SYSTEM,
            "project": self.project_json(self.projects[device.project_id]) if include_project else project_href,
            "project_lite": project_href,
            "ip_addresses": [self.assignment_json(a) for a in self._assignments_of_device(device.id)],
            "ssh_keys": [], "volumes": [],
        }

    def reservation_json(self, reservation: Reservation, include_assignments: bool = False) -> dict[str, Any]:
        """`assignments` holds full IPAssignments with `include=assignments`, else only their hrefs (the patched
        spec types the items as `Href`, which both satisfy)."""
        href = f"{BASE}/ips/{reservation.id}"
        mine = [a for a in self.assignments.values() if a.reservation_id == reservation.id]
        return {
            "id": reservation.id, "href": href, "type": reservation.type,
            **_network_fields(reservation.network, reservation.network.network_address),
            "public": reservation.type != "private_ipv4", "management": reservation.management,
            "manageable": not reservation.management, "enabled": True,
            "global_ip": reservation.type == "global_ipv4",
            "addon": not reservation.management, "bill": not reservation.management,
            "available": f"{href}/available", "state": "created", "tags": list(reservation.tags),
            "customdata": {}, "created_at": reservation.created_at, "metro": METRO,
            "project": {"href": f"{BASE}/projects/{reservation.project_id}"},
            "project_lite": {"href": f"{BASE}/projects/{reservation.project_id}"},
            "assignments": [self.assignment_json(a) if include_assignments else {"href": f"{BASE}/ips/{a.id}"}
                            for a in mine],
        }

    def bgp_config_json(self, project: Project) -> dict[str, Any]:
        assert project.bgp is not None
        bgp = project.bgp
        sessions = [s for s in self.bgp_sessions.values() if self.devices[s.device_id].project_id == project.id]
        return {
            "id": bgp.id, "href": f"{BASE}/projects/{project.id}/bgp-config", "status": bgp.status,
            "deployment_type": bgp.deployment_type, "asn": bgp.asn, "md5": bgp.md5, "max_prefix": bgp.max_prefix,
            "route_object": "", "ranges": [], "created_at": bgp.created_at, "requested_at": bgp.created_at,
            "project": {"href": f"{BASE}/projects/{project.id}"},
            "sessions": [self.bgp_session_json(s) for s in sessions],
        }

    def bgp_session_json(self, session: BgpSession) -> dict[str, Any]:
        """Status "unknown" per switch (two): nothing here speaks BGP, and the spec says every status starts so."""
        return {
            "id": session.id, "href": f"{BASE}/bgp/sessions/{session.id}", "address_family": session.family,
            "default_route": session.default_route, "status": "unknown,unknown", "learned_routes": [],
            "device": {"href": f"{BASE}/devices/{session.device_id}"},
            "created_at": session.created_at, "updated_at": session.created_at,
        }

    def assignment_json(self, assignment: Assignment) -> dict[str, Any]:
        reservation = self.reservations[assignment.reservation_id]
        parent = reservation.network
        return {
            "id": assignment.id, "href": f"{BASE}/ips/{assignment.id}",
            **_network_fields(assignment.network, assignment.address),
            "public": reservation.type != "private_ipv4", "management": reservation.management,
            "manageable": not reservation.management, "enabled": True,
            "global_ip": reservation.type == "global_ipv4",
            "assigned_to": {"href": f"{BASE}/devices/{assignment.device_id}"},
            "parent_block": {"network": str(parent.network_address), "netmask": str(parent.netmask),
                             "cidr": parent.prefixlen, "href": f"{BASE}/ips/{reservation.id}"},
            "metro": METRO, "created_at": assignment.created_at,
        }

    # --- internals ---------------------------------------------------------------------------------------------

    def _fresh_id(self, fixed_id: str | None) -> str:
        if fixed_id is None:
            return self.new_id()
        canonical = str(uuid.UUID(fixed_id))  # the spec types every id as a UUID
        if canonical in self.projects or canonical in self.devices or canonical in self.reservations:
            raise ValueError(f"id {canonical} is already in use")
        return canonical

    def _project(self, project_id: str, *, api: bool) -> Project:
        """The project; a missing one is the client's 404 in an API call, the caller's KeyError when seeding."""
        project = self.projects.get(project_id)
        if project is None:
            raise MetalError(404, "Not found") if api else KeyError(f"no project {project_id}")
        return project

    def _device(self, device_id: str, *, api: bool) -> Device:
        device = self.devices.get(device_id)
        if device is None:
            raise MetalError(404, "Not found") if api else KeyError(f"no device {device_id}")
        return device

    def _assignments_of_device(self, device_id: str) -> list[Assignment]:
        return [a for a in self.assignments.values() if a.device_id == device_id]

    def _session_device(self, device_id: str) -> Device:
        """The device of a BGP session call. The spec documents no 404 for /devices/{id}/bgp/sessions, only 403,
        so an unknown device is answered 403 (what a device the token cannot see gets)."""
        device = self.devices.get(device_id)
        if device is None:
            raise MetalError(403, "You are not authorized to view this device")
        return device

    def _sessions_of(self, device_id: str) -> list[BgpSession]:
        return [s for s in self.bgp_sessions.values() if s.device_id == device_id]

    def _add_bgp_session(self, device_id: str, family: str, default_route: bool) -> BgpSession:
        session = BgpSession(self.new_id(), device_id, family, default_route, _now())
        self.bgp_sessions[session.id] = session
        return session

    def _bgp_address(self, device_id: str, family: str) -> str | None:
        """The device's own address on a session of `family`: its private management IPv4 or public IPv6."""
        kind = "private_ipv4" if family == "ipv4" else "public_ipv6"
        for a in self._assignments_of_device(device_id):
            reservation = self.reservations[a.reservation_id]
            if reservation.management and reservation.type == kind:
                return str(a.address)
        return None

    def _project_routes(self, project_id: str, family: str) -> list[str]:
        """`routes_in`, "a list of project subnets": the project's own (non-management) blocks of that family."""
        version = 4 if family == "ipv4" else 6
        return [str(r.network) for r in self.reservations.values()
                if r.project_id == project_id and not r.management and r.network.version == version]

    def _reservation_for(self, network: IPNetwork, project_id: str) -> Reservation | None:
        for r in self.reservations.values():
            if r.project_id == project_id and r.network.version == network.version \
                    and network.subnet_of(r.network):  # type: ignore[arg-type]  # versions checked just above
                return r
        return None

    def _reserve(self, project_id: str, network: IPNetwork, type_: str, tags: Iterable[str], *, management: bool,
                 fixed_id: str | None = None) -> str:
        clash = next((r for r in self.reservations.values() if r.network.overlaps(network)), None)
        if clash is not None:
            raise ValueError(f"{network} overlaps reservation {clash.network} ({clash.id})")
        reservation_id = self._fresh_id(fixed_id)
        self.reservations[reservation_id] = Reservation(reservation_id, project_id, network, type_, list(tags),
                                                        management, _now())
        return reservation_id

    def _add_assignment(self, reservation_id: str, device_id: str, address: IPAddress,
                        network: IPNetwork) -> Assignment:
        assignment = Assignment(self.new_id(), reservation_id, device_id, address, network, _now())
        self.assignments[assignment.id] = assignment
        return assignment

    def _free_subnet(self, pools: Sequence[IPNetwork], prefix: int) -> IPNetwork:
        for pool in pools:
            for candidate in pool.subnets(new_prefix=prefix):
                if not any(r.network.overlaps(candidate) for r in self.reservations.values()):
                    return candidate
        raise RuntimeError(f"management address pools {', '.join(map(str, pools))} are exhausted")


def _network_fields(network: IPNetwork, address: IPAddress) -> dict[str, Any]:
    """address/network/netmask/cidr/gateway as Metal shows them: the gateway of a /31 or /32 is its first address."""
    gateway = network.network_address if network.prefixlen >= network.max_prefixlen - 1 else network[1]
    return {"address": str(address), "address_family": network.version, "cidr": network.prefixlen,
            "netmask": str(network.netmask), "network": str(network.network_address), "gateway": str(gateway)}


def _paginate(items: Sequence[Any], query: Mapping[str, Any], raw_query: Sequence[tuple[str, str]],
              path: str) -> tuple[list[Any], dict[str, Any]]:
    """One page and its `Meta`; `next`/`previous` are present only when such a page exists."""
    per_page = int(query.get("per_page") or 10)
    page = int(query.get("page") or 1)
    total = len(items)
    last_page = max(1, math.ceil(total / per_page))
    chosen = list(items[(page - 1) * per_page: page * per_page])

    def href(number: int) -> dict[str, str]:
        pairs = [(k, v) for k, v in raw_query if k not in ("page", "per_page")]
        return {"href": f"{path}?{urlencode([*pairs, ('page', str(number)), ('per_page', str(per_page))])}"}

    meta: dict[str, Any] = {"first": href(1), "last": href(last_page), "self": href(page),
                            "total": total, "current_page": page, "last_page": last_page}
    if page < last_page:
        meta["next"] = href(page + 1)
    if 1 < page <= last_page + 1:
        meta["previous"] = href(min(page - 1, last_page))
    return chosen, meta
