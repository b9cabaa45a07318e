"""The emulated Equinix Metal account: projects, devices, IP reservations and assignments, and their JSON.

An Elastic IP move is three calls on this state (find the reservation, delete the old assignment, create the new
one), so the state keeps exactly what those calls touch and renders it the way the API does: hrefs relative to
`/metal/v1`, nested objects as `{"href": ...}` unless `include`d, management addresses on every device.

Every device gets two management addresses, as on Metal: a public IPv4 /31 (203.0.113.0/24, then 192.0.2.0/24)
and a private IPv4 /31 (10.70.0.0/16), each in its own management reservation of the device's project; the device
holds the odd address, the even one is the gateway. They show in `GET /projects/{id}/ips` like real management
blocks, so a client that picks "the first public_ipv4 reservation" instead of the tagged EIP is caught.

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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

__all__ = ["BASE", "MetalError", "MetalState", "NotEmulated", "typical_bgp_neighbor"]

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
class Project:
    id: str
    name: str
    organization_id: str
    created_at: str


@dataclass
class Device:
    id: str
    project_id: str
    hostname: str
    state: str
    tags: list[str]
    created_at: str
    bgp_neighbors: list[dict[str, Any]] = field(default_factory=list)


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
                         md5_password: str | None = None, routes_in: Sequence[str] = ()) -> dict[str, Any]:
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
        "routes_out": [],
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
                   tags: Sequence[str] = (), management: bool = True) -> str:
        """A provisioned device; `management` gives it a public and a private management /31, as Metal does."""
        with self._lock:
            self._project(project_id, api=False)
            device_id = self._fresh_id(fixed_id)
            self.devices[device_id] = Device(device_id, project_id, hostname, state, list(tags), _now())
            if management:
                for pools, kind in ((_PUBLIC_MANAGEMENT_POOLS, "public_ipv4"),
                                    ((_PRIVATE_MANAGEMENT_POOL,), "private_ipv4")):
                    network = self._free_slash31(pools)
                    reservation_id = self._reserve(project_id, network, kind, (), management=True)
                    self._add_assignment(reservation_id, device_id, network[1], network)
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

    def set_bgp_neighbors(self, device_id: str, neighbors: Sequence[Mapping[str, Any]]) -> None:
        """The `BgpNeighborData` list the device reports (see `typical_bgp_neighbor`); empty means BGP is off."""
        with self._lock:
            self._device(device_id, api=False).bgp_neighbors = [dict(n) for n in neighbors]

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
                "devices": [{"id": d.id, "hostname": d.hostname, "state": d.state}
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
                           "devices": [{"hostname": "n1", "id": "...", "bgp_neighbors": [...] }],
                           "reservations": [{"address": "198.51.100.200/32", "tags": ["eip"],
                                             "assigned_to": "n1"}]}]}
        """
        if not isinstance(doc, Mapping) or not isinstance(doc.get("projects", []), list):
            raise ValueError('a seed document is {"projects": [...]}')
        ids: dict[str, Any] = {"projects": {}}
        for project in doc.get("projects", []):
            project_id = self.add_project(str(project["name"]), fixed_id=project.get("id"))
            devices: dict[str, str] = {}
            for device in project.get("devices", []):
                hostname = str(device["hostname"])
                devices[hostname] = self.add_device(project_id, hostname, fixed_id=device.get("id"),
                                                    tags=device.get("tags", ()))
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
        with self._lock:
            return {"bgp_neighbors": [dict(n) for n in self._device(device_id, api=True).bgp_neighbors]}

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

    def _free_slash31(self, pools: Sequence[IPNetwork]) -> IPNetwork:
        for pool in pools:
            for candidate in pool.subnets(new_prefix=31):
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
