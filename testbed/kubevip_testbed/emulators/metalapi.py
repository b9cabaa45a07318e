"""An Equinix Metal API emulator that the official `equinix` SDK (metalv1) talks to over real HTTP, and that holds
both sides to the official OpenAPI spec.

Equinix Metal was shut down on 2026-06-30, so there is no live API left to test the EIP mover against; this emulator
stands in for it. A fake that answers what its author believes would only test that belief, so every request is
checked against the spec the `equinix` 0.19.0 SDK was generated from (`openapi3.patched.yaml`, via openapi-core;
see metalapi_contract) and so is every response. A client request that breaks the spec is answered 422 (or 400/404/
405) and recorded in `violations`; an emulator response that breaks it is recorded too. Tests call
`assert_no_violations()` at teardown, so a wrong field fails a test instead of teaching the client a fiction.

Honoured (base path `/metal/v1`; the SDK is configured with `Configuration(host=f"{url}/metal/v1")`):
- GET /projects (findProjects: exact `name` filter, `page`/`per_page` and `meta`), GET /projects/{id};
- GET /projects/{id}/bgp-config (findBgpConfigByProject): `{}` while the project never had BGP ("When BGP
  configuration is not enabled empty structure is returned"), else the BgpConfig (status, deployment_type, asn, md5
  or null, max_prefix 10, the project's sessions), `status: disabled` after `disable_project_bgp`;
- GET /projects/{id}/devices (findProjectDevices: partial `hostname` filter, `tag`, `page`/`per_page` with
  meta.first/last/self/next/previous/total/current_page/last_page; `include=project`), GET /devices/{id};
- GET /devices/{id}/bgp/sessions (findBgpSessions), POST /devices/{id}/bgp/sessions (createBgpSession, 201
  BgpSession with status "unknown,unknown": nothing here speaks BGP, and the spec says every status starts there);
- GET /devices/{id}/bgp/neighbors: one BgpNeighborData per session of the device while the project's BGP is enabled
  (none without a session, none while BGP is disabled), IPv4 first: peer_as 65530, peer_ips 169.254.255.1 and .2
  (the spec's example) or, for IPv6, fc00:0000:0000:0000:0000:0000:0000:000e and ...:000f, written out in full
  (the spec gives no IPv6 peers; these are Metal's recorded answers in packethost/network-helpers routers/test_data,
  which also show an IPv6 session's customer_ip to be the device's public IPv6); customer_as = the project ASN;
  customer_ip = the device's private management IPv4 ("typically the private bond0 address", the spec says) or its
  public IPv6 management address (`add_device(..., ipv6=True)`); md5_enabled/md5_password from the project (""
  when none: the field is a non-nullable string); multihop true; routes_in = the project's non-management blocks of
  that family; routes_out = the default route when the session asked for it. `set_bgp_neighbors` overrides all of
  this for one device (tests that need shapes Metal never derives), `set_bgp_neighbors(id, None)` undoes it;
- GET /projects/{id}/ips (findIPReservations: `types`, `include=assignments` for full assignments instead of
  hrefs, `per_page` default 250; management /31s are listed too, as on Metal);
- GET /ips/{id} (an assignment or a reservation), DELETE /ips/{id} (an assignment: unassign, 204; a reservation:
  delete it and its assignments, 204), GET /devices/{id}/ips, POST /devices/{id}/ips (201 IPAssignment);
- auth: `X-Auth-Token` must equal the token, else 401 with an Error body (a refused request is not checked
  further); unknown ids are 404 `{"error": ...}`;
- faults (`set_fault`, or POST /_emulator/faults): latency, the next N requests answered 429 (Retry-After,
  X-RateLimit-Limit/-Remaining/-Reset) or 5xx, or dropped with a TCP reset; a seeded 429 rate; "down" (every
  request reset). Faults act before authentication and validation, like a load balancer in front of the API;
- a request log (method, path, status, arrival time; 0 = dropped) with counts per operationId.

Undocumented behaviour, decided here (the spec and Equinix's docs are silent; all answers are deterministic):
- a second BGP session of the same family on a device: 422 `{"errors": ["Device <id> already has session for
  address family ipv4"]}`. The CCM (metal/bgp.go) treats a 422 containing "already has session" as "exists" and
  says "this really should be a 409, but 422 is what is returned"; the rest of the wording is ours. Clients should
  re-read the sessions rather than match the text;
- a BGP session while the project's BGP is not enabled (never, disabled, or a global request still under review):
  422 "BGP is not enabled on project <id>"; a session body without `address_family` (the spec makes it optional
  and documents no default): 422 "address_family is required (ipv4 or ipv6)", so no client depends on a guess;
- an IPv4 session for a device without a private management address, or an IPv6 one without an IPv6 management
  address: 422 "Device <id> has no private IPv4|IPv6 address for a BGP session" (Metal runs BGP over those);
- GET or POST /devices/{id}/bgp/sessions for an unknown device: 403 `{"error": ...}`, because the spec documents
  401/403 (and 422 on POST) there but no 404;
- assigning an address that is already assigned to that same device: 422 `{"errors": ["Address <cidr> is already
  assigned to this device"]}`. The API refused duplicates on every other resource in the same way (e.g. 422
  "already has session" for BGP sessions), and an EIP routes to one next hop, so a second identical assignment
  cannot exist; clients must treat it as "already done" after re-reading the reservation;
- assigning an address held by another device: 422 as well (a public_ipv4 EIP routes to one device; the CCM and
  kube-vip both unassign before assigning), except global_ipv4 reservations (anycast), which take several;
- an address outside every non-management reservation of the device's project: 422 "not available";
- deleting a reservation that still has assignments removes them with it (the spec documents no 422 there);
- a valid request the emulator does not implement (another operation, or an unsupported device filter such as
  `search`) is answered 501 and recorded as a violation, so a test cannot pass on an unemulated call.

Not emulated: every other operation (devices are created with `add_device`, reservations with `add_reservation`,
project BGP with `enable_project_bgp` / `disable_project_bgp`, out-of-band sessions with `add_bgp_session`; so
requestBgpConfig, deleteBgpSession and updateBgpSession are 501); `exclude` (ignored), `include` beyond
`assignments` and `project`; TLS; rate-limit accounting (the headers appear only on injected 429s); the minutes an
EIP move takes on Metal (assignments change at once; add `latency` to slow the calls); global BGP ranges and its
review (a `status="requested"` config stays so until changed); BGP session state (always "unknown"); IPv6
management addresses unless asked for, VRFs, Metal Gateways, metros other than one fixed metro ("da").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from generic.logfmt import LogFormat, configure, get_logger
from kubevip_testbed.emulators.metalapi_contract import Contract, RequestCheck, load_contract
from kubevip_testbed.emulators.metalapi_faults import (
    Action,
    FaultError,
    FaultState,
    MetalFault,
    RequestLog,
    RequestRecord,
)
from kubevip_testbed.emulators.metalapi_state import BASE, MetalError, MetalState, NotEmulated, typical_bgp_neighbor
from kubevip_testbed.emulators.server_thread import ServerThread, listen_address, serve_command

__all__ = ["BASE", "FaultError", "MetalApiEmulator", "MetalEmulatorThread", "MetalFault", "main",
           "typical_bgp_neighbor"]

log = get_logger(__name__)

CONTROL_PREFIX = "/_emulator/"
_MAX_BODY = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Operation:
    """One served operation: its method, its path template relative to /metal/v1 and the spec's operationId."""

    method: str
    template: str
    operation_id: str


