"""Real authorization for Events: the rendered RBAC's two verbs on core/v1 events are exactly what the recorder
needs. With the rendered role an Event is created and its count bumped; with `patch` taken away the bump is refused
(dropped and counted, nothing raised), with `create` taken away nothing is written at all."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config

from kubevip_metal.events import EventRecorder, ObjectRef
from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.objects import apply, rendered
from kubevip_testbed.waiting import wait_for


def _token_without(real_api: RealApiServer, verb: str) -> str:
    """A ServiceAccount bound to a copy of the rendered ClusterRole minus `verb` on events; its token."""
    role = copy.deepcopy(next(doc for doc in rendered("rbac") if doc["kind"] == "ClusterRole"))
    name = f"kube-vip-test-events-no-{verb}"
    role["metadata"]["name"] = name
    for rule in role["rules"]:
        if "events" in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": "kube-system"}}
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}]}
    apply(real_api, [role, account, binding])
    return real_api.service_account_token("kube-system", name)


def _client(real_api: RealApiServer, path: Path, token: str) -> Any:
    loader: Any = kube_config  # untyped in the client
    return loader.new_client_from_config(config_file=str(real_api.write_kubeconfig(path, token)))


def _twice(api: Any, node: str) -> EventRecorder:
    """The same Event recorded twice, the second after the first was written (so it is a PATCH of its count)."""
    recorder = EventRecorder(lambda: api, node, backoff=0.01, attempts=2)
    recorder.start()
    ref = ObjectRef.node(node)
    recorder.record(ref, "BgpPeerDown", "BGP session to 10.0.0.1 (AS 65000) down: test", "Warning")
    wait_for(recorder.idle, timeout=20)
    recorder.record(ref, "BgpPeerDown", "BGP session to 10.0.0.1 (AS 65000) down: test", "Warning")
    wait_for(recorder.idle, timeout=20)
    recorder.close()
    return recorder


def _counts(real_api: RealApiServer, node: str) -> list[int | None]:
    with real_api.client() as admin:
        items = client.CoreV1Api(admin).list_namespaced_event("default").items
    return [e.count for e in items if e.involved_object.name == node and e.reporting_instance == node]


def test_the_rendered_role_creates_and_bumps_events(real_api: RealApiServer, tmp_path: Path) -> None:
    api = _client(real_api, tmp_path / "full.kubeconfig", real_api.service_account_token("kube-system", "kube-vip"))
    recorder = _twice(api, "events-full")
    assert (recorder.created, recorder.patched, recorder.dropped) == (1, 1, {})
    assert _counts(real_api, "events-full") == [2]


def test_without_patch_the_bump_is_refused(real_api: RealApiServer, tmp_path: Path) -> None:
    api = _client(real_api, tmp_path / "no-patch.kubeconfig", _token_without(real_api, "patch"))
    recorder = _twice(api, "events-no-patch")
    assert (recorder.created, recorder.patched, recorder.dropped) == (1, 0, {"refused": 1})
    assert _counts(real_api, "events-no-patch") == [1]


def test_without_create_nothing_is_written(real_api: RealApiServer, tmp_path: Path) -> None:
    api = _client(real_api, tmp_path / "no-create.kubeconfig", _token_without(real_api, "create"))
    recorder = _twice(api, "events-no-create")
    assert (recorder.created, recorder.dropped) == (0, {"refused": 2})
    assert _counts(real_api, "events-no-create") == []
