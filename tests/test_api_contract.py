"""Contract tests: the API behaviours the daemon relies on, run against the emulator and a real kube-apiserver.

Each test runs twice, through the official `kubernetes` client, once per backend. What a test asserts is what the
real server (v1.35) answers; where the emulator cannot follow, its module docstring says why, and a test branches on
the backend only where nothing else can be said for both.

The real server is shared by the whole session: every test names its objects with `api.name(...)` and finds its own
objects with `api.mine` (a label selector), since other tests leave theirs behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config, watch
from kubernetes.client import ApiClient, ApiException

from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig
from kubevip_testbed.peers.apiserver import ADMIN_TOKEN, RealApiServer
from tests.kubeapi_support import api_error, lease, status_body

# `kubernetes.config` and `kubernetes.watch` are untyped; the API classes and models are typed.
kubeconfig: Any = config
watches: Any = watch

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
OTHER_NS = "kube-public"  # a second namespace both backends have from the start


def conflict_message(qualified: str, name: str) -> str:
    return (f'Operation cannot be fulfilled on {qualified} "{name}": the object has been modified; please apply '
            "your changes to the latest version and try again")


@dataclass
class Api:
    """One backend, seen the same way whichever it is: admin clients, raw HTTP, unique names, compaction."""

    backend: str  # "emulator" or "kube-apiserver"
    url: str
    prefix: str  # unique to the test (and backend)
    tmp: Path
    _make_client: Callable[[str], ApiClient]
    _compact: Callable[[], object]
    verify: str | bool = True
    clients: list[Any] = field(default_factory=list)  # ApiClient.close() is untyped

    def client(self, token: str = ADMIN_TOKEN) -> ApiClient:
        api = self._make_client(token)
        self.clients.append(api)
        return api

    # The API classes are typed, but every model field is Optional; tests read results as Any.
    def leases(self, token: str = ADMIN_TOKEN) -> Any:
        return client.CoordinationV1Api(self.client(token))

    def core(self) -> Any:
        return client.CoreV1Api(self.client())

    def name(self, suffix: str = "") -> str:
        """An object name no other test uses (DNS-1123, ≤ 63 characters)."""
        return f"{self.prefix}-{suffix}" if suffix else self.prefix

    @property
    def mine(self) -> str:
        """A label selector matching exactly the objects this test labelled with `labels()`."""
        return f"contract={self.prefix}"

    def labels(self, **extra: str) -> dict[str, str]:
        return {"contract": self.prefix, **extra}

    def raw(self, method: str, path: str, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.url + path, headers=headers, verify=self.verify, timeout=20, **kwargs)

    def kubeconfig(self, token: str = ADMIN_TOKEN) -> Path:
        path = self.tmp / f"{self.prefix}-{len(self.clients)}.kubeconfig"
        ca = Path(self.verify) if isinstance(self.verify, str) else None
        return write_kubeconfig(path, self.url, token, ca_cert=ca)

    def compact(self) -> None:
        """Forget every revision before the current one, as the API server's periodic etcd compaction does."""
        self._compact()


def _unique_prefix(request: pytest.FixtureRequest) -> str:
    function = request.node.originalname.removeprefix("test_")
    base = re.sub(r"[^a-z0-9]+", "-", function.lower())[:28].strip("-")
    return f"ct-{base}-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]}"


def _etcd_compactor(server: RealApiServer) -> Callable[[], None]:
    """Compact the real server's etcd at its current revision through etcd's JSON gateway."""
    etcd = server.etcd_url

    def compact() -> None:
        head = requests.post(f"{etcd}/v3/kv/range", json={"key": base64.b64encode(b"/").decode()}, timeout=10)
        revision = head.json()["header"]["revision"]
        requests.post(f"{etcd}/v3/kv/compaction", json={"revision": revision, "physical": True},
                      timeout=10).raise_for_status()

    return compact


@pytest.fixture(params=["emulator", "kube-apiserver"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    prefix = _unique_prefix(request)
    if request.param == "emulator":
        emulator = KubeApiEmulator({ADMIN_TOKEN: "admin"})
        with EmulatorThread(emulator) as thread:
            url = thread.urls[0]

            def make(token: str) -> ApiClient:
                path = write_kubeconfig(tmp_path / f"{token}.kubeconfig", url, token)
                configuration = client.Configuration()
                kubeconfig.load_kube_config(config_file=str(path), client_configuration=configuration)
                configuration.retries = False
                return ApiClient(configuration)

            handle = Api("emulator", url, prefix, tmp_path, make, emulator.compact)
            yield handle
            for opened in handle.clients:
                opened.close()
        return
    server: RealApiServer = request.getfixturevalue("real_api")
    handle = Api("kube-apiserver", server.url, prefix, tmp_path, lambda token: server.client(token),
                 _etcd_compactor(server), verify=str(server.ca_cert))
    yield handle
    for opened in handle.clients:
        opened.close()


def micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- create / get / list / errors --------------------------------------------------------------------------------


def test_create_fills_server_fields_and_answers_201(api: Api) -> None:
    response = api.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
                       json={"metadata": {"name": api.name("a")}, "spec": {"holderIdentity": "n1"}})
    assert response.status_code == 201
    meta = response.json()["metadata"]
    assert meta["namespace"] == "kube-system" and "generation" not in meta  # a Lease has no generation
    assert RFC3339_Z.match(meta["creationTimestamp"]) and meta["uid"] and meta["resourceVersion"].isdigit()

    created = api.leases().create_namespaced_lease("kube-system", lease(api.name("b"), "n2"))
    assert created.metadata.namespace == "kube-system" and created.metadata.uid != meta["uid"]
    assert int(created.metadata.resource_version) > int(meta["resourceVersion"])
    generated = api.core().create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name=api.name()), data={"k": "v"}))
    assert re.fullmatch(rf"{api.prefix}[bcdfghjklmnpqrstvwxz2456789]{{5}}", generated.metadata.name)
    assert generated.metadata.generate_name == api.prefix


