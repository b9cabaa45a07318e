"""A Kubernetes API server emulator that the official `kubernetes` Python client talks to over real HTTP.

Leader election and controllers are only as good as their behaviour under real concurrency: optimistic
concurrency conflicts, watches that resume or expire, clients that are slow, throttled or cut off. A mock of the
client hides all of that; this emulator serves the real wire protocol on real sockets (aiohttp), so the code under
test runs unchanged, with one token per node so faults can be injected per node.

Honoured:
- discovery: `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>` (resources, verbs, scope,
  `status` subresources), `/version`; `/healthz`, `/livez`, `/readyz` (no token needed, as for the real server);
- Namespaces, Nodes, Services, Secrets, ConfigMaps, Events (v1), Leases (coordination.k8s.io/v1), EndpointSlices
  (discovery.k8s.io/v1), Events (events.k8s.io/v1), all from one table (`kubeapi_resources`); four namespaces
  exist from the start (default, kube-node-lease, kube-public, kube-system);
- create (uid, creationTimestamp, resourceVersion, namespace from the URL, generateName; metadata.generation only
  for the kinds that keep one, EndpointSlices here), get, list, update (PUT), patch (JSON patch, merge patch;
  strategic merge patch as a merge patch that also knows `$patch: replace|delete` on maps), delete (a Status, or the
  object for Services and Namespaces, as the real server answers; a Namespace's answer is marked Terminating),
  finalizers (delete marks deletionTimestamp; the object goes when the last finalizer does), DeleteOptions
  preconditions (uid, resourceVersion);
- a PUT of a missing Lease, Service or Event creates it (201), as their registries allow; other kinds answer 404;
- one global, monotonic resourceVersion (etcd's revision); 409 Conflict when a PUT or PATCH carries a stale
  resourceVersion; a PUT without one is unconditional, except for Leases (422, "must be specified for an update");
  a no-op write keeps the resourceVersion;
- the status subresource: writes to the object keep the stored status; writes to `/status` change the status and
  the metadata (labels, annotations, finalizers), never the spec; create sets the server's own initial status for
  Services (empty loadBalancer) and Namespaces (phase Active);
- the typed fields leader election lives on (`kubeapi_schema`): a Lease's spec and an Event's eventTime are decoded
  as the real server does (400 for a wrong JSON type; MicroTime must be RFC 3339 with exactly six fractional digits
  and is stored in UTC) and validated (leaseDurationSeconds > 0, leaseTransitions >= 0: 422);
- label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`; empty `in ()` sets) and field selectors
  (`metadata.name`, `metadata.namespace`, a few per-resource fields; `=`, `==`, `!=`) on list and watch;
- list at a resourceVersion with resourceVersionMatch=Exact (rebuilt from the history; 410 when too old);
- watch (`?watch=true`, and the legacy `/watch/` paths): from a resourceVersion (replay of the kept history), or
  from now with synthetic ADDED events (resourceVersion unset or "0"); objects entering or leaving a selector are
  seen as ADDED or DELETED; `timeoutSeconds`; with `allowWatchBookmarks`, BOOKMARK events every
  `bookmark_interval` and 2 s before the timeout, once the revision has moved past the watch's start; an ERROR
  event carrying a 410 Expired Status when the resourceVersion is older than the kept history (`history` writes,
  global) or than `compact()`, worded per kind as the real server (its watch cache, or etcd for Events);
- Status objects (kind Status, reason, code, details) worded as the real server's (label selector parse errors
  excepted: the same code and reason, the emulator's own text);
- bearer tokens mapped to identities (401 for an unknown token; no token is system:anonymous, 403 but for the
  public paths), and per-identity faults: latency, an outage that hangs
  (requests go unanswered and open watches silent until it ends; a request the client gave up on is never
  served) or refuses (connections closed without an answer, open watches cut), the next N requests failing with
  429 (Retry-After) or 5xx; set from Python or over HTTP under `/_emulator/` (no token; disabled with
  `control=False`); request counts per identity and verb.

Not emulated (and where the real server differs; tests/test_api_contract.py runs the shared behaviour on both):
- authorization (RBAC) beyond `forbid(identity)` (403 on resource requests, as before kubeadm binds admin.conf's
  group) and anonymous requests, authentication beyond "this token is this identity", TLS, impersonation;
- admission (no NamespaceLifecycle: objects may be created in a namespace that does not exist; no quotas, no
  webhooks); namespace deletion removes the namespace at once and leaves its objects (the real server keeps it
  Terminating until the namespace controller has emptied it: forever without a controller-manager);
- defaulting and validation beyond the name, labels, annotations, finalizers and the typed fields above (no
  clusterIP, nodePort or ipMode for Services, no default ports, protocols or Secret type, no Node taints, no
  `kubernetes.io/metadata.name` label or `kubernetes` finalizer on Namespaces; unknown fields are stored as sent,
  where the real server drops them); no conversion between the two Event APIs (separate stores here; one storage
  on the real server, where a name taken in one API is taken in the other);
- strategic merge patch list semantics (merge keys such as a container's `name` or a port's `port`): lists are
  replaced whole; server-side apply (`application/apply-patch+yaml` is answered 415) and managedFields / field
  managers; JSON patch is strict RFC 6902, where the real server's also takes an `add` without a value, a path
  without its leading "/" and a `replace` of a missing member;
- history: one global log of the last `history` writes, cut by `compact()`. The real server watches every kind but
  Events from a per-kind watch cache that keeps all events since it started until it fills (it grows while its
  events are under 75 s old, up to 100 Ki); etcd's compaction, every 5 minutes, reaches Events directly and the
  others only when their watch cache lets go. So on a young real server a watch from an old resourceVersion ("1"
  included) replays where the emulator may answer 410; a BOOKMARK carries the global revision here, that kind's
  latest revision there;
- dryRun (refused with 400 rather than silently persisted), pagination (`limit`/`continue` are ignored: a list is
  one page, as the real server's watch cache also answers), protobuf/CBOR/YAML encodings, aggregated discovery,
  deletecollection, graceful deletion periods, garbage collection (ownerReferences), `sendInitialEvents`
  (watch lists), the server's own watch timeouts; a list at a future resourceVersion is 504 at once (the real
  server waits 3 s first), a watch from one simply waits for that revision.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from generic.logfmt import LogFormat, configure, get_logger
from kubevip_testbed.emulators import kubeapi_resources as res
from kubevip_testbed.emulators import kubeapi_status as st
from kubevip_testbed.emulators.kubeapi_faults import Fault, FaultError, FaultTable, Outage, RequestLog
from kubevip_testbed.emulators.kubeapi_resources import ResourceDef
from kubevip_testbed.emulators.kubeapi_selectors import FieldSelector, LabelSelector, SelectorError
from kubevip_testbed.emulators.kubeapi_status import ApiError
from kubevip_testbed.emulators.kubeapi_store import PATCH_TYPES, Store, Watcher
from kubevip_testbed.emulators.server_thread import ServerThread, listen_address, serve_command

__all__ = ["EmulatorThread", "Fault", "KubeApiEmulator", "Outage", "main", "write_kubeconfig"]

log = get_logger(__name__)

CONTROL_PREFIX = "/_emulator/"
ANONYMOUS = "system:anonymous"
_PUBLIC_PATHS = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz"})
_HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_MAX_BODY = 4 * 1024 * 1024  # above etcd's 1.5 MiB object limit, so any real object fits


@dataclass(frozen=True)
class Route:
    """What a request path names; `kind` is one of version, api, apis, group, resources, collection, item."""

    kind: str
    group: str = ""
    version: str = ""
    resource: ResourceDef | None = None
    namespace: str | None = None  # None: cluster-scoped, or every namespace
    name: str | None = None
    subresource: str | None = None
    watch_path: bool = False


def parse_route(path: str) -> Route | None:
    """Map a URL path onto the API's layout; None for a path the real server would answer 404."""
    parts = [p for p in path.split("/") if p]
    if parts in (["version"], ["api"], ["apis"]):
        return Route(parts[0])
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        group, rest = "", parts[1:]
    elif len(parts) == 2:
        return Route("group", group=parts[1]) if parts[1] in res.group_versions() and parts[1] else None
    else:
        group, rest = parts[1], parts[2:]
    version, rest = rest[0], rest[1:]
    if not res.is_served(group, version):
        return None
    if not rest:
        return Route("resources", group, version)
    watch_path = rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        scoped = res.find(group, version, rest[2])
        if scoped is not None and scoped.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    r = res.find(group, version, rest[0])
    if r is None or (r.namespaced and namespace is None and len(rest) > 1):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and (sub != "status" or not r.has_status or watch_path):
        return None
    return Route("item" if name else "collection", group, version, r, namespace, name, sub, watch_path)


