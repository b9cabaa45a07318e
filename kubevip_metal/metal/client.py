"""A small Metal API client over the official SDK (`equinix.services.metalv1`, equinix 0.19.0, imported lazily).

Only the calls the daemon needs, each with a timeout and retries (`retry.call`). The SDK's own urllib3
retries are off so that waits are ours and honour Retry-After. The token goes into the SDK's configuration
and nowhere else: errors and logs carry the operation and the HTTP status, never a header or a body (the one
exception: a refused BGP session carries the API's own `errors` text, which says why, e.g. "already has session").
Answers come back as small frozen dataclasses, not SDK models, so nothing outside this module depends on the SDK;
a BGP MD5 password is a `Secret` from the moment it is read, so no repr, log line or error can show it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generic.logfmt import get_logger
from generic.secret import Secret
from kubevip_metal.metal.retry import MetalApiError, call, describe_error

log = get_logger("kubevip_metal.metal")

TIMEOUT = (3.0, 10.0)  # connect, read
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}  # the API's address_family spellings for sessions (neighbours use 4 / 6)
_MAX_REASON = 200


@dataclass(frozen=True)
class Device:
    id: str
    hostname: str


@dataclass(frozen=True)
class Reservation:
    id: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    cidr: int
    assignments: tuple[tuple[str, str], ...]  # (assignment id, device id)


@dataclass(frozen=True)
class ProjectBgpConfig:
    """A project's BGP configuration (findBgpConfigByProject). `status`: requested | enabled | disabled."""

    id: str
    status: str
    deployment_type: str | None
    asn: int | None
    md5: Secret | None
    max_prefix: int | None


@dataclass(frozen=True)
class BgpSession:
    """One BGP session of a device: its address family (4 or 6) and the API's status text."""

    id: str
    family: int
    status: str | None


@dataclass(frozen=True)
class BgpNeighbor:
    """What Metal says a device's BGP speaker must peer with for one address family: the routers (`peer_ips`, all
    in `peer_as`), this device's own AS and address on the sessions, the MD5 password if the project has one."""

    family: int
    peer_as: int
    peer_ips: tuple[IPAddress, ...]
    customer_as: int
    customer_ip: IPAddress
    md5: Secret | None
    multihop: bool


class _Refused(Exception):
    """An SDK error whose `reason` is the API's own error text: `retry.call` puts the reason in its message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _api_reason(exc: Any) -> str:
    """The `Error` body's messages on one short line, else the HTTP reason; never a header."""
    data = getattr(exc, "data", None)
    messages = [*(getattr(data, "errors", None) or []), getattr(data, "error", None)]
    text = "; ".join(str(m) for m in messages if m) or str(getattr(exc, "reason", "") or "")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "…"


def _neighbor(n: Any) -> BgpNeighbor:
    """A BgpNeighborData, checked: every field the speaker needs must be there (the spec makes none required)."""
    try:
        family, peer_as, customer_as = int(n.address_family), int(n.peer_as), int(n.customer_as)
        peer_ips = tuple(ipaddress.ip_address(ip) for ip in (n.peer_ips or []))
        customer_ip = ipaddress.ip_address(n.customer_ip)
    except (TypeError, ValueError) as exc:
        raise MetalApiError(f"get BGP neighbors: an incomplete neighbour ({exc})") from None
    if family not in _FAMILY_NAMES or not peer_ips:
        raise MetalApiError(f"get BGP neighbors: a neighbour of address family {family} with "
                            f"{len(peer_ips)} peer addresses")
    password = n.md5_password if n.md5_enabled and n.md5_password else None
    if n.md5_enabled and password is None:
        log.warning("metal.bgp_md5_missing", family=family, detail="md5_enabled without a password")
    return BgpNeighbor(family, peer_as, peer_ips, customer_as, customer_ip,
                       Secret(password) if password else None, bool(n.multihop))


def _last(href: str | None) -> str:
    return (href or "").rstrip("/").rsplit("/", 1)[-1]