def test_create_of_an_existing_name_is_409_already_exists(api: Api) -> None:
    leases, name = api.leases(), api.name()
    leases.create_namespaced_lease("default", lease(name))
    exc = api_error(lambda: leases.create_namespaced_lease("default", lease(name)))
    assert exc.status == 409
    assert status_body(exc) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'leases.coordination.k8s.io "{name}" already exists', "reason": "AlreadyExists", "code": 409,
        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"}}


def test_missing_objects_are_404_and_put_creates_only_some_kinds(api: Api) -> None:
    leases, core, name = api.leases(), api.core(), api.name()
    exc = api_error(lambda: leases.read_namespaced_lease(name, "default"))
    assert exc.status == 404
    assert status_body(exc) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'leases.coordination.k8s.io "{name}" not found', "reason": "NotFound", "code": 404,
        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"}}
    unknown = api.raw("GET", "/api/v1/nosuchthing").json()
    assert (unknown["reason"], unknown["message"]) == ("NotFound", "the server could not find the requested resource")
    # PUT of a missing object creates it for Leases, Services and Events (AllowCreateOnUpdate), not for the rest.
    created = leases.replace_namespaced_lease(name, "default", lease(name, "n1"))
    assert created.spec.holder_identity == "n1" and created.metadata.uid
    exc = api_error(lambda: core.replace_namespaced_config_map(name, "default", {"metadata": {"name": name}}))
    assert exc.status == 404 and status_body(exc)["message"] == f'configmaps "{name}" not found'