OPERATIONS = (
    Operation("GET", "/projects", "findProjects"),
    Operation("GET", "/projects/{id}", "findProjectById"),
    Operation("GET", "/projects/{id}/devices", "findProjectDevices"),
    Operation("GET", "/projects/{id}/ips", "findIPReservations"),
    Operation("GET", "/projects/{id}/bgp-config", "findBgpConfigByProject"),
    Operation("GET", "/devices/{id}", "findDeviceById"),
    Operation("GET", "/devices/{id}/bgp/neighbors", "getBgpNeighborData"),
    Operation("GET", "/devices/{id}/bgp/sessions", "findBgpSessions"),
    Operation("POST", "/devices/{id}/bgp/sessions", "createBgpSession"),
    Operation("GET", "/devices/{id}/ips", "findIPAssignments"),
    Operation("POST", "/devices/{id}/ips", "createIPAssignment"),
    Operation("GET", "/ips/{id}", "findIPAddressById"),
    Operation("DELETE", "/ips/{id}", "deleteIPAddress"),
)


@dataclass(frozen=True)
class Call:
    """A request the spec accepted, parsed: path and query parameters (defaults applied) and the JSON body."""

    path: Mapping[str, str]
    query: Mapping[str, Any]
    raw_query: list[tuple[str, str]]
    body: Any