class MetalClient:
    """The Metal API calls of kube-vip-metal, retried and timed out."""

    def __init__(self, token: Secret, api_url: str, *, sleep: Callable[[float], None] = time.sleep,
                 attempts: int = 6) -> None:
        from equinix.services import metalv1

        self._m: Any = metalv1
        configuration = metalv1.Configuration(host=api_url)
        configuration.api_key["x_auth_token"] = token.reveal()
        configuration.retries = False
        self._api = metalv1.ApiClient(configuration)
        self._sleep, self._attempts = sleep, attempts
        self.calls = 0  # HTTP requests made (including retries), for benchmarks

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        def counted() -> Any:
            self.calls += 1
            return fn()

        def on_retry(op: str, exc: BaseException, wait: float) -> None:
            log.warning("metal.retry", operation=op, error=describe_error(exc), wait=round(wait, 3))

        return call(operation, counted, attempts=self._attempts, sleep=self._sleep, on_retry=on_retry)

    # -- projects and devices -----------------------------------------------------------------------------

    def project_id_by_name(self, name: str) -> str:
        """Exactly one project with this exact name, else a clear error."""
        projects = self._call("find projects", lambda: self._m.ProjectsApi(self._api).find_projects_all_pages(
            name=name, _request_timeout=TIMEOUT))
        matches = [p.id for p in (projects.projects or []) if p.name == name]
        if len(matches) != 1:
            raise MetalApiError(f'project "{name}": {"no" if not matches else len(matches)} projects with that name')
        return str(matches[0])

    def devices(self, project_id: str) -> list[Device]:
        found = self._call("list devices", lambda: self._m.DevicesApi(self._api).find_project_devices_all_pages(
            project_id, per_page=100, _request_timeout=TIMEOUT))
        return [Device(str(d.id), str(d.hostname or "")) for d in (found.devices or [])]

    def device(self, device_id: str) -> Device:
        d = self._call("get device", lambda: self._m.DevicesApi(self._api).find_device_by_id(
            device_id, _request_timeout=TIMEOUT))
        return Device(str(d.id), str(d.hostname or ""))

    # -- BGP ----------------------------------------------------------------------------------------------

    def project_bgp_config(self, project_id: str) -> ProjectBgpConfig | None:
        """The project's BGP configuration; None when it never had one (the API answers an empty object)."""
        found = self._call("get project BGP config", lambda: self._m.BGPApi(self._api).find_bgp_config_by_project(
            project_id, _request_timeout=TIMEOUT))
        if not found.id:
            return None
        return ProjectBgpConfig(str(found.id), str(found.status or ""), found.deployment_type,
                                None if found.asn is None else int(found.asn),
                                Secret(found.md5) if found.md5 else None,
                                None if found.max_prefix is None else int(found.max_prefix))

    def bgp_sessions(self, device_id: str) -> list[BgpSession]:
        found = self._call("list BGP sessions", lambda: self._m.DevicesApi(self._api).find_bgp_sessions(
            device_id, _request_timeout=TIMEOUT))
        families = {name: number for number, name in _FAMILY_NAMES.items()}
        return [BgpSession(str(s.id), families[s.address_family], s.status) for s in (found.bgp_sessions or [])
                if s.address_family in families]

    def create_bgp_session(self, device_id: str, family: int) -> BgpSession:
        """A session of `family` (4 or 6). A 422 carries the API's reason ("already has session", "not enabled"):
        the caller decides, after re-reading the sessions, whether it is a race it lost or a real refusal."""
        body = self._m.BGPSessionInput(address_family=_FAMILY_NAMES[family])

        def create() -> Any:
            try:
                return self._m.DevicesApi(self._api).create_bgp_session(device_id, body, _request_timeout=TIMEOUT)
            except self._m.ApiException as exc:
                if exc.status == 422:
                    raise _Refused(422, _api_reason(exc)) from None
                raise

        created = self._call("create BGP session", create)
        return BgpSession(str(created.id), family, created.status)

    def bgp_neighbors(self, device_id: str) -> list[BgpNeighbor]:
        """Every neighbour the API reports for the device (one per session while project BGP is enabled)."""
        data = self._call("get BGP neighbors", lambda: self._m.DevicesApi(self._api).get_bgp_neighbor_data(
            device_id, _request_timeout=TIMEOUT))
        return [_neighbor(n) for n in (data.bgp_neighbors or [])]

    # -- Elastic IPs --------------------------------------------------------------------------------------

    def reservation(self, project_id: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Reservation:
        """The project's reservation holding `address` and who it is assigned to now."""
        listing = self._call("list IP reservations", lambda: self._m.IPAddressesApi(self._api).find_ip_reservations(
            project_id, include=["assignments"], per_page=1000, _request_timeout=TIMEOUT))
        for item in listing.ip_addresses or []:
            reservation = getattr(item, "actual_instance", item)
            if getattr(reservation, "address", None) is None:
                continue
            try:
                network = ipaddress.ip_network(f"{reservation.address}/{reservation.cidr or 32}", strict=False)
            except ValueError:
                continue
            if address in network:
                assignments = tuple(self._assignment(_last(a.href)) for a in (reservation.assignments or []))
                return Reservation(str(reservation.id), address, int(reservation.cidr or 32), assignments)
        raise MetalApiError(f"{address} is not an IP reservation of project {project_id}", 404)

    def _assignment(self, assignment_id: str) -> tuple[str, str]:
        found = self._call("get IP assignment", lambda: self._m.IPAddressesApi(self._api).find_ip_address_by_id(
            assignment_id, _request_timeout=TIMEOUT))
        assignment = getattr(found, "actual_instance", found)
        return assignment_id, _last(getattr(getattr(assignment, "assigned_to", None), "href", None))

    def assign(self, device_id: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: int) -> str:
        body = self._m.IPAssignmentInput(address=f"{address}/{cidr}")
        created = self._call("assign IP", lambda: self._m.DevicesApi(self._api).create_ip_assignment(
            device_id, body, _request_timeout=TIMEOUT))
        return str(created.id)

    def unassign(self, assignment_id: str) -> None:
        try:
            self._call("unassign IP", lambda: self._m.IPAddressesApi(self._api).delete_ip_address(
                assignment_id, _request_timeout=TIMEOUT))
        except MetalApiError as exc:
            if exc.status != 404:  # already gone: what we wanted
                raise