def test_bad_bodies_are_422_400_or_415_as_the_real_server_answers(api: Api) -> None:
    leases, name = api.leases(), api.name()
    exc = api_error(lambda: leases.create_namespaced_lease("default", {"spec": {"holderIdentity": "x"}}))
    assert exc.status == 422
    body = status_body(exc)
    assert body["message"] == ('Lease.coordination.k8s.io "" is invalid: metadata.name: Required value: name or '
                               "generateName is required")
    assert body["reason"] == "Invalid" and body["details"]["causes"] == [{
        "reason": "FieldValueRequired", "message": "Required value: name or generateName is required",
        "field": "metadata.name"}]
    exc = api_error(lambda: leases.create_namespaced_lease("default", {"metadata": {"name": name, "namespace": "o"}}))
    assert exc.status == 400
    assert status_body(exc)["message"] == ("the namespace of the provided object does not match the namespace sent "
                                           "on the request")
    collection = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    response = api.raw("POST", collection, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"
    assert response.json()["message"].startswith("the object provided is unrecognized (must be of type Lease): "
                                                 "couldn't get version/kind; json parse error: ")
    response = api.raw("POST", collection, data=b"{}", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.json()["reason"]) == (415, "UnsupportedMediaType")
    assert response.json()["message"] == ("the body of the request was in an unknown format - accepted media types "
                                          "include: application/json, application/yaml, "
                                          "application/vnd.kubernetes.protobuf")
    response = api.raw("PATCH", f"{collection}/{name}", data=b"{}", headers={"Content-Type": "text/plain"})
    assert (response.status_code, response.json()["message"]) == (415, "415: Unsupported Media Type")


def test_list_carries_the_current_revision_and_items_without_kind(api: Api) -> None:
    leases = api.leases()
    leases.create_namespaced_lease("default", lease(api.name("a"), labels=api.labels()))
    leases.create_namespaced_lease("default", lease(api.name("b"), labels=api.labels()))
    last = leases.create_namespaced_lease(OTHER_NS, lease(api.name("c"), labels=api.labels()))
    listed = leases.list_namespaced_lease("default", label_selector=api.mine)
    assert [item.metadata.name for item in listed.items] == [api.name("a"), api.name("b")]
    everywhere = leases.list_lease_for_all_namespaces(label_selector=api.mine)
    assert [item.metadata.namespace for item in everywhere.items] == ["default", "default", OTHER_NS]
    assert int(everywhere.metadata.resource_version) >= int(last.metadata.resource_version)
    raw = api.raw("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                  params={"labelSelector": api.mine}).json()
    assert raw["kind"] == "LeaseList" and raw["apiVersion"] == "coordination.k8s.io/v1"
    assert all("kind" not in item and "apiVersion" not in item for item in raw["items"])
    one = api.raw("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{api.name('a')}").json()
    assert (one["kind"], one["apiVersion"]) == ("Lease", "coordination.k8s.io/v1")


def test_list_at_an_exact_recent_resource_version_shows_that_state(api: Api) -> None:
    leases, name = api.leases(), api.name()
    first = leases.create_namespaced_lease("default", lease(name, "h0", labels=api.labels()))
    leases.patch_namespaced_lease(name, "default", {"spec": {"holderIdentity": "h1"}})
    then = leases.list_namespaced_lease("default", label_selector=api.mine,
                                        resource_version=first.metadata.resource_version,
                                        resource_version_match="Exact")
    assert then.metadata.resource_version == first.metadata.resource_version
    assert [item.spec.holder_identity for item in then.items] == ["h0"]


@pytest.mark.parametrize("kind", ["namespace", "node", "secret", "configmap", "event", "events.k8s.io",
                                  "endpointslice", "lease", "service"])
def test_every_resource_round_trips(api: Api, kind: str) -> None:
    apis = api.client()
    core: Any = client.CoreV1Api(apis)
    events: Any = client.EventsV1Api(apis)
    discovery: Any = client.DiscoveryV1Api(apis)
    leases: Any = client.CoordinationV1Api(apis)
    ns, name = "default", api.name()
    table: dict[str, tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = {
        "namespace": (lambda: core.create_namespace({"metadata": {"name": name}}),
                      lambda: core.read_namespace(name), core.list_namespace, lambda: core.delete_namespace(name)),
        "node": (lambda: core.create_node({"metadata": {"name": name}, "status": {"addresses": []}}),
                 lambda: core.read_node(name), core.list_node, lambda: core.delete_node(name)),
        "secret": (lambda: core.create_namespaced_secret(ns, {"metadata": {"name": name}, "data": {"k": "dg=="}}),
                   lambda: core.read_namespaced_secret(name, ns), lambda: core.list_namespaced_secret(ns),
                   lambda: core.delete_namespaced_secret(name, ns)),
        "configmap": (lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": name},
                                                                     "data": {"k": "v"}}),
                      lambda: core.read_namespaced_config_map(name, ns),
                      lambda: core.list_namespaced_config_map(ns),
                      lambda: core.delete_namespaced_config_map(name, ns)),
        "event": (lambda: core.create_namespaced_event(ns, {"metadata": {"name": name}, "reason": "Announced",
                                                            "involvedObject": {"kind": "Service", "name": "web"}}),
                  lambda: core.read_namespaced_event(name, ns), lambda: core.list_namespaced_event(ns),
                  lambda: core.delete_namespaced_event(name, ns)),
        "events.k8s.io": (lambda: events.create_namespaced_event(ns, {
                              "metadata": {"name": name}, "eventTime": "2025-01-01T00:00:00.000001Z",
                              "reportingController": "kube-vip", "reportingInstance": "n1", "action": "Announce",
                              "reason": "Announced", "type": "Normal"}),
                          lambda: events.read_namespaced_event(name, ns), lambda: events.list_namespaced_event(ns),
                          lambda: events.delete_namespaced_event(name, ns)),
        "endpointslice": (lambda: discovery.create_namespaced_endpoint_slice(ns, {
                              "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
                              "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
                          lambda: discovery.read_namespaced_endpoint_slice(name, ns),
                          lambda: discovery.list_namespaced_endpoint_slice(ns),
                          lambda: discovery.delete_namespaced_endpoint_slice(name, ns)),
        "lease": (lambda: leases.create_namespaced_lease(ns, lease(name, "n1")),
                  lambda: leases.read_namespaced_lease(name, ns), lambda: leases.list_namespaced_lease(ns),
                  lambda: leases.delete_namespaced_lease(name, ns)),
        "service": (lambda: core.create_namespaced_service(ns, {"metadata": {"name": name},
                                                                "spec": {"ports": [{"port": 80}]}}),
                    lambda: core.read_namespaced_service(name, ns), lambda: core.list_namespaced_service(ns),
                    lambda: core.delete_namespaced_service(name, ns)),
    }
    create, read, list_, delete = table[kind]
    created = create()
    assert read().metadata.uid == created.metadata.uid
    assert created.metadata.uid in [item.metadata.uid for item in list_().items]
    # metadata.generation: only kinds whose spec a controller reconciles have one.
    assert created.metadata.generation == (1 if kind == "endpointslice" else None)
    answer = delete()
    if kind == "namespace":  # the namespace itself, marked Terminating until the namespace controller is done
        assert answer["kind"] == "Namespace" and answer["status"]["phase"] == "Terminating"
        assert answer["metadata"]["deletionTimestamp"]
        return  # (the emulator removes it at once; the real server keeps it while there is no controller-manager)
    if kind == "service":  # the real server answers with the Service itself
        assert answer.metadata.uid == created.metadata.uid
    else:
        assert answer["kind"] == "Status" and answer["status"] == "Success"
        assert answer["details"]["uid"] == created.metadata.uid and answer["details"]["name"] == name
    assert api_error(read).status == 404


def test_finalizers_hold_deletion_until_removed(api: Api) -> None:
    core, name = api.core(), api.name()
    core.create_namespaced_config_map("default", {"metadata": {"name": name, "finalizers": ["example.com/hold"]}})
    marked = core.delete_namespaced_config_map(name, "default")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    again = core.delete_namespaced_config_map(name, "default")  # a second delete changes nothing
    assert again["metadata"]["resourceVersion"] == marked["metadata"]["resourceVersion"]
    assert core.read_namespaced_config_map(name, "default").metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(name, "default", {"metadata": {"finalizers": None}})
    assert api_error(lambda: core.read_namespaced_config_map(name, "default")).status == 404


# --- optimistic concurrency --------------------------------------------------------------------------------------


def test_stale_put_is_409_conflict(api: Api) -> None:
    leases, name = api.leases(), api.name()
    leases.create_namespaced_lease("default", lease(name, "n1"))
    first = leases.read_namespaced_lease(name, "default")
    second = leases.read_namespaced_lease(name, "default")
    first.spec.holder_identity = "n2"
    updated = leases.replace_namespaced_lease(name, "default", first)
    assert int(updated.metadata.resource_version) > int(second.metadata.resource_version)
    second.spec.holder_identity = "n3"
    exc = api_error(lambda: leases.replace_namespaced_lease(name, "default", second))
    assert exc.status == 409
    assert status_body(exc) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": conflict_message("leases.coordination.k8s.io", name), "reason": "Conflict", "code": 409,
        "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"}}
    assert leases.read_namespaced_lease(name, "default").spec.holder_identity == "n2"


def test_put_without_resource_version_is_refused_for_leases_only(api: Api) -> None:
    leases, core, name = api.leases(), api.core(), api.name()
    created = leases.create_namespaced_lease("default", lease(name, "n1"))
    exc = api_error(lambda: leases.replace_namespaced_lease(name, "default", lease(name, "n2")))
    assert exc.status == 422
    body = status_body(exc)
    assert body["message"] == (f'leases.coordination.k8s.io "{name}" is invalid: metadata.resourceVersion: Invalid '
                               "value: 0: must be specified for an update")
    assert body["details"] == {"name": name, "group": "coordination.k8s.io", "kind": "leases", "causes": [{
        "reason": "FieldValueInvalid", "message": "Invalid value: 0: must be specified for an update",
        "field": "metadata.resourceVersion"}]}
    again = leases.replace_namespaced_lease(name, "default", created)  # a no-op write keeps the resourceVersion
    assert again.metadata.resource_version == created.metadata.resource_version

    core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"k": "v1"}})
    forced = core.replace_namespaced_config_map(name, "default", {"metadata": {"name": name}, "data": {"k": "v2"}})
    assert forced.data == {"k": "v2"}  # unconditional for (nearly) every other kind