def _json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(doc, separators=(",", ":")).encode(), status=status,
                        content_type="application/json", headers=headers)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


class MetalApiEmulator:
    """The emulated Metal API: an account (`state`), faults, a request log and the contract check."""

    def __init__(self, token: str, *, spec_path: Path | None = None, seed: int = 0, validate: bool | None = True,
                 control: bool = True) -> None:
        """`validate=False` skips the spec (no openapi-core needed: the lab's runtime install); None validates when
        openapi-core and the spec are both available and says so in the log otherwise; `control=False` hides
        /_emulator/."""
        if not token:
            raise ValueError("the emulator needs a non-empty token")
        self._token = token.encode()
        self._control = control
        self.state = MetalState(seed)
        self._faults = FaultState(seed)
        self._log = RequestLog()
        self._violations_lock = threading.Lock()
        self.violations: list[str] = []
        self.contract: Contract | None = None
        if validate or validate is None:
            try:
                self.contract = load_contract(spec_path)
            except (RuntimeError, FileNotFoundError) as exc:
                if validate:
                    raise
                log.warning("metal_api.unvalidated", reason=str(exc))
        self._serve_by_id: dict[str, Callable[[Call], tuple[int, Any]]] = {
            "findProjects": lambda c: (200, self.state.find_projects(c.query, c.raw_query)),
            "findProjectById": lambda c: (200, self.state.find_project(c.path["id"])),
            "findProjectDevices": lambda c: (200, self.state.find_project_devices(c.path["id"], c.query,
                                                                                  c.raw_query)),
            "findIPReservations": lambda c: (200, self.state.find_ip_reservations(c.path["id"], c.query,
                                                                                  c.raw_query)),
            "findDeviceById": lambda c: (200, self.state.find_device(c.path["id"], c.query)),
            "getBgpNeighborData": lambda c: (200, self.state.bgp_neighbors(c.path["id"])),
            "findBgpConfigByProject": lambda c: (200, self.state.find_bgp_config(c.path["id"])),
            "findBgpSessions": lambda c: (200, self.state.find_bgp_sessions(c.path["id"])),
            "createBgpSession": lambda c: (201, self.state.create_bgp_session(c.path["id"], c.body or {})),
            "findIPAssignments": lambda c: (200, self.state.find_ip_assignments(c.path["id"])),
            "createIPAssignment": lambda c: (201, self.state.create_ip_assignment(c.path["id"], c.body)),
            "findIPAddressById": lambda c: (200, self.state.find_ip(c.path["id"], c.query)),
            "deleteIPAddress": self._delete_ip,
        }
        if self.contract is not None:
            for op in OPERATIONS:  # the route table and the spec must agree, or every count is mislabelled
                found = self.contract.operation_id(op.method, op.template)
                if found != op.operation_id:
                    raise RuntimeError(f"{op.method} {op.template} is {found!r} in {self.contract.path}, "
                                       f"not {op.operation_id!r}")
        self._runner: web.AppRunner | None = None
        self.urls: list[str] = []

    # --- seeding and inspection (any thread) -------------------------------------------------------------------

    def add_project(self, name: str, *, fixed_id: str | None = None) -> str:
        return self.state.add_project(name, fixed_id=fixed_id)

    def add_device(self, project_id: str, hostname: str, *, fixed_id: str | None = None, state: str = "active",
                   tags: Sequence[str] = (), management: bool = True, ipv6: bool = False,
                   private_ipv4: str | None = None, public_ipv6: str | None = None) -> str:
        """A device with (by default) its public and private management /31s, and with `ipv6` a public IPv6
        management /127; `private_ipv4` / `public_ipv6` fix those addresses; returns its id."""
        return self.state.add_device(project_id, hostname, fixed_id=fixed_id, state=state, tags=tags,
                                     management=management, ipv6=ipv6, private_ipv4=private_ipv4,
                                     public_ipv6=public_ipv6)

    def add_reservation(self, project_id: str, address: str, tags: Iterable[str] = (), *,
                        type_: str = "public_ipv4", fixed_id: str | None = None) -> str:
        return self.state.add_reservation(project_id, address, tags, type_=type_, fixed_id=fixed_id)

    def set_bgp_neighbors(self, device_id: str, neighbors: Sequence[Mapping[str, Any]] | None) -> None:
        """Serve these neighbours for the device instead of the derived ones; None derives them again."""
        self.state.set_bgp_neighbors(device_id, neighbors)

    def enable_project_bgp(self, project_id: str, *, asn: int = 65000, md5: str | None = None,
                           deployment_type: str = "local", status: str = "enabled") -> None:
        """BGP on the project, as `metal project bgp-enable` would leave it (see MetalState.enable_project_bgp)."""
        self.state.enable_project_bgp(project_id, asn=asn, md5=md5, deployment_type=deployment_type, status=status)
        log.info("metal_api.bgp_enabled", project=project_id, asn=asn, md5=md5 is not None, status=status)

    def disable_project_bgp(self, project_id: str) -> None:
        self.state.disable_project_bgp(project_id)
        log.info("metal_api.bgp_disabled", project=project_id)

    def add_bgp_session(self, device_id: str, family: str = "ipv4", *, default_route: bool = False) -> str:
        """A session made out of band (the CCM, a person); returns its id."""
        return self.state.add_bgp_session(device_id, family, default_route=default_route)

    def assignments_of(self, address: str) -> list[str]:
        """The device ids that hold `address` now."""
        return self.state.assignments_of(address)

    def assign(self, address: str, device_id: str, *, exclusive: bool = True) -> str:
        """An out-of-band move (by hand, not through the API); returns the assignment id."""
        assignment_id = self.state.assign(address, device_id, exclusive=exclusive)
        log.info("metal_api.assigned_by_hand", address=address, device=device_id, exclusive=exclusive)
        return assignment_id

    def unassign_all(self, address: str) -> int:
        removed = self.state.unassign_all(address)
        log.info("metal_api.unassigned_by_hand", address=address, removed=removed)
        return removed

    def seed(self, doc: Any) -> dict[str, Any]:
        """Load a seed document (see `MetalState.seed`); returns the ids by project name, hostname and address."""
        return self.state.seed(doc)

    def requests(self) -> list[tuple[str, str, int, float]]:
        """Every API request so far: (method, path, status, monotonic arrival time); status 0 = dropped."""
        return [(r.method, r.path, r.status, r.time) for r in self._log.records()]

    def request_records(self) -> list[RequestRecord]:
        """As `requests()`, with the operationId of each."""
        return self._log.records()

    def request_counts(self) -> dict[str, int]:
        """Requests per operationId; "unknown" for requests that named no served operation."""
        return self._log.counts()

    def reset_requests(self) -> None:
        self._log.reset()

    def take_violations(self) -> list[str]:
        """The violations so far, forgetting them (for tests that provoke one on purpose)."""
        with self._violations_lock:
            taken = list(self.violations)
            self.violations.clear()
            return taken

    def assert_no_violations(self) -> None:
        with self._violations_lock:
            found = list(self.violations)
        if found:
            raise AssertionError(f"{len(found)} Metal API contract violation(s):\n" + "\n".join(found))

    # --- faults (any thread) -----------------------------------------------------------------------------------

    def set_fault(self, *, latency: float = 0.0, fail_next: int = 0, fail_status: int = 429,
                  retry_after: float | None = 1.0, rate_429: float = 0.0, reset: bool = False,
                  down: bool = False) -> None:
        """Replace the fault in force (see metalapi_faults.MetalFault); raises FaultError for impossible values."""
        fault = MetalFault(latency, fail_next, fail_status, retry_after, rate_429, reset, down)
        self._faults.set(fault)
        log.info("metal_api.fault_set", **fault.to_json())

    def clear_fault(self) -> None:
        self._faults.set(MetalFault())
        log.info("metal_api.fault_cleared")

    def fault(self) -> MetalFault:
        return self._faults.get()

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
                    sockets: Sequence[socket.socket] = ()) -> list[str]:
        """Serve on `listen` (port 0 picks one) and on pre-bound `sockets`; the base URLs, without /metal/v1."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        bound: list[socket.socket] = []
        try:
            for host, port in listen:
                family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
                bound.append(socket.create_server((host, port), family=family, backlog=128))
        except OSError:
            for sock in bound:
                sock.close()
            raise
        runner = web.AppRunner(self._app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        all_sockets = [*bound, *sockets]
        for sock in all_sockets:
            await web.SockSite(runner, sock).start()
        self.urls = [_url(sock) for sock in all_sockets]
        log.info("metal_api.started", urls=self.urls, validated=self.contract is not None)
        return list(self.urls)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("metal_api.stopped", urls=self.urls, requests=len(self._log.records()),
                     violations=len(self.violations))

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        if self._control:
            app.router.add_get(CONTROL_PREFIX + "faults", self._control_get_fault)
            app.router.add_post(CONTROL_PREFIX + "faults", self._control_set_fault)
            app.router.add_delete(CONTROL_PREFIX + "faults", self._control_clear_fault)
            app.router.add_get(CONTROL_PREFIX + "requests", self._control_requests)
            app.router.add_delete(CONTROL_PREFIX + "requests", self._control_reset_requests)
            app.router.add_get(CONTROL_PREFIX + "violations", self._control_violations)
            app.router.add_delete(CONTROL_PREFIX + "violations", self._control_take_violations)
            app.router.add_get(CONTROL_PREFIX + "state", self._control_state)
        for op in OPERATIONS:
            app.router.add_route(op.method, BASE + op.template, self._endpoint(op))
        app.router.add_route("*", "/{tail:.*}", self._endpoint(None))  # judged by the spec, then 404/405/501
        return app

    # --- HTTP control endpoint (no token, like the Kubernetes emulator's) --------------------------------------

    async def _control_get_fault(self, request: web.Request) -> web.Response:
        return _json_response(self._faults.get().to_json())

    async def _control_set_fault(self, request: web.Request) -> web.Response:
        try:
            fault = MetalFault.from_json(json.loads(await request.read() or b"{}"))
        except (ValueError, FaultError) as exc:  # json.JSONDecodeError is a ValueError
            return _json_response({"error": str(exc)}, 400)
        self._faults.set(fault)
        log.info("metal_api.fault_set", **fault.to_json())
        return _json_response(fault.to_json())

    async def _control_clear_fault(self, request: web.Request) -> web.Response:
        self.clear_fault()
        return _json_response(MetalFault().to_json())

    async def _control_requests(self, request: web.Request) -> web.Response:
        return _json_response({"counts": self._log.counts(),
                               "requests": [[r.method, r.path, r.status, r.time, r.operation]
                                            for r in self._log.records()]})

    async def _control_reset_requests(self, request: web.Request) -> web.Response:
        self._log.reset()
        return _json_response({})

    async def _control_violations(self, request: web.Request) -> web.Response:
        with self._violations_lock:
            return _json_response({"violations": list(self.violations)})

    async def _control_take_violations(self, request: web.Request) -> web.Response:
        return _json_response({"violations": self.take_violations()})

    async def _control_state(self, request: web.Request) -> web.Response:
        return _json_response(self.state.snapshot())

    # --- the API -----------------------------------------------------------------------------------------------

    def _endpoint(self, op: Operation | None) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, op)
        return handle

    async def _handle(self, request: web.Request, op: Operation | None) -> web.StreamResponse:
        """Faults, then the token, then the request check, then the operation, then the response check."""
        arrived = time.monotonic()
        name = op.operation_id if op is not None else ""
        action, fault = self._faults.decide()
        if action is Action.DROP and fault.down:
            return self._drop(request, arrived, name)
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if action is Action.DROP:
            return self._drop(request, arrived, name)
        if action is Action.FAIL:
            return self._record(request, arrived, name, self._fault_response(fault))
        body = await request.read()
        authorised = hmac.compare_digest(request.headers.get("X-Auth-Token", "").encode(), self._token)
        check = self._check_request(request, body, op) if authorised or self.contract is not None else None
        if not authorised:
            response = _json_response({"error": "Invalid authentication token"}, 401)
            if check is not None and op is not None and check.status not in (404, 405):
                self._check_response(request, check, response)
            return self._record(request, arrived, name, response)
        assert check is not None
        if check.errors:
            self._violation(f"request {request.method} {request.path_qs} ({name or 'no operation'}) breaks the "
                            f"spec: {'; '.join(check.errors)}", "request")
            status = check.status
            body_doc = {"errors": check.errors} if status == 422 else {"error": "; ".join(check.errors)}
            return self._record(request, arrived, name, _json_response(body_doc, status))
        if op is None:
            self._violation(f"not emulated: {request.method} {request.path} is in the spec but not served", "gap")
            return self._record(request, arrived, name, _json_response({"error": "not emulated"}, 501))
        response = self._serve(request, op, check)
        if response.status != 501:
            self._check_response(request, check, response)
        return self._record(request, arrived, name, response)

    def _delete_ip(self, call: Call) -> tuple[int, Any]:
        self.state.delete_ip(call.path["id"])
        return 204, None

    def _check_request(self, request: web.Request, body: bytes, op: Operation | None) -> RequestCheck:
        if self.contract is not None:
            return self.contract.check_request(request, body)
        return _unvalidated(request, body, op)

    def _check_response(self, request: web.Request, check: RequestCheck, response: web.Response) -> None:
        if self.contract is None:
            return
        for problem in self.contract.check_response(check, response):
            self._violation(f"response {response.status} to {request.method} {request.path_qs} breaks the spec "
                            f"(an emulator bug): {problem}", "response")

    def _serve(self, request: web.Request, op: Operation, check: RequestCheck) -> web.Response:
        call = Call({k: str(v) for k, v in check.path.items()}, check.query, list(request.query.items()),
                    check.body)
        try:
            status, doc = self._serve_by_id[op.operation_id](call)
        except NotEmulated as exc:
            self._violation(f"{exc.message} ({request.method} {request.path_qs})", "gap")
            return _json_response(exc.body(), exc.status)
        except MetalError as exc:
            return _json_response(exc.body(), exc.status)
        return web.Response(status=204) if doc is None else _json_response(doc, status)

    def _violation(self, message: str, kind: str) -> None:
        with self._violations_lock:
            self.violations.append(message)
        if kind == "response":
            log.error("metal_api.violation", kind=kind, detail=message)
        else:
            log.warning("metal_api.violation", kind=kind, detail=message)

    def _record(self, request: web.Request, arrived: float, operation: str,
                response: web.StreamResponse) -> web.StreamResponse:
        self._log.add(RequestRecord(request.method, request.path, response.status, arrived, operation))
        log.debug("metal_api.request", method=request.method, path=request.path_qs, status=response.status,
                  operation=operation, ms=round((time.monotonic() - arrived) * 1000, 1))
        return response

    @staticmethod
    def _fault_response(fault: MetalFault) -> web.Response:
        status = fault.fail_status
        headers: dict[str, str] = {}
        if fault.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = str(math.ceil(fault.retry_after))  # HTTP wants whole seconds
        if status == 429:
            reset_at = math.ceil(time.time() + (fault.retry_after or 0.0))
            headers.update({"X-RateLimit-Limit": "5500", "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(reset_at)})
            return _json_response({"error": "Too Many Requests"}, 429, headers)
        return _json_response({"error": f"injected fault ({status})"}, status, headers)

    def _drop(self, request: web.Request, arrived: float, operation: str) -> web.StreamResponse:
        """Reset the connection without an answer (SO_LINGER 0 makes close send RST, as a refusing balancer)."""
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self._log.add(RequestRecord(request.method, request.path, 0, arrived, operation))
        log.debug("metal_api.dropped", method=request.method, path=request.path_qs, operation=operation)
        return web.Response(status=503)  # never written: the transport is gone


def _unvalidated(request: web.Request, body: bytes, op: Operation | None) -> RequestCheck:
    """Parse a request without the spec (validate=False): enough for the served operations, nothing more."""
    check = RequestCheck(openapi_request=None)
    if op is None:
        check.errors, check.status = [f"path {request.path} is not served"], 404
        return check
    query: dict[str, Any] = {}
    try:
        for key in set(request.query):
            values = request.query.getall(key)
            if key in ("include", "exclude"):
                query[key] = [item for value in values for item in value.split(",") if item]
            elif key == "types":
                query[key] = list(values)
            elif key in ("page", "per_page"):
                query[key] = int(values[-1])
            else:
                query[key] = values[-1]
        query.setdefault("per_page", 250 if op.operation_id == "findIPReservations" else 10)
        check.body = json.loads(body) if body else None
    except ValueError as exc:
        check.errors, check.status = [str(exc)], 422
        return check
    if op.operation_id == "createIPAssignment" and not (isinstance(check.body, dict)
                                                        and isinstance(check.body.get("address"), str)):
        check.errors, check.status = ["body: 'address' is a required property"], 422
        return check
    if op.operation_id == "createBgpSession" and not isinstance(check.body, dict):
        check.errors, check.status = ["body: a BGPSessionInput object is required"], 422
        return check
    check.query, check.path = query, dict(request.match_info)
    return check


class MetalEmulatorThread(ServerThread[MetalApiEmulator]):
    """Run an emulator on its own event loop in a daemon thread, for synchronous callers (pytest, the lab)."""

    name = "metalapi-emulator"

    def __init__(self, emulator: MetalApiEmulator, listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
                 sockets: Sequence[socket.socket] = ()) -> None:
        super().__init__(emulator, listen, sockets)

    @property
    def api_url(self) -> str:
        """What the SDK's `Configuration(host=...)` wants: the first URL plus /metal/v1."""
        if not self.urls:
            raise RuntimeError("the emulator thread is not running")
        return self.urls[0] + BASE

    def __enter__(self) -> MetalEmulatorThread:
        self.start()
        return self




