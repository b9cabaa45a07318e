"""A small Metal API client over the official SDK (`equinix.services.metalv1`, equinix 0.19.0, imported lazily).

Only the calls the daemon needs, each with a timeout and retries (`retry.call`). The SDK's own urllib3
retries are off so that waits are ours and honour Retry-After. The token goes into the SDK's configuration
and nowhere else: errors and logs carry the operation and the HTTP status, never a header or a body.
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

    def bgp_neighbors(self, device_id: str) -> list[Any]:
        data = self._call("get BGP neighbors", lambda: self._m.DevicesApi(self._api).get_bgp_neighbor_data(
            device_id, _request_timeout=TIMEOUT))
        return list(data.bgp_neighbors or [])

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