def test_stale_merge_patch_is_409_conflict(api: Api) -> None:
    leases, name = api.leases(), api.name()
    created = leases.create_namespaced_lease("default", lease(name, "n1"))
    stale = created.metadata.resource_version
    leases.patch_namespaced_lease(name, "default", {"spec": {"holderIdentity": "n2"}})  # strategic merge
    for content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        exc = api_error(partial(leases.patch_namespaced_lease, name, "default", {
            "metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "n3"}}, _content_type=content_type))
        assert exc.status == 409 and status_body(exc)["message"] == conflict_message("leases.coordination.k8s.io",
                                                                                      name)
    current = leases.read_namespaced_lease(name, "default")
    patched = leases.patch_namespaced_lease(
        name, "default", {"metadata": {"resourceVersion": current.metadata.resource_version},
                          "spec": {"holderIdentity": "n3", "leaseDurationSeconds": None}},
        _content_type="application/merge-patch+json")
    assert patched.spec.holder_identity == "n3"


def test_json_patch_applies_and_a_failed_test_is_422(api: Api) -> None:
    leases, name = api.leases(), api.name()
    leases.create_namespaced_lease("default", lease(name, "n1"))
    patched = leases.patch_namespaced_lease(name, "default", [
        {"op": "test", "path": "/spec/holderIdentity", "value": "n1"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "n2"},
        {"op": "add", "path": "/metadata/labels", "value": {"role/x": "y"}},
        {"op": "copy", "from": "/spec/holderIdentity", "path": "/metadata/labels/holder"},
    ])
    assert patched.spec.holder_identity == "n2" and patched.metadata.labels == {"role/x": "y", "holder": "n2"}
    exc = api_error(lambda: leases.patch_namespaced_lease(
        name, "default", [{"op": "test", "path": "/spec/holderIdentity", "value": "n1"}]))
    assert exc.status == 422
    assert status_body(exc) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "the server rejected our request due to an error in our request",
                                "reason": "Invalid", "details": {}, "code": 422}
    path = f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}"
    not_a_list = api.raw("PATCH", path, json={"op": "add"}, headers={"Content-Type": "application/json-patch+json"})
    assert (not_a_list.status_code, not_a_list.json()["message"]) == (
        400, "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp")
    not_a_map = api.raw("PATCH", path, json=[1], headers={"Content-Type": "application/merge-patch+json"})
    assert (not_a_map.status_code, not_a_map.json()["message"]) == (
        400, "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}")


# --- Lease fields ------------------------------------------------------------------------------------------------


def test_lease_fields_round_trip_with_micro_time(api: Api) -> None:
    leases, name = api.leases(), api.name()
    acquired = datetime(2026, 11, 26, 13, 26, 26, 123456, tzinfo=UTC)
    body = {"metadata": {"name": name}, "spec": {
        "holderIdentity": "n1", "leaseDurationSeconds": 15, "acquireTime": micro(acquired),
        "renewTime": "2026-11-26T15:26:27.000001+02:00", "leaseTransitions": 3}}
    created = api.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", json=body)
    assert created.status_code == 201
    # an offset is normalised to UTC; MicroTime always has six fractional digits
    assert created.json()["spec"] == {"holderIdentity": "n1", "leaseDurationSeconds": 15,
                                      "acquireTime": "2026-11-26T13:26:26.123456Z",
                                      "renewTime": "2026-11-26T13:26:27.000001Z", "leaseTransitions": 3}
    read = leases.read_namespaced_lease(name, "default")  # the official client parses them back
    assert read.spec.acquire_time == acquired and read.spec.lease_transitions == 3
    renewed = read.spec.renew_time + timedelta(seconds=2)
    read.spec.renew_time, read.spec.lease_transitions = renewed, 4
    replaced = leases.replace_namespaced_lease(name, "default", read)
    assert replaced.spec.renew_time == renewed and replaced.spec.lease_transitions == 4
    raw = api.raw("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}").json()["spec"]
    assert MICRO_TIME.match(raw["renewTime"]) and MICRO_TIME.match(raw["acquireTime"])
    cleared = api.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", json={
        "metadata": {"name": api.name("empty")},
        "spec": {"holderIdentity": None, "renewTime": None, "leaseDurationSeconds": None}})
    assert cleared.status_code == 201 and cleared.json()["spec"] == {}