def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kubevip_testbed.emulators.metalapi --listen 127.0.0.1:8080 --token T [--seed-file state.json]`;
    serves until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m kubevip_testbed.emulators.metalapi",
                                     description="Serve an emulated Equinix Metal API (/metal/v1) for tests and the "
                                                 "lab, checked against the official OpenAPI spec.")
    parser.add_argument("--listen", action="append", type=listen_address, default=[], metavar="IP:PORT",
                        help="address to serve on (repeatable; port 0 picks one); default 127.0.0.1:8080")
    parser.add_argument("--token", default=os.environ.get("METAL_AUTH_TOKEN", ""),
                        help="the accepted X-Auth-Token (default: $METAL_AUTH_TOKEN)")
    parser.add_argument("--seed-file", type=Path, help="JSON state to start with (projects, devices, reservations)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and the 429 rate (default 0)")
    parser.add_argument("--spec", type=Path, help="the OpenAPI spec (default: $METAL_OPENAPI_SPEC or the shared copy)")
    parser.add_argument("--validate", choices=("always", "auto", "never"), default="always",
                        help="check requests and responses against the spec: always (default), auto (when "
                             "openapi-core and the spec are available), never")
    parser.add_argument("--no-control", action="store_true", help="do not serve the /_emulator/ control endpoint")
    args = parser.parse_args(argv)
    configure(logging.INFO, LogFormat.TEXT)
    if not args.token:
        parser.error("--token (or METAL_AUTH_TOKEN) is required")
    try:
        validate = {"always": True, "auto": None, "never": False}[args.validate]
        emulator = MetalApiEmulator(args.token, spec_path=args.spec, seed=args.seed, validate=validate,
                                    control=not args.no_control)
        if args.seed_file is not None:
            ids = emulator.seed(json.loads(args.seed_file.read_text(encoding="utf-8")))
            log.info("metal_api.seeded", file=str(args.seed_file), ids=ids)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        log.error("metal_api.setup_failed", error=str(exc))
        return 1
    return serve_command(emulator, args.listen or [("127.0.0.1", 8080)], log, "metal_api")


if __name__ == "__main__":
    raise SystemExit(main())
