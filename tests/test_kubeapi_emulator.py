"""The Kubernetes API emulator, exercised through the official `kubernetes` client over real HTTP.

Every behaviour that leader election and controllers rely on (conflicts, status separation, watches that resume or
expire, selectors, per-node faults) is checked here the way the code under test will meet it: through the official
client's own calls, exceptions and watch helper.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from kubernetes import client, config, watch
from kubernetes.client import ApiClient, ApiException

from kubevip_metal.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig
from kubevip_metal.emulators.kubeapi_patch import PatchError, json_patch
from tests.waiting import wait_for

# `kubernetes.config` and `kubernetes.watch` are untyped; the API classes and models are typed.
kubeconfig: Any = config
watches: Any = watch

TOKENS = {"tok-n1": "n1", "tok-n2": "n2"}
LEASES = "coordination.k8s.io/v1/leases"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CONFLICT = ('Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been modified; '
            "please apply your changes to the latest version and try again")


@dataclass
class Cluster:
    """One running emulator plus official clients for it, closed at teardown."""

    thread: EmulatorThread
    tmp: Path
    clients: list[Any] = field(default_factory=list)  # ApiClient.close() is untyped

    @property
    def emulator(self) -> KubeApiEmulator:
        return self.thread.emulator

    @property
    def url(self) -> str:
        return self.thread.urls[0]

    def api_client(self, token: str = "tok-n1", retries: Any = None) -> ApiClient:
        """A client built from a kubeconfig, as the daemon builds its own; `retries` goes to urllib3."""
        path = write_kubeconfig(self.tmp / f"{token}-{len(self.clients)}.kubeconfig", self.url, token)
        if retries is None:
            api: ApiClient = kubeconfig.new_client_from_config(config_file=str(path))
        else:
            configuration = client.Configuration()
            kubeconfig.load_kube_config(config_file=str(path), client_configuration=configuration)
            configuration.retries = retries
            api = ApiClient(configuration)
        self.clients.append(api)
        return api

    # The API classes are typed, but every model field is Optional; tests read results as Any.
    def leases(self, token: str = "tok-n1", retries: Any = None) -> Any:
        return client.CoordinationV1Api(self.api_client(token, retries))

    def core(self, token: str = "tok-n1") -> Any:
        return client.CoreV1Api(self.api_client(token))

    def raw(self, method: str, path: str, token: str | None = "tok-n1", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def make(tokens: dict[str, str] | None = TOKENS, **kwargs: Any) -> Cluster:
        thread = EmulatorThread(KubeApiEmulator(tokens, **kwargs))
        thread.start()
        cluster = Cluster(thread, tmp_path)
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        for api in cluster.clients:
            api.close()
        cluster.thread.stop()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster()


def lease(name: str, holder: str | None = None, labels: dict[str, str] | None = None) -> client.V1Lease:
    return client.V1Lease(metadata=client.V1ObjectMeta(name=name, labels=labels),
                          spec=client.V1LeaseSpec(holder_identity=holder))


def status_body(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "null")
    return body



def api_error(call: Callable[[], object]) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value


# --- discovery ---------------------------------------------------------------------------------------------------


def test_discovery_documents_parse_in_the_official_client(cluster: Cluster) -> None:
    api = cluster.api_client()
    core_api: Any = client.CoreApi(api)
    assert core_api.get_api_versions().versions == ["v1"]
    apis: Any = client.ApisApi(api)
    groups = {g.name: g for g in apis.get_api_versions().groups}
    assert set(groups) == {"coordination.k8s.io", "discovery.k8s.io", "events.k8s.io"}
    assert groups["coordination.k8s.io"].preferred_version.group_version == "coordination.k8s.io/v1"

    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core["services"].kind == "Service" and core["services"].namespaced
    assert "watch" in core["services"].verbs and "create" in core["services"].verbs
    assert core["services/status"].verbs == ["get", "patch", "update"]
    assert core["nodes"].namespaced is False and "nodes/status" in core
    assert not core["namespaces"].namespaced and {"secrets", "configmaps", "events"} <= set(core)
    leases = client.CoordinationV1Api(api).get_api_resources()
    assert leases.group_version == "coordination.k8s.io/v1"
    assert [(r.name, r.kind, r.namespaced) for r in leases.resources] == [("leases", "Lease", True)]
    slices = client.DiscoveryV1Api(api).get_api_resources().resources
    assert [r.kind for r in slices] == ["EndpointSlice"]

    version = client.VersionApi(api).get_code()
    assert (version.major, version.minor) == ("1", "37") and version.git_version.startswith("v1.37.")
    assert version.platform and version.go_version and version.build_date and version.git_tree_state
    assert cluster.raw("GET", "/version/").json() == cluster.raw("GET", "/version").json()
    assert cluster.raw("GET", "/apis/events.k8s.io").json()["kind"] == "APIGroup"


# --- create / get / list / errors --------------------------------------------------------------------------------


def test_create_fills_server_fields_and_answers_201(cluster: Cluster) -> None:
    response = cluster.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
                           json={"metadata": {"name": "a"}, "spec": {"holderIdentity": "n1"}})
    assert response.status_code == 201
    meta = response.json()["metadata"]
    assert meta["namespace"] == "kube-system" and meta["generation"] == 1
    assert RFC3339_Z.match(meta["creationTimestamp"]) and meta["uid"] and meta["resourceVersion"].isdigit()

    created = cluster.leases().create_namespaced_lease("kube-system", lease("b", "n2"))
    assert created.metadata.namespace == "kube-system" and created.metadata.uid != meta["uid"]
    assert int(created.metadata.resource_version) > int(meta["resourceVersion"])
    generated = cluster.core().create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cm-"), data={"k": "v"}))
    assert re.fullmatch(r"cm-[a-z0-9]{5}", generated.metadata.name)


def test_create_of_an_existing_name_is_409_already_exists(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a"))
    exc = api_error(lambda: leases.create_namespaced_lease("default", lease("a")))
    assert exc.status == 409
    assert status_body(exc) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'leases.coordination.k8s.io "a" already exists', "reason": "AlreadyExists", "code": 409,
        "details": {"name": "a", "group": "coordination.k8s.io", "kind": "leases"}}


def test_missing_objects_are_404_not_found(cluster: Cluster) -> None:
    exc = api_error(lambda: cluster.leases().read_namespaced_lease("nope", "default"))
    assert exc.status == 404
    body = status_body(exc)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
    assert body["message"] == 'leases.coordination.k8s.io "nope" not found'
    assert cluster.raw("GET", "/api/v1/nosuchthing").json()["reason"] == "NotFound"
    # PUT of a missing object is 404 here (the real server creates on PUT for a few types).
    exc = api_error(lambda: cluster.leases().replace_namespaced_lease("nope", "default", lease("nope")))
    assert exc.status == 404


def test_bad_bodies_are_422_or_400_as_on_the_real_server(cluster: Cluster) -> None:
    leases = cluster.leases()
    exc = api_error(lambda: leases.create_namespaced_lease("default", {"spec": {"holderIdentity": "x"}}))
    assert exc.status == 422
    body = status_body(exc)
    assert body["reason"] == "Invalid" and body["details"]["causes"][0]["field"] == "metadata.name"
    # The real server answers a namespace mismatch with 400 BadRequest, not 422.
    exc = api_error(lambda: leases.create_namespaced_lease("default", {"metadata": {"name": "x", "namespace": "o"}}))
    assert exc.status == 400 and "does not match the namespace" in status_body(exc)["message"]
    response = cluster.raw("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", data=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["reason"] == "BadRequest"
    response = cluster.raw("PATCH", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", data=b"a: b",
                           headers={"Content-Type": "application/apply-patch+yaml"})
    assert response.status_code == 415


def test_list_carries_the_current_revision_and_items_without_kind(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a"))
    last = leases.create_namespaced_lease("default", lease("b"))
    leases.create_namespaced_lease("other", lease("c"))
    listed = leases.list_namespaced_lease("default")
    assert [item.metadata.name for item in listed.items] == ["a", "b"]
    everywhere = leases.list_lease_for_all_namespaces()
    assert int(everywhere.metadata.resource_version) == int(last.metadata.resource_version) + 1
    raw = cluster.raw("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases").json()
    assert raw["kind"] == "LeaseList" and raw["apiVersion"] == "coordination.k8s.io/v1"
    assert all("kind" not in item and "apiVersion" not in item for item in raw["items"])
    assert cluster.raw("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/a").json()["kind"] == "Lease"


@pytest.mark.parametrize("kind", ["namespace", "node", "secret", "configmap", "event", "events.k8s.io",
                                  "endpointslice"])
def test_every_resource_round_trips(cluster: Cluster, kind: str) -> None:
    api = cluster.api_client()
    core: Any = client.CoreV1Api(api)
    events: Any = client.EventsV1Api(api)
    discovery: Any = client.DiscoveryV1Api(api)
    ns = "default"
    table: dict[str, tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = {
        "namespace": (lambda: core.create_namespace({"metadata": {"name": "team"}}),
                      lambda: core.read_namespace("team"), core.list_namespace,
                      lambda: core.delete_namespace("team")),
        "node": (lambda: core.create_node({"metadata": {"name": "n1"}, "status": {"addresses": []}}),
                 lambda: core.read_node("n1"), core.list_node, lambda: core.delete_node("n1")),
        "secret": (lambda: core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "data": {"k": "dg=="}}),
                   lambda: core.read_namespaced_secret("s", ns), lambda: core.list_namespaced_secret(ns),
                   lambda: core.delete_namespaced_secret("s", ns)),
        "configmap": (lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}}),
                      lambda: core.read_namespaced_config_map("c", ns), lambda: core.list_namespaced_config_map(ns),
                      lambda: core.delete_namespaced_config_map("c", ns)),
        "event": (lambda: core.create_namespaced_event(ns, {"metadata": {"name": "e"}, "reason": "Announced",
                                                            "involvedObject": {"kind": "Service", "name": "web"}}),
                  lambda: core.read_namespaced_event("e", ns), lambda: core.list_namespaced_event(ns),
                  lambda: core.delete_namespaced_event("e", ns)),
        "events.k8s.io": (lambda: events.create_namespaced_event(ns, {
                              "metadata": {"name": "e"}, "eventTime": "2025-01-01T00:00:00.000000Z",
                              "reportingController": "kube-vip", "reportingInstance": "n1", "action": "Announce",
                              "reason": "Announced", "type": "Normal"}),
                          lambda: events.read_namespaced_event("e", ns), lambda: events.list_namespaced_event(ns),
                          lambda: events.delete_namespaced_event("e", ns)),
        "endpointslice": (lambda: discovery.create_namespaced_endpoint_slice(ns, {
                              "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
                              "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
                          lambda: discovery.read_namespaced_endpoint_slice("web-1", ns),
                          lambda: discovery.list_namespaced_endpoint_slice(ns),
                          lambda: discovery.delete_namespaced_endpoint_slice("web-1", ns)),
    }
    create, read, list_, delete = table[kind]
    created = create()
    assert read().metadata.uid == created.metadata.uid
    assert created.metadata.uid in [item.metadata.uid for item in list_().items]
    answer = delete()
    if kind == "namespace":  # the real server answers with the namespace itself
        assert answer["kind"] == "Namespace"
    else:
        assert answer["kind"] == "Status" and answer["status"] == "Success"
        assert answer["details"]["uid"] == created.metadata.uid
    assert api_error(read).status == 404


def test_service_delete_answers_the_object(cluster: Cluster) -> None:
    core = cluster.core()
    core.create_namespaced_service("default", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})
    deleted = core.delete_namespaced_service("web", "default")
    assert isinstance(deleted, client.V1Service)
    assert deleted.metadata is not None and deleted.metadata.name == "web"


def test_finalizers_hold_deletion_until_removed(cluster: Cluster) -> None:
    core = cluster.core()
    core.create_namespaced_config_map("default", {"metadata": {"name": "c", "finalizers": ["example.com/hold"]}})
    marked = core.delete_namespaced_config_map("c", "default")
    assert marked["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("c", "default").metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("c", "default", {"metadata": {"finalizers": None}})
    assert api_error(lambda: core.read_namespaced_config_map("c", "default")).status == 404


# --- optimistic concurrency --------------------------------------------------------------------------------------


def test_stale_put_is_409_conflict(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a", "n1"))
    first = leases.read_namespaced_lease("a", "default")
    second = leases.read_namespaced_lease("a", "default")
    first.spec.holder_identity = "n2"
    updated = leases.replace_namespaced_lease("a", "default", first)
    assert int(updated.metadata.resource_version) > int(second.metadata.resource_version)
    second.spec.holder_identity = "n3"
    exc = api_error(lambda: leases.replace_namespaced_lease("a", "default", second))
    assert exc.status == 409
    body = status_body(exc)
    assert body["reason"] == "Conflict" and body["message"] == CONFLICT
    stored = cluster.emulator.get_object(LEASES, "default", "a")
    assert stored is not None and stored["spec"]["holderIdentity"] == "n2"


def test_put_without_resource_version_is_unconditional_and_no_op_keeps_it(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a", "n1"))
    forced = leases.replace_namespaced_lease("a", "default", lease("a", "n2"))
    assert forced.spec.holder_identity == "n2"
    again = leases.replace_namespaced_lease("a", "default", forced)
    assert again.metadata.resource_version == forced.metadata.resource_version


def test_stale_merge_patch_is_409_conflict(cluster: Cluster) -> None:
    leases = cluster.leases()
    created = leases.create_namespaced_lease("default", lease("a", "n1"))
    stale = created.metadata.resource_version
    leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": "n2"}})  # strategic merge
    for content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        exc = api_error(partial(leases.patch_namespaced_lease, "a", "default", {
            "metadata": {"resourceVersion": stale}, "spec": {"holderIdentity": "n3"}}, _content_type=content_type))
        assert exc.status == 409 and status_body(exc)["message"] == CONFLICT
    current = leases.read_namespaced_lease("a", "default")
    patched = leases.patch_namespaced_lease(
        "a", "default", {"metadata": {"resourceVersion": current.metadata.resource_version},
                         "spec": {"holderIdentity": "n3", "leaseDurationSeconds": None}},
        _content_type="application/merge-patch+json")
    assert patched.spec.holder_identity == "n3"


def test_json_patch_applies_rfc6902_and_422_on_a_failed_test(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a", "n1"))
    patched = leases.patch_namespaced_lease("a", "default", [
        {"op": "test", "path": "/spec/holderIdentity", "value": "n1"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "n2"},
        {"op": "add", "path": "/metadata/labels", "value": {"role/x": "y"}},
        {"op": "copy", "from": "/spec/holderIdentity", "path": "/metadata/labels/holder"},
    ])
    assert patched.spec.holder_identity == "n2" and patched.metadata.labels == {"role/x": "y", "holder": "n2"}
    exc = api_error(lambda: leases.patch_namespaced_lease(
        "a", "default", [{"op": "test", "path": "/spec/holderIdentity", "value": "n1"}]))
    assert exc.status == 422


def test_json_patch_module_follows_the_rfc() -> None:
    doc = {"a": {"b~c": [1, 2], "d/e": 3}, "f": [1]}
    assert json_patch(doc, [{"op": "move", "from": "/a/d~1e", "path": "/g"}]) == {"a": {"b~c": [1, 2]}, "f": [1],
                                                                                     "g": 3}
    assert json_patch(doc, [{"op": "add", "path": "/a/b~0c/-", "value": 9}])["a"]["b~c"] == [1, 2, 9]
    assert json_patch(doc, [{"op": "remove", "path": "/a/b~0c/0"}])["a"]["b~c"] == [2]
    assert doc == {"a": {"b~c": [1, 2], "d/e": 3}, "f": [1]}  # the input is left alone
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


# --- status subresource ------------------------------------------------------------------------------------------


def test_service_status_is_a_separate_subresource(cluster: Cluster) -> None:
    core = cluster.core()
    created = core.create_namespaced_service("default", {
        "metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}})
    assert created.status.load_balancer.ingress is None  # the server owns status on create
    rv = int(created.metadata.resource_version)

    after_status = core.patch_namespaced_service_status("web", "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}, "spec": {"ports": [{"port": 81}]},
        "metadata": {"labels": {"sneaky": "yes"}}})
    assert after_status.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert after_status.spec.ports[0].port == 80 and after_status.metadata.labels is None
    assert int(after_status.metadata.resource_version) > rv and after_status.metadata.generation == 1

    after_main = core.patch_namespaced_service("web", "default", {
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}, "spec": {"ports": [{"port": 8080}]}})
    assert after_main.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert after_main.spec.ports[0].port == 8080 and after_main.metadata.generation == 2
    labelled = core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.generation == 2  # metadata is not spec

    after_main.status = {"loadBalancer": {}}
    after_main.metadata.resource_version = None
    replaced = core.replace_namespaced_service_status("web", "default", after_main)
    assert replaced.status.load_balancer.ingress is None and replaced.metadata.labels == {"a": "b"}
    node = core.create_node({"metadata": {"name": "n1"}})
    node.status = {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
    assert core.replace_node_status("n1", node).status.addresses[0].address == "192.0.2.1"


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
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(cluster: Cluster, selector: str, expected: list[str]) -> None:
    leases = cluster.leases()
    labelled = [("a", {"app": "vip", "tier": "cp"}), ("b", {"app": "vip"}), ("c", {"app": "web", "tier": "lb"}),
                ("d", None)]
    for name, labels in labelled:
        leases.create_namespaced_lease("default", lease(name, labels=labels))
    found = leases.list_namespaced_lease("default", label_selector=selector)
    assert [item.metadata.name for item in found.items] == expected


def test_field_selectors_and_bad_selectors(cluster: Cluster) -> None:
    leases = cluster.leases()
    for ns, name in [("default", "a"), ("default", "b"), ("kube-system", "a")]:
        leases.create_namespaced_lease(ns, lease(name))

    def names(**kwargs: str) -> list[tuple[str, str]]:
        found = leases.list_lease_for_all_namespaces(**kwargs)
        return [(i.metadata.namespace, i.metadata.name) for i in found.items]

    assert names(field_selector="metadata.name=a") == [("default", "a"), ("kube-system", "a")]
    assert names(field_selector="metadata.name!=a") == [("default", "b")]
    assert names(field_selector="metadata.namespace==kube-system") == [("kube-system", "a")]
    assert names(field_selector="metadata.namespace=default,metadata.name!=b") == [("default", "a")]
    assert api_error(lambda: names(field_selector="spec.holderIdentity=x")).status == 400
    assert api_error(lambda: names(label_selector="app in vip")).status == 400


# --- watches -----------------------------------------------------------------------------------------------------


def test_watch_from_a_resource_version_replays_exactly_the_later_events(cluster: Cluster) -> None:
    leases = cluster.leases()
    start = leases.create_namespaced_lease("default", lease("a", "n1")).metadata.resource_version
    leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": "n2"}})
    leases.create_namespaced_lease("default", lease("b"))
    leases.create_namespaced_lease("other", lease("elsewhere"))
    leases.delete_namespaced_lease("a", "default")
    seen: list[tuple[str, str, int]] = []
    stream = watches.Watch()
    for event in stream.stream(leases.list_namespaced_lease, "default", resource_version=start, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name, int(event["object"].metadata.resource_version)))
        if len(seen) == 3:
            leases.create_namespaced_lease("default", lease("live"))  # the history ends; live events follow
        if event["object"].metadata.name == "live":
            stream.stop()
    assert [(kind, name) for kind, name, _ in seen] == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a"),
                                                        ("ADDED", "live")]
    revisions = [rv for _, _, rv in seen]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4 and revisions[0] > int(start)


def test_watch_from_now_starts_with_synthetic_added_events(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a"))
    leases.create_namespaced_lease("default", lease("b"))
    for resource_version in (None, "0"):
        seen = []
        stream = watches.Watch()
        kwargs = {"resource_version": resource_version} if resource_version else {}
        for event in stream.stream(leases.list_namespaced_lease, "default", timeout_seconds=20, **kwargs):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": str(resource_version)}})
            if len(seen) == 3:
                stream.stop()
        assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a")]


def test_watch_ends_after_timeout_seconds(cluster: Cluster) -> None:
    leases = cluster.leases()
    began = time.monotonic()
    events = list(watches.Watch().stream(leases.list_namespaced_lease, "default", timeout_seconds=1))
    elapsed = time.monotonic() - began
    assert events == [] and 0.9 <= elapsed < 5


def test_too_old_resource_version_is_410_gone(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(history=5)
    leases = cluster.leases()
    old = leases.create_namespaced_lease("default", lease("a", "h0")).metadata.resource_version
    for i in range(1, 10):
        leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": f"h{i}"}})
    exc = api_error(lambda: list(watches.Watch().stream(leases.list_namespaced_lease, "default",
                                                     resource_version=old, timeout_seconds=5)))
    assert exc.status == 410
    # On the wire: HTTP 200, then one ERROR event carrying an Expired Status, as the real server streams it.
    raw = cluster.raw("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1&resourceVersion={old}")
    assert raw.status_code == 200
    event = json.loads(raw.text.splitlines()[0])
    assert event["type"] == "ERROR"
    assert (event["object"]["kind"], event["object"]["code"], event["object"]["reason"]) == ("Status", 410, "Expired")
    # A list at an exact, too old revision is 410 too; a recent one is rebuilt from the history.
    exc = api_error(lambda: leases.list_namespaced_lease("default", resource_version=old,
                                                         resource_version_match="Exact"))
    assert exc.status == 410
    now = int(leases.list_namespaced_lease("default").metadata.resource_version)
    earlier = leases.list_namespaced_lease("default", resource_version=str(now - 2), resource_version_match="Exact")
    assert earlier.items[0].spec.holder_identity == "h7" and earlier.metadata.resource_version == str(now - 2)


def test_watch_bookmarks_carry_the_current_revision(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(bookmark_interval=0.2)
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a"))
    leases.create_namespaced_lease("other", lease("b"))
    stream = watches.Watch()
    kinds = []
    for event in stream.stream(leases.list_namespaced_lease, "default", allow_watch_bookmarks=True,
                               timeout_seconds=20):
        kinds.append(event["type"])
        if event["type"] == "BOOKMARK":
            revision = leases.list_lease_for_all_namespaces().metadata.resource_version
            assert event["raw_object"]["metadata"]["resourceVersion"] == revision
            assert event["raw_object"]["kind"] == "Lease"
            stream.stop()
    assert kinds == ["ADDED", "BOOKMARK"]


def test_watch_honours_namespace_and_selectors(cluster: Cluster) -> None:
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("marker", labels={"app": "vip"}))
    seen = []
    stream = watches.Watch()
    for event in stream.stream(leases.list_namespaced_lease, "default", label_selector="app=vip",
                               timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 1:
            leases.create_namespaced_lease("default", lease("x", labels={"app": "vip"}))
            leases.create_namespaced_lease("default", lease("y", labels={"app": "web"}))
            leases.create_namespaced_lease("other", lease("z", labels={"app": "vip"}))
            leases.patch_namespaced_lease("x", "default", {"metadata": {"labels": {"app": "web"}}})
            leases.patch_namespaced_lease("y", "default", {"metadata": {"labels": {"app": "vip"}}})
        if len(seen) == 4:
            stream.stop()
    assert seen == [("ADDED", "marker"), ("ADDED", "x"), ("DELETED", "x"), ("ADDED", "y")]
    named = next(iter(watches.Watch().stream(leases.list_lease_for_all_namespaces, field_selector="metadata.name=z",
                                           timeout_seconds=20)))
    assert (named["type"], named["object"].metadata.namespace) == ("ADDED", "other")


# --- tokens ------------------------------------------------------------------------------------------------------


def test_unknown_or_missing_token_is_401(cluster: Cluster) -> None:
    exc = api_error(lambda: cluster.leases("tok-stolen").list_namespaced_lease("default"))
    assert exc.status == 401 and status_body(exc)["reason"] == "Unauthorized"
    assert cluster.raw("GET", "/api/v1/namespaces", token=None).status_code == 401
    assert cluster.raw("GET", "/version", token=None).status_code == 200  # public, as on the real server
    assert cluster.raw("GET", "/healthz", token=None).text == "ok"
    assert "tok-stolen" not in cluster.emulator.request_counts()


def test_without_a_token_table_any_token_is_its_own_identity(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(tokens=None)
    cluster.leases("whoever").list_namespaced_lease("default")
    assert cluster.emulator.request_counts() == {"whoever": 1}


def test_request_counts_per_identity_and_verb(cluster: Cluster) -> None:
    leases, other = cluster.leases(), cluster.leases("tok-n2")
    leases.create_namespaced_lease("default", lease("a"))
    leases.read_namespaced_lease("a", "default")
    leases.replace_namespaced_lease("a", "default", lease("a", "n1"))
    leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": "n1"}})
    leases.list_namespaced_lease("default")
    next(iter(watches.Watch().stream(leases.list_namespaced_lease, "default", timeout_seconds=20)))
    leases.delete_namespaced_lease("a", "default")
    other.list_namespaced_lease("default")
    assert cluster.emulator.request_counts() == {"n1": 7, "n2": 1}
    assert cluster.emulator.request_counts_by_verb()["n1"] == {
        "create": 1, "get": 1, "update": 1, "patch": 1, "list": 1, "watch": 1, "delete": 1}


# --- faults ------------------------------------------------------------------------------------------------------




def timed(call: Callable[[], object]) -> float:
    began = time.monotonic()
    call()
    return time.monotonic() - began


def test_latency_is_added_for_one_identity_only(cluster: Cluster) -> None:
    n1, n2 = cluster.leases(), cluster.leases("tok-n2")
    n1.list_namespaced_lease("default")  # connections are up before timing
    n2.list_namespaced_lease("default")
    cluster.emulator.set_fault("n1", latency=0.5)
    assert timed(lambda: n1.list_namespaced_lease("default")) >= 0.5
    assert timed(lambda: n2.list_namespaced_lease("default")) < 0.4
    cluster.emulator.clear_fault("n1")
    assert timed(lambda: n1.list_namespaced_lease("default")) < 0.4


def test_429_carries_retry_after_then_requests_succeed(cluster: Cluster) -> None:
    leases = cluster.leases(retries=False)
    cluster.emulator.set_fault("n1", fail_next=1, fail_status=429, retry_after=2)
    exc = api_error(lambda: leases.list_namespaced_lease("default"))
    assert exc.status == 429 and exc.headers is not None and exc.headers["Retry-After"] == "2"
    assert status_body(exc)["reason"] == "TooManyRequests" and status_body(exc)["details"]["retryAfterSeconds"] == 2
    assert leases.list_namespaced_lease("default").items == []
    # With its default urllib3 retries the client sleeps Retry-After and retries a GET by itself.
    cluster.emulator.set_fault("n1", fail_next=1, fail_status=429, retry_after=1)
    assert timed(lambda: cluster.leases().list_namespaced_lease("default")) >= 1
    assert cluster.emulator.request_counts() == {"n1": 4}


def test_500_for_the_next_n_requests_then_success(cluster: Cluster) -> None:
    leases, other = cluster.leases(), cluster.leases("tok-n2")
    cluster.emulator.set_fault("n1", fail_next=3)
    for _ in range(3):
        exc = api_error(lambda: leases.list_namespaced_lease("default"))
        assert exc.status == 500 and status_body(exc)["reason"] == "InternalError"
        other.list_namespaced_lease("default")  # another identity is not affected
    assert leases.list_namespaced_lease("default").items == []


def test_refuse_closes_connections_without_an_answer(cluster: Cluster) -> None:
    n1, n1_default_retries, n2 = cluster.leases(retries=False), cluster.leases(), cluster.leases("tok-n2")
    cluster.emulator.set_fault("n1", outage="refuse")
    began = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        n1.read_namespaced_lease("a", "default")
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # urllib3 retried the GET 3 times, all refused
        n1_default_retries.read_namespaced_lease("a", "default")
    with pytest.raises(urllib3.exceptions.ProtocolError):  # a write is never retried
        n1_default_retries.create_namespaced_lease("default", lease("a"))
    assert time.monotonic() - began < 2
    assert n2.list_namespaced_lease("default").items == []
    cluster.emulator.clear_fault("n1")
    assert n1.list_namespaced_lease("default").items == []


def test_hang_leaves_requests_unanswered_until_the_client_gives_up(cluster: Cluster) -> None:
    n1, n2 = cluster.leases(retries=False), cluster.leases("tok-n2")
    cluster.emulator.set_fault("n1", outage="hang")
    began = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        n1.create_namespaced_lease("default", lease("lost"), _request_timeout=0.5)
    assert 0.5 <= time.monotonic() - began < 3
    assert api_error(lambda: n2.read_namespaced_lease("lost", "default", _request_timeout=5)).status == 404
    cluster.emulator.clear_fault("n1")
    assert cluster.emulator.get_object(LEASES, "default", "lost") is None  # given up on: never applied
    assert n1.list_namespaced_lease("default", _request_timeout=5).items == []

    # A request still waiting when the outage ends is served then, as TCP would deliver it after a healed partition.
    cluster.emulator.set_fault("n1", outage="hang")
    arrived = cluster.emulator.request_counts()["n1"] + 1
    answers: queue.Queue[object] = queue.Queue()

    def create_late() -> None:
        answers.put(n1.create_namespaced_lease("default", lease("late"), _request_timeout=30))

    threading.Thread(target=create_late, daemon=True).start()
    wait_for(lambda: cluster.emulator.request_counts()["n1"] == arrived)
    assert answers.empty() and cluster.emulator.get_object(LEASES, "default", "late") is None
    cluster.emulator.clear_fault("n1")
    answer: Any = answers.get(timeout=10)
    assert answer.metadata.name == "late"


def _watch_in_background(leases: client.CoordinationV1Api) -> tuple[Any, queue.Queue[object]]:
    """Run a watch in a thread; its events (type, name), then "END" or the exception, arrive on the queue."""
    events: queue.Queue[object] = queue.Queue()
    stream = watches.Watch()

    def run() -> None:
        try:
            for event in stream.stream(leases.list_namespaced_lease, "default"):
                events.put((event["type"], event["object"].metadata.name))
            events.put("END")
        except Exception as exc:  # the test asserts on it
            events.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return stream, events


def test_hang_silences_open_watches_and_refuse_cuts_them(cluster: Cluster) -> None:
    n1, n2 = cluster.leases(), cluster.leases("tok-n2")
    n2.create_namespaced_lease("default", lease("a"))
    stream, events = _watch_in_background(n1)
    try:
        assert events.get(timeout=10) == ("ADDED", "a")
        cluster.emulator.set_fault("n1", outage="hang")
        n2.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": "n2"}})
        with pytest.raises(queue.Empty):
            events.get(timeout=0.5)
        cluster.emulator.clear_fault("n1")
        assert events.get(timeout=10) == ("MODIFIED", "a")  # delivered late, as after a healed partition
        cluster.emulator.set_fault("n1", outage="refuse")
        assert isinstance(events.get(timeout=10), urllib3.exceptions.ProtocolError)
    finally:
        stream.stop()


# --- HTTP control endpoint ---------------------------------------------------------------------------------------


def test_control_endpoint_sets_and_clears_faults_and_reports_counts(cluster: Cluster) -> None:
    leases = cluster.leases(retries=False)
    answer = cluster.raw("POST", "/_emulator/faults/n1", token=None,
                         json={"fail_next": 1, "fail_status": 429, "retry_after": 3, "latency": 0.05})
    assert answer.status_code == 200 and answer.json()["fail_status"] == 429
    assert cluster.raw("GET", "/_emulator/faults", token=None).json()["n1"]["fail_next"] == 1
    exc = api_error(lambda: leases.list_namespaced_lease("default"))
    assert exc.status == 429 and exc.headers is not None and exc.headers["Retry-After"] == "3"
    assert cluster.raw("POST", "/_emulator/faults/n1", token=None, json={"outage": "refuse"}).status_code == 200
    with pytest.raises(urllib3.exceptions.HTTPError):
        leases.list_namespaced_lease("default")
    assert cluster.raw("DELETE", "/_emulator/faults/n1", token=None).status_code == 200
    assert leases.list_namespaced_lease("default").items == []
    counts = cluster.raw("GET", "/_emulator/requests", token=None).json()
    assert counts == {"requests": {"n1": 3}, "verbs": {"n1": {"list": 3}}}
    for bad in ({"outage": "sideways"}, {"fail_status": 404}, {"latency": -1}, {"surprise": 1}, [1]):
        assert cluster.raw("POST", "/_emulator/faults/n1", token=None, json=bad).status_code == 400


def test_control_endpoint_is_absent_when_disabled(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(control=False)
    assert cluster.raw("POST", "/_emulator/faults/n1", token=None, json={"outage": "refuse"}).status_code == 401
    assert cluster.raw("POST", "/_emulator/faults/n1", json={"outage": "refuse"}).status_code == 404
    assert cluster.emulator.faults() == {}


# --- lifecycle, kubeconfig, CLI ----------------------------------------------------------------------------------


def test_listens_on_several_addresses_and_pre_bound_sockets(tmp_path: Path) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with EmulatorThread(KubeApiEmulator(TOKENS), listen=[("127.0.0.1", 0)], sockets=[sock]) as thread:
        assert len(thread.urls) == 2 and thread.urls[1] == f"http://127.0.0.1:{port}"
        for url in thread.urls:
            assert requests.get(url + "/version", timeout=10).json()["major"] == "1"
    path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", "tok-n1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_module_runs_as_a_command_and_exits_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "kubevip_metal.emulators.kubeapi", "--listen", "127.0.0.1:0",
                                "--token", "n1=tok-n1", "--history", "50"], stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    stderr = process.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        line = lines.get(timeout=20)
        assert "event=emulator.started" in line
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match is not None
        response = requests.get(match.group(0) + "/api/v1/namespaces",
                                headers={"Authorization": "Bearer tok-n1"}, timeout=10)
        assert [item["metadata"]["name"] for item in response.json()["items"]] == [
            "default", "kube-node-lease", "kube-public", "kube-system"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        reader.join(10)
        assert any("event=emulator.stopped" in rest for rest in list(lines.queue))
    finally:
        process.kill()
        process.wait()
        reader.join(10)  # the pipe ends with the process
        stderr.close()


# --- the official leader election ---------------------------------------------------------------------------------


def test_official_leader_election_acquires_and_loses_the_lease(cluster: Cluster) -> None:
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    path = write_kubeconfig(cluster.tmp / "elector.kubeconfig", cluster.url, "tok-n1")
    saved = client.Configuration.get_default_copy()
    kubeconfig.load_kube_config(config_file=str(path))  # LeaseLock only uses the process-wide default client
    try:
        started, stopped = threading.Event(), threading.Event()
        lock = LeaseLock("plndr-cp-lock", "kube-system", "n1")  # type: ignore[no-untyped-call]
        settings = electionconfig.Config(lock, lease_duration=3, renew_deadline=2,  # type: ignore[no-untyped-call]
                                         retry_period=1, onstarted_leading=started.set,
                                         onstopped_leading=stopped.set)
        elector = leaderelection.LeaderElection(settings)  # type: ignore[no-untyped-call]
        runner = threading.Thread(target=elector.run, daemon=True)
        runner.start()
        assert started.wait(10)
        held = cluster.emulator.get_object(LEASES, "kube-system", "plndr-cp-lock")
        assert held is not None and held["spec"]["holderIdentity"] == "n1"
        leases = cluster.leases("tok-n2")
        renewed = next(iter(watches.Watch().stream(leases.list_namespaced_lease, "kube-system",
                                                 resource_version=held["metadata"]["resourceVersion"],
                                                 timeout_seconds=10)))
        assert renewed["type"] == "MODIFIED" and renewed["object"].spec.holder_identity == "n1"
        # The official elector has no stop(): make every request of n1 fail, so it steps down after its deadline.
        cluster.emulator.set_fault("n1", fail_next=1_000_000)
        assert stopped.wait(10)
        runner.join(10)
        assert not runner.is_alive()
    finally:
        client.Configuration.set_default(saved)