@pytest.mark.parametrize(("spec", "error"), [
    ({"renewTime": "2025-01-01T00:00:00Z"},
     f'parsing time "2025-01-01T00:00:00Z" as "{MICRO_LAYOUT}": cannot parse "Z" as ".000000"'),
    ({"renewTime": "2025-01-01T00:00:00.123Z"},
     f'parsing time "2025-01-01T00:00:00.123Z" as "{MICRO_LAYOUT}": cannot parse ".123Z" as ".000000"'),
    ({"acquireTime": "2025-01-01T00:00:00.1234567Z"},
     f'parsing time "2025-01-01T00:00:00.1234567Z" as "{MICRO_LAYOUT}": cannot parse "7Z" as "Z07:00"'),
    ({"renewTime": "2025-01-01T00:00:00+00:00"},
     f'parsing time "2025-01-01T00:00:00+00:00" as "{MICRO_LAYOUT}": cannot parse "+00:00" as ".000000"'),
    ({"renewTime": "2025-01-01 00:00:00.000000Z"},
     f'parsing time "2025-01-01 00:00:00.000000Z" as "{MICRO_LAYOUT}": cannot parse " 00:00:00.000000Z" as "T"'),
    ({"renewTime": "garbage"}, f'parsing time "garbage" as "{MICRO_LAYOUT}": cannot parse "garbage" as "2006"'),
    ({"renewTime": "2025-13-01T00:00:00.000000Z"}, 'parsing time "2025-13-01T00:00:00.000000Z": month out of range'),
    ({"renewTime": "2025-02-30T00:00:00.000000Z"}, 'parsing time "2025-02-30T00:00:00.000000Z": day out of range'),
    ({"renewTime": "2025-01-01T24:00:00.000000Z"}, 'parsing time "2025-01-01T24:00:00.000000Z": hour out of range'),
    ({"renewTime": "2025-01-01T00:00:00.000000Zjunk"},
     'parsing time "2025-01-01T00:00:00.000000Zjunk": extra text: "junk"'),
    ({"renewTime": 5}, "json: cannot unmarshal number into Go struct field LeaseSpec.spec.renewTime of type string"),
    ({"leaseDurationSeconds": "15"},
     "json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32"),
    ({"leaseDurationSeconds": 1.5},
     "json: cannot unmarshal number 1.5 into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32"),
    ({"leaseTransitions": True},
     "json: cannot unmarshal bool into Go struct field LeaseSpec.spec.leaseTransitions of type int32"),
    ({"holderIdentity": 5},
     "json: cannot unmarshal number into Go struct field LeaseSpec.spec.holderIdentity of type string"),
])
def test_lease_fields_that_do_not_decode_are_400(api: Api, spec: dict[str, Any], error: str) -> None:
    response = api.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                       json={"metadata": {"name": api.name()}, "spec": spec})
    assert (response.status_code, response.json()["reason"]) == (400, "BadRequest")
    assert response.json()["message"] == f'Lease in version "v1" cannot be handled as a Lease: {error}'


def test_lease_duration_and_transitions_are_validated(api: Api) -> None:
    leases, name = api.leases(), api.name()
    exc = api_error(lambda: leases.create_namespaced_lease("default", {
        "metadata": {"name": name}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}}))
    assert exc.status == 422
    body = status_body(exc)
    assert body["message"] == (f'Lease.coordination.k8s.io "{name}" is invalid: [spec.leaseDurationSeconds: '
                               "Invalid value: 0: must be greater than 0, spec.leaseTransitions: Invalid value: -1: "
                               "must be greater than or equal to 0]")
    assert [cause["field"] for cause in body["details"]["causes"]] == ["spec.leaseDurationSeconds",
                                                                       "spec.leaseTransitions"]
    leases.create_namespaced_lease("default", {"metadata": {"name": name}, "spec": {"leaseDurationSeconds": 1}})
    exc = api_error(lambda: leases.patch_namespaced_lease(name, "default", {"spec": {"leaseDurationSeconds": -5}}))
    assert exc.status == 422 and status_body(exc)["message"] == (
        f'Lease.coordination.k8s.io "{name}" is invalid: spec.leaseDurationSeconds: Invalid value: -5: must be '
        "greater than 0")


# --- status subresource ------------------------------------------------------------------------------------------