def _verb(method: str, route: Route | None, query: Mapping[str, str]) -> str:
    """The Kubernetes verb of a request, for the request log."""
    if method == "GET":
        if route is not None and (route.watch_path or query.get("watch") in _TRUE):
            return "watch"
        return "list" if route is not None and route.kind == "collection" else "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise st.bad_request(f'{name}: Invalid value: "{value}": not a boolean')


def _seconds(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise st.bad_request(f'{name}: Invalid value: "{value}": not a non-negative integer')
    return int(value) or None


def _field_not_supported(path: str) -> str:
    """How the real server refuses a field selector on a kind with field selectors of its own (core kinds)."""
    return f"field label not supported: {path}"


def _not_a_known_field(path: str) -> str:
    """How the real server refuses a field selector on a kind without field selectors of its own."""
    return f'"{path}" is not a known field selector: only "metadata.name", "metadata.namespace"'


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _json_response(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(doc), status=status, content_type="application/json", headers=headers)


def _error_response(err: ApiError) -> web.Response:
    return _json_response(err.status(), err.code, err.headers)


def _media_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


async def _read_json(request: web.Request, r: ResourceDef | None = None) -> Any:
    """The request's JSON body; `r` names the kind an object body must be (a patch is not an object)."""
    raw = await request.read()
    if not raw:
        raise st.bad_request("the request body is empty")
    try:
        return json.loads(raw)
    except ValueError as exc:
        if r is None:
            raise st.bad_request(f"error decoding patch: {exc}") from exc
        raise st.bad_request(f"the object provided is unrecognized (must be of type {r.kind}): couldn't get "
                             f"version/kind; json parse error: {exc}") from exc


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


class _WatchStream:
    """One open watch response, reachable by its identity so faults can silence or cut it."""

    def __init__(self, identity: str, watcher: Watcher, transport: asyncio.Transport | None) -> None:
        self.identity = identity
        self.watcher = watcher
        self.transport = transport

    def wake(self) -> None:
        self.watcher.queue.put_nowait(None)

    def cut(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class KubeApiEmulator:
    """The emulated API server: a store, faults and request counts behind an aiohttp application."""

    def __init__(self, tokens: Mapping[str, str] | None = None, *, history: int = 1000,
                 bookmark_interval: float = 5.0, control: bool = True) -> None:
        """`tokens` maps bearer token → identity; None accepts any token as its own identity."""
        if bookmark_interval <= 0:
            raise ValueError(f"bookmark_interval must be positive, got {bookmark_interval}")
        self._tokens = dict(tokens) if tokens is not None else None
        self._forbidden: set[str] = set()
        self._bookmark_interval = bookmark_interval
        self._control = control
        self._store = Store(history)
        self._faults = FaultTable()
        self._faults.add_listener(self._fault_changed)
        self._requests = RequestLog()
        self._watches: set[_WatchStream] = set()
        self._fault_changes: dict[str, asyncio.Event] = {}  # identity → set (and dropped) when its fault changes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.urls: list[str] = []
        self._seed()

    def _seed(self) -> None:
        """The namespaces every cluster has."""
        namespaces = res.BY_KEY["v1/namespaces"]
        for name in ("default", "kube-node-lease", "kube-public", "kube-system"):
            self._store.create(namespaces, "", {"metadata": {"name": name}})

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, listen: Sequence[tuple[str, int]] | None = None,
                    sockets: Sequence[socket.socket] = ()) -> list[str]:
        """Serve on `listen` (port 0 picks one) and on pre-bound `sockets`; return the base URLs."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        if listen is None and not sockets:
            listen = [("127.0.0.1", 0)]
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        bound: list[socket.socket] = []
        try:
            for host, port in listen or ():
                family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
                bound.append(socket.create_server((host, port), family=family, backlog=128))
        except OSError:
            for sock in bound:
                sock.close()
            raise
        runner = web.AppRunner(self._app(), handle_signals=False, access_log=None, handler_cancellation=True,
                               shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        all_sockets = [*bound, *sockets]
        for sock in all_sockets:
            await web.SockSite(runner, sock).start()
        self.urls = [_url(sock) for sock in all_sockets]
        log.info("emulator.started", urls=self.urls, identities=sorted(set((self._tokens or {}).values())))
        return list(self.urls)

    async def stop(self) -> None:
        """End every watch and hung request, then close the listeners."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        for changed in self._fault_changes.values():
            changed.set()
        self._fault_changes.clear()
        for stream in list(self._watches):
            stream.wake()
        await runner.cleanup()
        log.info("emulator.stopped", urls=self.urls)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        if self._control:
            app.router.add_post(CONTROL_PREFIX + "faults/{identity}", self._control_set_fault)
            app.router.add_delete(CONTROL_PREFIX + "faults/{identity}", self._control_clear_fault)
            app.router.add_get(CONTROL_PREFIX + "faults", self._control_faults)
            app.router.add_get(CONTROL_PREFIX + "requests", self._control_requests)
            app.router.add_delete(CONTROL_PREFIX + "requests", self._control_reset_requests)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # --- Python control (any thread) ---------------------------------------------------------------------------

    def forbid(self, identity: str) -> None:
        """Answer 403 Forbidden to every resource request of `identity` (authenticated, no rights yet: kubeadm's
        admin.conf before `kubeadm init` has bound its group), until `allow`; discovery stays open, as RBAC's
        system:discovery role keeps it for every authenticated user."""
        self._forbidden.add(identity)

    def allow(self, identity: str) -> None:
        self._forbidden.discard(identity)

    def set_fault(self, identity: str, *, latency: float = 0.0, outage: str | None = None, fail_next: int = 0,
                  fail_status: int = 500, retry_after: float | None = None) -> None:
        """Replace the identity's fault; `outage` is "hang", "refuse" or None."""
        try:
            fault = Fault(latency, Outage(outage) if outage is not None else None, fail_next, fail_status,
                          retry_after)
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        self._faults.set(identity, fault)
        log.info("emulator.fault_set", identity=identity, **fault.to_json())

    def clear_fault(self, identity: str) -> None:
        self._faults.clear(identity)
        log.info("emulator.fault_cleared", identity=identity)

    def faults(self) -> dict[str, Fault]:
        return self._faults.all()

    def get_object(self, group_version_resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of one stored object, e.g. ("coordination.k8s.io/v1/leases", "kube-system", "plndr-cp-lock")."""
        r = res.BY_KEY.get(group_version_resource)
        if r is None:
            raise KeyError(f"not a served resource: {group_version_resource!r} (one of {', '.join(res.BY_KEY)})")
        return self._store.snapshot(r, namespace if r.namespaced else None, name)

    def compact(self) -> int:
        """Forget the history before the current revision, as the real server's periodic etcd compaction does: a watch
        or an exact list from an older resourceVersion is then 410 Gone. Returns the revision kept; any thread."""
        revision = self._store.compact()
        log.info("emulator.compacted", revision=revision)
        return revision

    def request_counts(self) -> dict[str, int]:
        """Requests per identity, every request that presented a valid token (faulted ones included)."""
        return self._requests.counts()

    def request_counts_by_verb(self) -> dict[str, dict[str, int]]:
        return self._requests.by_verb()

    def reset_request_counts(self) -> None:
        self._requests.reset()

    def _fault_changed(self, identity: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nothing is open to notify
            loop.call_soon_threadsafe(self._apply_fault_to_watches, identity)

    def _apply_fault_to_watches(self, identity: str) -> None:
        """On the loop: release the identity's hung requests and wake (or, for "refuse", cut) its watches."""
        changed = self._fault_changes.pop(identity, None)
        if changed is not None:
            changed.set()
        fault = self._faults.get(identity)
        for stream in list(self._watches):
            if stream.identity != identity:
                continue
            if fault is not None and fault.outage is Outage.REFUSE:
                stream.cut()
            else:
                stream.wake()

    # --- HTTP control endpoint ---------------------------------------------------------------------------------

    async def _control_set_fault(self, request: web.Request) -> web.Response:
        try:
            fault = Fault.from_json(await request.json())
        except (ValueError, FaultError) as exc:
            return _json_response({"error": str(exc)}, 400)
        identity = request.match_info["identity"]
        self._faults.set(identity, fault)
        log.info("emulator.fault_set", identity=identity, **fault.to_json())
        return _json_response({"identity": identity, **fault.to_json()})

    async def _control_clear_fault(self, request: web.Request) -> web.Response:
        self.clear_fault(request.match_info["identity"])
        return _json_response({"identity": request.match_info["identity"]})

    async def _control_faults(self, request: web.Request) -> web.Response:
        return _json_response({identity: f.to_json() for identity, f in self._faults.all().items()})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return _json_response({"requests": self._requests.counts(), "verbs": self._requests.by_verb()})

    async def _control_reset_requests(self, request: web.Request) -> web.Response:
        self._requests.reset()
        return _json_response({})

    # --- the API -----------------------------------------------------------------------------------------------

    def _identity(self, request: web.Request) -> str | None:
        """The caller's identity; None for an anonymous caller (no token); 401 for a token nobody has."""
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if self._tokens is None:
            return token or ANONYMOUS
        if token:
            identity = self._tokens.get(token)
            if identity is None:
                raise st.unauthorized()
            return identity
        return None

    @staticmethod
    def _denied(user: str, request: web.Request, route: Route | None) -> ApiError:
        """403 worded as RBAC words it for `user` and this request."""
        if route is None or route.resource is None:
            return st.forbidden_path(user, request.method, request.path)
        return st.forbidden(user, _verb(request.method, route, request.query), route.resource, route.namespace,
                            route.name, route.subresource)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = parse_route(request.path)
        try:
            identity = self._identity(request)
        except ApiError as err:
            return _error_response(err)
        if identity is None and request.path not in _PUBLIC_PATHS:
            # Anonymous requests are authenticated as system:anonymous, which RBAC grants nothing but the public
            # paths (kube-apiserver's default --anonymous-auth=true).
            return _error_response(self._denied(ANONYMOUS, request, route))
        if identity is not None:
            self._requests.record(identity, _verb(request.method, route, request.query))
            faulted = await self._injected(request, identity)
            if faulted is not None:
                return faulted
            if identity in self._forbidden and route is not None and route.resource is not None:
                return _error_response(self._denied(identity, request, route))
        try:
            if request.path in _HEALTH_PATHS:
                return web.Response(text="ok")
            if route is None:
                raise st.page_not_found()
            return await self._serve(request, route, identity or ANONYMOUS)
        except ApiError as err:
            return _error_response(err)

    async def _injected(self, request: web.Request, identity: str) -> web.StreamResponse | None:
        """Apply the identity's fault: a response to send instead of serving, or None to serve normally."""
        assert self._stopping is not None
        fault = self._faults.get(identity)
        while fault is not None and fault.outage is Outage.HANG:
            # Unanswered while the outage lasts. A client that gives up closes the connection, which cancels this
            # handler, so its request is never served; one still waiting when the outage ends is then served, as
            # TCP retransmission would deliver it once a partition heals.
            await self._fault_changes.setdefault(identity, asyncio.Event()).wait()
            if self._stopping.is_set():
                return self._drop(request)
            fault = self._faults.get(identity)
        if fault is None:
            return None
        if fault.outage is Outage.REFUSE:
            return self._drop(request)
        if fault.latency:
            await asyncio.sleep(fault.latency)
        failing = self._faults.take_failure(identity)
        if failing is None:
            return None
        if failing.fail_status == 429:
            return _error_response(st.too_many_requests(failing.retry_after or 1.0))
        err = st.internal_error("injected fault") if failing.fail_status == 500 else \
            ApiError(failing.fail_status, "ServiceUnavailable" if failing.fail_status == 503 else "InternalError",
                     f"injected fault ({failing.fail_status})")
        if failing.retry_after is not None:
            err.headers["Retry-After"] = str(max(1, round(failing.retry_after)))
        return _error_response(err)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer (aiohttp quietly discards the response it cannot write)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)

    async def _serve(self, request: web.Request, route: Route, identity: str) -> web.StreamResponse:
        method = request.method
        if route.kind in ("version", "api", "apis", "group", "resources"):
            if method != "GET":
                raise st.method_not_allowed(method)
            return _json_response(self._discovery(request, route))
        r = route.resource
        assert r is not None
        query = request.query
        if method == "GET" and (route.watch_path or _flag(query, "watch")):
            return await self._watch(request, route, r, identity)
        if route.kind == "collection":
            if method == "GET":
                return _json_response(self._store.list_objects(r, route.namespace, *self._selectors(r, query),
                                                       query.get("resourceVersion"),
                                                       query.get("resourceVersionMatch")))
            if method == "POST" and (route.namespace is not None or not r.namespaced):
                self._refuse_dry_run(query)
                self._require_json(request)
                created = self._store.create(r, route.namespace or "", await _read_json(request, r))
                return _json_response(created, 201)
            raise st.method_not_allowed(method)
        assert route.name is not None
        namespace = route.namespace or ""
        if method == "GET":
            return _json_response(self._store.get(r, namespace, route.name))
        self._refuse_dry_run(query)
        if method == "PUT":
            self._require_json(request)
            body = await _read_json(request, r)
            updated, made = self._store.update(r, namespace, route.name, body, route.subresource)
            return _json_response(updated, 201 if made else 200)
        if method == "PATCH":
            patch_type = _media_type(request)
            if patch_type not in PATCH_TYPES:
                raise st.unsupported_patch_type()
            body = await _read_json(request)
            return _json_response(self._store.patch(r, namespace, route.name, patch_type, body, route.subresource))
        if method == "DELETE" and route.subresource is None:
            options = await self._delete_options(request)
            return _json_response(self._store.delete(r, namespace, route.name, options))
        raise st.method_not_allowed(method)

    def _discovery(self, request: web.Request, route: Route) -> dict[str, Any]:
        if route.kind == "version":
            return dict(res.VERSION_INFO)
        if route.kind == "api":
            return res.api_versions(request.host)
        if route.kind == "apis":
            return res.api_group_list()
        if route.kind == "group":
            return res.api_group(route.group)
        return res.api_resource_list(route.group, route.version)

    @staticmethod
    def _selectors(r: ResourceDef, query: Mapping[str, str]) -> tuple[LabelSelector, FieldSelector]:
        allowed = {"metadata.name", "metadata.namespace", *r.extra_fields}
        unknown = _field_not_supported if r.extra_fields else _not_a_known_field
        try:
            return (LabelSelector.parse(query.get("labelSelector")),
                    FieldSelector.parse(query.get("fieldSelector"), allowed.__contains__, unknown))
        except SelectorError as exc:
            raise st.bad_request(str(exc)) from exc

    @staticmethod
    def _refuse_dry_run(query: Mapping[str, str]) -> None:
        if query.get("dryRun"):
            raise st.bad_request("dryRun is not supported by the kube-apiserver emulator")

    @staticmethod
    def _require_json(request: web.Request) -> None:
        media = _media_type(request)
        if media not in ("", "application/json"):
            raise st.unsupported_media_type()

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            options = json.loads(raw)
        except ValueError as exc:
            raise st.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc
        if not isinstance(options, dict):
            raise st.bad_request("DeleteOptions must be a JSON object")
        if options.get("dryRun"):
            raise st.bad_request("dryRun is not supported by the kube-apiserver emulator")
        return options

    # --- watches -----------------------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, route: Route, r: ResourceDef, identity: str) -> web.StreamResponse:
        """Stream watch events, one JSON object per line, until timeoutSeconds, a cut, or the emulator stops."""
        query = request.query
        labels, fields = self._selectors(r, query)
        if route.name is not None:
            fields = FieldSelector((*fields.terms, ("metadata.name", True, route.name)))
        timeout = _seconds(query, "timeoutSeconds")
        bookmarks = _flag(query, "allowWatchBookmarks")
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Cache-Control": "no-cache, private"})
        try:
            initial, watcher = self._store.watch(r, route.namespace, labels, fields, query.get("resourceVersion"))
            registered_at = self._store.revision
        except ApiError as err:
            if err.code != 410:
                raise
            await response.prepare(request)
            await response.write(_dumps({"type": "ERROR", "object": err.status()}) + b"\n")
            await response.write_eof()
            return response
        stream = _WatchStream(identity, watcher, request.transport)
        self._watches.add(stream)
        try:
            await response.prepare(request)
            await self._pump(response, stream, r, initial, timeout, bookmarks, registered_at)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away, or a "refuse" fault cut it
        finally:
            self._watches.discard(stream)
            self._store.unwatch(watcher)
        return response

    def _next_bookmark(self, now: float, deadline: float | None) -> float | None:
        """When the next BOOKMARK is due: every `bookmark_interval`, and 2 s before the watch's timeout (as the real
        server's cacher: "right before the watcher timeout"); None when the watch ends first."""
        due = now + self._bookmark_interval
        if deadline is not None:
            due = min(due, deadline - 2.0)
        return due if due >= now else None

    async def _pump(self, response: web.StreamResponse, stream: _WatchStream, r: ResourceDef,
                    initial: list[tuple[str, dict[str, Any]]], timeout: int | None, bookmarks: bool,
                    registered_at: int) -> None:
        loop = asyncio.get_running_loop()
        assert self._stopping is not None
        pending = list(initial)
        queue = stream.watcher.queue
        began = loop.time()
        deadline = began + timeout if timeout else None
        next_bookmark = self._next_bookmark(began, deadline) if bookmarks else None
        while not self._stopping.is_set():
            fault = self._faults.get(stream.identity)
            if fault is not None and fault.outage is Outage.HANG:
                await self._collect(stream, pending, None)  # silent: buffer until woken
                continue
            for kind, obj in pending:
                await response.write(_dumps({"type": kind, "object": obj}) + b"\n")
            pending.clear()
            now = loop.time()
            if deadline is not None and now >= deadline:
                return
            if next_bookmark is not None and now >= next_bookmark:
                while not queue.empty():  # every event up to the bookmark's revision goes out before it
                    self._translate(stream, queue.get_nowait(), pending)
                if self._store.revision > registered_at:  # the real server has nothing to tell before that
                    bookmark = {"kind": r.kind, "apiVersion": r.api_version,
                                "metadata": {"resourceVersion": str(self._store.revision)}}
                    pending.append(("BOOKMARK", bookmark))
                next_bookmark = self._next_bookmark(now, deadline)
                continue
            waits = [t - now for t in (deadline, next_bookmark) if t is not None]
            await self._collect(stream, pending, min(waits) if waits else None)

    async def _collect(self, stream: _WatchStream, pending: list[tuple[str, dict[str, Any]]],
                       timeout: float | None) -> None:
        """Wait for the next event (or a wake-up), then take everything already queued."""
        queue = stream.watcher.queue
        try:
            first = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return
        self._translate(stream, first, pending)
        while not queue.empty():
            self._translate(stream, queue.get_nowait(), pending)

    @staticmethod
    def _translate(stream: _WatchStream, item: Any, pending: list[tuple[str, dict[str, Any]]]) -> None:
        if item is not None and (seen := stream.watcher.translate(item)) is not None:
            pending.append(seen)


class EmulatorThread(ServerThread[KubeApiEmulator]):
    """Run an emulator on its own event loop in a daemon thread, for synchronous callers (pytest, the lab)."""

    name = "kubeapi-emulator"

    def __init__(self, emulator: KubeApiEmulator, listen: Sequence[tuple[str, int]] | None = None,
                 sockets: Sequence[socket.socket] = ()) -> None:
        # neither listen nor sockets: loopback, any free port
        default: Sequence[tuple[str, int]] = () if sockets else (("127.0.0.1", 0),)
        super().__init__(emulator, listen if listen is not None else default, sockets)

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self


def write_kubeconfig(path: Path, server: str, token: str, namespace: str = "default",
                     ca_cert: Path | None = None) -> Path:
    """A kubeconfig for one identity (mode 0600: it holds a token) that the official client loads as is; an https
    server's CA certificate (`ca_cert`) is inlined, so the file works from any mount namespace."""
    cluster: dict[str, str] = {"server": server}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(Path(ca_cert).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": "emulator-user", "user": {"token": token}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator-user",
                                                     "namespace": namespace}}],
        "current-context": "emulator",
    }
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    return path




