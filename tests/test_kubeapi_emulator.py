"""The Kubernetes API emulator's own mechanics, exercised through the official `kubernetes` client over real HTTP.

The API behaviour the daemon relies on (conflicts, status separation, watches that resume or expire, selectors,
Lease fields) is in test_api_contract.py, run against the emulator and a real kube-apiserver alike. Here: what only
the emulator has (discovery of its own version, bounded history, bookmark interval, per-identity faults and request
counts, the control endpoint, listening sockets, the command line) and its documented differences.
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
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from kubernetes import client, config, watch
from kubernetes.client import ApiClient

from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig
from kubevip_testbed.emulators.kubeapi_patch import PatchError, json_patch
from kubevip_testbed.waiting import wait_for
from tests.kubeapi_support import api_error, lease, status_body

# `kubernetes.config` and `kubernetes.watch` are untyped; the API classes and models are typed.
kubeconfig: Any = config
watches: Any = watch

TOKENS = {"tok-n1": "n1", "tok-n2": "n2"}
LEASES = "coordination.k8s.io/v1/leases"


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


# --- emulator-only differences and mechanics (the shared API behaviour is in test_api_contract.py) ----------------


def test_server_side_apply_is_refused_with_415(cluster: Cluster) -> None:
    response = cluster.raw("PATCH", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", data=b"a: b",
                           headers={"Content-Type": "application/apply-patch+yaml"})
    assert (response.status_code, response.json()["message"]) == (415, "415: Unsupported Media Type")


def test_json_patch_module_follows_the_rfc() -> None:
    doc = {"a": {"b~c": [1, 2], "d/e": 3}, "f": [1]}
    assert json_patch(doc, [{"op": "move", "from": "/a/d~1e", "path": "/g"}]) == {"a": {"b~c": [1, 2]}, "f": [1],
                                                                                     "g": 3}
    assert json_patch(doc, [{"op": "add", "path": "/a/b~0c/-", "value": 9}])["a"]["b~c"] == [1, 2, 9]
    assert json_patch(doc, [{"op": "remove", "path": "/a/b~0c/0"}])["a"]["b~c"] == [2]
    assert doc == {"a": {"b~c": [1, 2], "d/e": 3}, "f": [1]}  # the input is left alone
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "remove", "path": "/nope"}])


def test_bounded_history_expires_old_resource_versions(make_cluster: Callable[..., Cluster]) -> None:
    """The emulator keeps the last `history` writes of all kinds; an older resourceVersion is 410 Gone, worded as
    the real server's watch cache words it (Events, which it serves from etcd, have their own wording)."""
    cluster = make_cluster(history=5)
    leases = cluster.leases()
    old = leases.create_namespaced_lease("default", lease("a", "h0")).metadata.resource_version
    for i in range(1, 10):
        leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": f"h{i}"}})
    now = int(leases.list_namespaced_lease("default").metadata.resource_version)
    raw = cluster.raw("GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1&resourceVersion={old}")
    event = json.loads(raw.text.splitlines()[0])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["message"] == f"too old resource version: {old} ({now - 5})"  # the newest one forgotten
    exc = api_error(lambda: leases.list_namespaced_lease("default", resource_version=old,
                                                         resource_version_match="Exact"))
    assert exc.status == 410


def test_bookmarks_come_every_bookmark_interval(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(bookmark_interval=0.2)
    leases = cluster.leases()
    leases.create_namespaced_lease("default", lease("a"))
    stream = watches.Watch()
    kinds = []
    for event in stream.stream(leases.list_namespaced_lease, "default", allow_watch_bookmarks=True,
                               timeout_seconds=20):
        kinds.append(event["type"])
        if len(kinds) == 1:
            leases.create_namespaced_lease("other", lease("b"))  # unseen here, but the revision moves on
        if event["type"] == "BOOKMARK":
            revision = leases.list_lease_for_all_namespaces().metadata.resource_version
            assert event["raw_object"]["metadata"]["resourceVersion"] == revision
            stream.stop()
    assert kinds == ["ADDED", "BOOKMARK"]


# --- tokens ------------------------------------------------------------------------------------------------------


def test_without_a_token_table_any_token_is_its_own_identity(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(tokens=None)
    cluster.leases("whoever").list_namespaced_lease("default")
    assert cluster.emulator.request_counts() == {"whoever": 1}


def test_request_counts_per_identity_and_verb(cluster: Cluster) -> None:
    leases, other = cluster.leases(), cluster.leases("tok-n2")
    leases.create_namespaced_lease("default", lease("a"))
    leases.replace_namespaced_lease("a", "default", leases.read_namespaced_lease("a", "default"))
    leases.patch_namespaced_lease("a", "default", {"spec": {"holderIdentity": "n1"}})
    leases.list_namespaced_lease("default")
    next(iter(watches.Watch().stream(leases.list_namespaced_lease, "default", timeout_seconds=20)))
    leases.delete_namespaced_lease("a", "default")
    other.list_namespaced_lease("default")
    # Requests nobody could be charged for (an unknown token, no token) are not counted.
    assert api_error(lambda: cluster.leases("tok-stolen").list_namespaced_lease("default")).status == 401
    assert cluster.raw("GET", "/api/v1/namespaces", token=None).status_code == 403
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
    assert cluster.raw("POST", "/_emulator/faults/n1", token=None, json={"outage": "refuse"}).status_code == 403
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
    process = subprocess.Popen([sys.executable, "-m", "kubevip_testbed.emulators.kubeapi", "--listen", "127.0.0.1:0",
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