def test_service_status_is_a_separate_subresource(api: Api) -> None:
    core, name = api.core(), api.name()
    created = core.create_namespaced_service("default", {
        "metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}})
    assert created.status.load_balancer.ingress is None  # the server owns status on create
    rv = int(created.metadata.resource_version)

    # A status write keeps the spec, but metadata (labels, annotations) goes through, as on the real server.
    after_status = core.patch_namespaced_service_status(name, "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}, "spec": {"ports": [{"port": 81}]},
        "metadata": {"labels": {"via": "status"}}})
    assert after_status.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert after_status.spec.ports[0].port == 80 and after_status.metadata.labels == {"via": "status"}
    assert int(after_status.metadata.resource_version) > rv

    after_main = core.patch_namespaced_service(name, "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}, "spec": {"ports": [{"port": 8080}]}},
        _content_type="application/merge-patch+json")
    assert after_main.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert [port.port for port in after_main.spec.ports] == [8080]

    current = core.read_namespaced_service(name, "default")
    current.status = {"loadBalancer": {}}
    current.metadata.resource_version = None  # unconditional, as Services allow
    replaced = core.replace_namespaced_service_status(name, "default", current)
    assert replaced.status.load_balancer.ingress is None and replaced.metadata.labels == {"via": "status"}
    core.delete_namespaced_service(name, "default")  # no LoadBalancer left for a daemon sharing the server
    node = core.create_node({"metadata": {"name": name}})
    node.status = {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
    assert core.replace_node_status(name, node).status.addresses[0].address == "192.0.2.1"
    core.delete_node(name)


def test_node_labels_merge_patch_select_and_validate(api: Api) -> None:
    """What --enableNodeLabeling relies on: a merge patch sets a label and `null` removes it (the others stay), a
    list selects by `key=value`, and an invalid label (a raw IPv6 value, a name part over 63 characters) is 422."""
    core = api.core()
    name = api.name("node")
    core.create_node({"metadata": {"name": name, "labels": api.labels()}})
    patch = partial(core.patch_node, name, _content_type="application/merge-patch+json")
    patch({"metadata": {"labels": {"kube-vip.io/has-ip": "20010db8000000000000000000000010"}}})
    found = core.list_node(label_selector=f"kube-vip.io/has-ip=20010db8000000000000000000000010,{api.mine}")
    assert [n.metadata.name for n in found.items] == [name]
    for labels in ({"kube-vip.io/has-ip": "2001:db8::10"}, {"service-provided.kube-vip.io/" + "x" * 64: "1.2.3.4"},
                   {"kube-vip.io/has-ip": "a" * 64}, {"Bad_Prefix/x": "1"}):
        error = api_error(lambda labels=labels: patch({"metadata": {"labels": labels}}))  # type: ignore[misc]
        assert error.status == 422, labels
        assert status_body(error)["reason"] == "Invalid"
        assert status_body(error)["details"]["causes"][0]["field"] == "metadata.labels"
    patch({"metadata": {"labels": {"kube-vip.io/has-ip": None}}})
    assert core.read_node(name).metadata.labels == api.labels()
    core.delete_node(name)


# --- selectors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=vip", ["a", "b"]),
    ("app==vip", ["a", "b"]),
    ("app!=vip", ["c", "d"]),
    ("app in (vip, web)", ["a", "b", "c"]),
    ("app notin (vip)", ["c", "d"]),
    ("tier", ["a", "c"]),
    ("!tier", ["b", "d"]),
    ("app=vip,tier", ["a"]),
    ("app in (vip),!tier", ["b"]),
    ("app in ()", []),
    ("app notin ()", ["a", "b", "c", "d"]),
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(api: Api, selector: str, expected: list[str]) -> None:
    leases = api.leases()
    labelled: list[tuple[str, dict[str, str]]] = [
        ("a", {"app": "vip", "tier": "cp"}), ("b", {"app": "vip"}), ("c", {"app": "web", "tier": "lb"}), ("d", {})]
    for suffix, labels in labelled:
        leases.create_namespaced_lease("default", lease(api.name(suffix), labels=api.labels(**labels)))
    found = leases.list_namespaced_lease("default", label_selector=",".join(filter(None, [selector, api.mine])))
    assert [item.metadata.name for item in found.items] == [api.name(suffix) for suffix in expected]


def test_field_selectors_and_bad_selectors(api: Api) -> None:
    leases, a, b = api.leases(), api.name("a"), api.name("b")
    for ns, name in [("default", a), ("default", b), (OTHER_NS, a)]:
        leases.create_namespaced_lease(ns, lease(name, labels=api.labels()))

    def names(**kwargs: str) -> list[tuple[str, str]]:
        found = leases.list_lease_for_all_namespaces(label_selector=api.mine, **kwargs)
        return [(i.metadata.namespace, i.metadata.name) for i in found.items]

    assert names(field_selector=f"metadata.name={a}") == [("default", a), (OTHER_NS, a)]
    assert names(field_selector=f"metadata.name!={a}") == [("default", b)]
    assert names(field_selector=f"metadata.namespace=={OTHER_NS}") == [(OTHER_NS, a)]
    assert names(field_selector=f"metadata.namespace=default,metadata.name!={b}") == [("default", a)]

    def refused(**kwargs: str) -> dict[str, Any]:
        exc = api_error(lambda: leases.list_lease_for_all_namespaces(**kwargs))
        assert exc.status == 400
        return status_body(exc)

    assert refused(field_selector="spec.holderIdentity=x")["message"] == (
        '"spec.holderIdentity" is not a known field selector: only "metadata.name", "metadata.namespace"')
    assert refused(field_selector="metadata.name")["message"] == (
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'")
    body = refused(label_selector="app in vip")
    assert body["reason"] == "BadRequest" and body["message"].startswith("unable to parse requirement: ")
    exc = api_error(lambda: api.core().list_service_for_all_namespaces(field_selector="spec.nope=x"))
    assert (exc.status, status_body(exc)["message"]) == (400, "field label not supported: spec.nope")


# --- watches -----------------------------------------------------------------------------------------------------


def test_watch_from_a_resource_version_replays_exactly_the_later_events(api: Api) -> None:
    leases, a, b, live = api.leases(), api.name("a"), api.name("b"), api.name("live")
    mine = api.labels()
    start = leases.create_namespaced_lease("default", lease(a, "n1", mine)).metadata.resource_version
    leases.patch_namespaced_lease(a, "default", {"spec": {"holderIdentity": "n2"}})
    leases.create_namespaced_lease("default", lease(b, labels=mine))
    leases.create_namespaced_lease(OTHER_NS, lease(api.name("elsewhere"), labels=mine))
    leases.delete_namespaced_lease(a, "default")
    seen: list[tuple[str, str, int]] = []
    stream = watches.Watch()
    for event in stream.stream(leases.list_namespaced_lease, "default", label_selector=api.mine,
                               resource_version=start, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name, int(event["object"].metadata.resource_version)))
        if len(seen) == 3:
            leases.create_namespaced_lease("default", lease(live, labels=mine))  # the history ends; live follows
        if event["object"].metadata.name == live:
            stream.stop()
    assert [(kind, name) for kind, name, _ in seen] == [("MODIFIED", a), ("ADDED", b), ("DELETED", a),
                                                        ("ADDED", live)]
    revisions = [rv for _, _, rv in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4 and revisions[0] > int(start)


@pytest.mark.parametrize("resource_version", [None, "0"])
def test_watch_from_now_starts_with_synthetic_added_events(api: Api, resource_version: str | None) -> None:
    leases, a, b = api.leases(), api.name("a"), api.name("b")
    leases.create_namespaced_lease("default", lease(a, labels=api.labels()))
    leases.create_namespaced_lease("default", lease(b, labels=api.labels()))
    seen = []
    stream = watches.Watch()
    kwargs = {"resource_version": resource_version} if resource_version else {}
    for event in stream.stream(leases.list_namespaced_lease, "default", label_selector=api.mine,
                               timeout_seconds=20, **kwargs):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            leases.patch_namespaced_lease(a, "default", {"spec": {"holderIdentity": "n9"}})
        if len(seen) == 3:
            stream.stop()
    assert seen == [("ADDED", a), ("ADDED", b), ("MODIFIED", a)]


def test_watch_ends_after_timeout_seconds(api: Api) -> None:
    leases = api.leases()
    began = time.monotonic()
    events = list(watches.Watch().stream(leases.list_namespaced_lease, "default", label_selector=api.mine,
                                         resource_version="0", timeout_seconds=1))
    elapsed = time.monotonic() - began
    assert events == [] and 0.9 <= elapsed < 5


def test_compacted_resource_version_is_410_gone(api: Api) -> None:
    """Events: the one kind the real server watches straight from etcd (no watch cache), so etcd's compaction,
    which the API server runs every 5 minutes, is what a client meets. (Other kinds are served from the watch cache,
    which keeps far more history on the real server; the emulator's history is one global, bounded log.)"""
    core, name = api.core(), api.name()
    old = core.create_namespaced_event("default", {
        "metadata": {"name": name, "labels": api.labels()}, "reason": "A",
        "involvedObject": {"kind": "Service", "name": "web"}}).metadata.resource_version
    core.patch_namespaced_event(name, "default", {"reason": "B"})
    core.patch_namespaced_event(name, "default", {"reason": "C"})
    api.compact()  # every revision before the last patch is gone
    exc = api_error(lambda: list(watches.Watch().stream(core.list_namespaced_event, "default",
                                                     label_selector=api.mine, resource_version=old,
                                                     timeout_seconds=5)))
    assert exc.status == 410
    # On the wire: HTTP 200, then one ERROR event carrying an Expired Status.
    raw = api.raw("GET", "/api/v1/namespaces/default/events",
                  params={"watch": "1", "resourceVersion": old, "labelSelector": api.mine})
    assert raw.status_code == 200
    assert json.loads(raw.text.splitlines()[0]) == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "The resourceVersion for the provided watch is too old.", "reason": "Expired", "code": 410}}
    exc = api_error(lambda: core.list_namespaced_event("default", label_selector=api.mine, resource_version=old,
                                                       resource_version_match="Exact"))
    assert exc.status == 410
    assert status_body(exc)["message"] == "The resourceVersion for the provided list is too old."
    assert [e.reason for e in core.list_namespaced_event("default", label_selector=api.mine).items] == ["C"]


def test_watch_bookmarks_carry_the_current_revision(api: Api) -> None:
    """A bookmark comes 2 s before the watch's timeout (and every minute), if the revision moved on meanwhile."""
    leases = api.leases()
    start = leases.create_namespaced_lease("default", lease(api.name("a"), labels=api.labels()))
    written: list[Any] = []

    def write_elsewhere() -> None:  # a Lease this watch does not see (another namespace) moves the revision on
        time.sleep(0.5)
        written.append(leases.create_namespaced_lease(OTHER_NS, lease(api.name("b"), labels=api.labels())))

    writer = threading.Thread(target=write_elsewhere, daemon=True)
    writer.start()
    began = time.monotonic()
    kinds, bookmark = [], None
    for event in watches.Watch().stream(leases.list_namespaced_lease, "default", allow_watch_bookmarks=True,
                                        label_selector=api.mine, resource_version=start.metadata.resource_version,
                                        timeout_seconds=5):
        kinds.append(event["type"])
        if event["type"] == "BOOKMARK":
            bookmark = event["raw_object"]
            break
    writer.join(10)
    assert kinds == ["BOOKMARK"] and bookmark is not None and time.monotonic() - began < 4.5
    assert (bookmark["kind"], bookmark["apiVersion"]) == ("Lease", "coordination.k8s.io/v1")
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(written[0].metadata.resource_version)


def test_watch_honours_namespace_and_selectors(api: Api) -> None:
    leases, marker, x, y, z = (api.leases(), api.name("marker"), api.name("x"), api.name("y"), api.name("z"))
    vip, web = api.labels(app="vip"), api.labels(app="web")
    leases.create_namespaced_lease("default", lease(marker, labels=vip))
    seen = []
    stream = watches.Watch()
    for event in stream.stream(leases.list_namespaced_lease, "default", label_selector=f"{api.mine},app=vip",
                               resource_version="0", timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            leases.create_namespaced_lease("default", lease(x, labels=vip))
            leases.create_namespaced_lease("default", lease(y, labels=web))
            leases.create_namespaced_lease(OTHER_NS, lease(z, labels=vip))
            leases.patch_namespaced_lease(x, "default", {"metadata": {"labels": {"app": "web"}}})
            leases.patch_namespaced_lease(y, "default", {"metadata": {"labels": {"app": "vip"}}})
        if len(seen) == 4:
            stream.stop()
    assert seen == [("ADDED", marker), ("ADDED", x), ("DELETED", x), ("ADDED", y)]
    named = next(iter(watches.Watch().stream(leases.list_lease_for_all_namespaces, label_selector=api.mine,
                                           field_selector=f"metadata.name={z}", resource_version="0",
                                           timeout_seconds=20)))
    assert (named["type"], named["object"].metadata.namespace) == ("ADDED", OTHER_NS)


# --- authentication ----------------------------------------------------------------------------------------------


def test_unknown_token_is_401_and_no_token_is_anonymous(api: Api) -> None:
    exc = api_error(lambda: api.leases("tok-stolen").list_namespaced_lease("default"))
    assert exc.status == 401
    assert status_body(exc) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    anonymous = api.raw("GET", "/api/v1/namespaces", token=None)
    assert anonymous.status_code == 403 and anonymous.json()["reason"] == "Forbidden"
    assert anonymous.json()["message"] == ('namespaces is forbidden: User "system:anonymous" cannot list resource '
                                           '"namespaces" in API group "" at the cluster scope')
    named = api.raw("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", token=None).json()
    assert named["message"] == ('leases.coordination.k8s.io "x" is forbidden: User "system:anonymous" cannot get '
                                'resource "leases" in API group "coordination.k8s.io" in the namespace "default"')
    assert named["details"] == {"name": "x", "group": "coordination.k8s.io", "kind": "leases"}
    assert api.raw("GET", "/version", token=None).json()["major"] == "1"  # public, as /healthz
    assert api.raw("GET", "/healthz", token=None).text == "ok"


# --- the official leader election ---------------------------------------------------------------------------------


def test_official_leader_election_acquires_renews_and_steps_down(api: Api) -> None:
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    name, leases = api.name(), api.leases()
    saved = client.Configuration.get_default_copy()
    kubeconfig.load_kube_config(config_file=str(api.kubeconfig()))  # LeaseLock uses the process-wide default
    try:
        started, stopped = threading.Event(), threading.Event()
        lock = LeaseLock(name, "default", "n1")  # type: ignore[no-untyped-call]
        settings = electionconfig.Config(lock, lease_duration=3, renew_deadline=2,  # type: ignore[no-untyped-call]
                                         retry_period=1, onstarted_leading=started.set,
                                         onstopped_leading=stopped.set)
        elector = leaderelection.LeaderElection(settings)  # type: ignore[no-untyped-call]
        runner = threading.Thread(target=elector.run, daemon=True)
        runner.start()
        assert started.wait(10)
        held = leases.read_namespaced_lease(name, "default")
        assert held.spec.holder_identity == "n1" and held.spec.lease_duration_seconds == 3
        renewed = next(iter(watches.Watch().stream(leases.list_namespaced_lease, "default",
                                                 field_selector=f"metadata.name={name}",
                                                 resource_version=held.metadata.resource_version,
                                                 timeout_seconds=10)))
        assert renewed["type"] == "MODIFIED" and renewed["object"].spec.holder_identity == "n1"
        assert renewed["object"].spec.renew_time > held.spec.renew_time
        # Another candidate takes the lease over; n1's renewals now fail, and it steps down after its deadline.
        while True:
            current = leases.read_namespaced_lease(name, "default")
            current.spec.holder_identity, current.spec.lease_duration_seconds = "n2", 60
            current.spec.acquire_time = current.spec.renew_time = datetime.now(UTC)
            current.spec.lease_transitions = (current.spec.lease_transitions or 0) + 1
            try:
                leases.replace_namespaced_lease(name, "default", current)
                break
            except ApiException as exc:
                assert exc.status == 409  # n1 renewed in between
        assert stopped.wait(10)
        runner.join(10)
        assert not runner.is_alive()
        assert leases.read_namespaced_lease(name, "default").spec.holder_identity == "n2"
    finally:
        client.Configuration.set_default(saved)


def test_lease_lock_writes_a_whole_second_as_a_micro_time(api: Api) -> None:
    """The daemon's own Lease writes (generic.election.lease_lock) on a whole second: the official client's models
    would send `…:00+00:00`, which the real server refuses (400); the lock must send six fractional digits."""
    from dataclasses import replace

    from generic.election.lease_lock import LeaseLock
    from generic.election.lock import LeaderRecord

    lock = LeaseLock(api.client(), "kube-system", api.name())
    whole = datetime(2026, 11, 26, 13, 0, 0, tzinfo=UTC)
    record = LeaderRecord(holder="n1", lease_duration_s=5, acquire_time=whole, renew_time=whole, transitions=0)
    version = lock.create(record, timeout=5)
    lock.update(replace(record, renew_time=whole + timedelta(seconds=1)), version, timeout=5)
    stored = api.leases().read_namespaced_lease(api.name(), "kube-system", _preload_content=False)
    spec = json.loads(stored.data)["spec"]
    assert spec["acquireTime"] == "2026-11-26T13:00:00.000000Z"
    assert spec["renewTime"] == "2026-11-26T13:00:01.000000Z"
    got = lock.get(timeout=5)
    assert got is not None and got[0].renew_time == whole + timedelta(seconds=1)