def _token(text: str) -> tuple[str, str]:
    """`n1=tok-n1` → ("n1", "tok-n1")."""
    identity, sep, token = text.partition("=")
    if not sep or not identity or not token:
        raise argparse.ArgumentTypeError(f"--token {text!r} is not IDENTITY=TOKEN")
    return identity, token


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kubevip_testbed.emulators.kubeapi --listen 127.0.0.1:6443 --token n1=tok-n1`; runs until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m kubevip_testbed.emulators.kubeapi",
                                     description="Serve an emulated Kubernetes API server for tests and the lab.")
    parser.add_argument("--listen", action="append", type=listen_address, default=[], metavar="IP:PORT",
                        help="address to serve on (repeatable; port 0 picks one); default 127.0.0.1:6443")
    parser.add_argument("--token", action="append", type=_token, default=[], metavar="IDENTITY=TOKEN",
                        help="accept TOKEN as IDENTITY (repeatable); without any, every token is accepted")
    parser.add_argument("--history", type=int, default=1000, help="watch events kept for resuming (default 1000)")
    parser.add_argument("--bookmark-interval", type=float, default=5.0, help="seconds between watch bookmarks")
    parser.add_argument("--no-control", action="store_true", help="do not serve the /_emulator/ control endpoint")
    args = parser.parse_args(argv)
    configure(logging.INFO, LogFormat.TEXT)
    if args.history < 1 or args.bookmark_interval <= 0:
        parser.error("--history must be >= 1 and --bookmark-interval > 0")
    tokens = {token: identity for identity, token in args.token} if args.token else None
    emulator = KubeApiEmulator(tokens, history=args.history, bookmark_interval=args.bookmark_interval,
                               control=not args.no_control)
    return serve_command(emulator, args.listen or [("127.0.0.1", 6443)], log, "emulator")


if __name__ == "__main__":
    raise SystemExit(main())
