"""--enableNodeLabeling with real managers in the namespace rig, on the emulator and on the real kube-apiserver
(there under a ServiceAccount bound to exactly the ClusterRole `manifest rbac --enableNodeLabeling` renders): the
leader's Node carries kube-vip.io/has-ip=<VIP>; after the leader crashes (SIGKILL: its label stays behind) the new
leader's Node carries it and the crashed node's stale label is removed; after SIGTERM of everyone no Node has it.
With --services the Services Lease holder's Node carries service-provided.kube-vip.io/<name>.<namespace> while it
serves the Service, and loses it when the Service is deleted and at SIGTERM."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubevip_metal.daemon.nodelabels import HAS_IP
from kubevip_metal.services.labels import PREFIX
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for
from tests.lab_support import settled
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig

TIMERS = (2.0, 1.5, 0.4)
ACCOUNT = ("kube-system", "kube-vip-node-labels")


def _labelling_account(request: pytest.FixtureRequest) -> None:
    """On the real API server: a ServiceAccount bound to a copy of the rendered ClusterRole for node labels, so the
    managers run with exactly what `manifest rbac --enableNodeLabeling` grants (the session's kube-vip account has
    the role rendered without the option)."""
    from kubevip_testbed.peers.objects import apply, rendered

    documents = rendered("rbac", "--enableNodeLabeling")
    role = copy.deepcopy(next(doc for doc in documents if doc["kind"] == "ClusterRole"))
    role["metadata"]["name"] = "kube-vip-test-node-labels"
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": ACCOUNT[1], "namespace": ACCOUNT[0]}}
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kube-vip-test-node-labels"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT[1], "namespace": ACCOUNT[0]}]}
    apply(request.getfixturevalue("real_api"), [role, account, binding])


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    yield from _lab(request, ["--enableNodeLabeling"])


@pytest.fixture
def services_lab(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    yield from _lab(request, ["--enableNodeLabeling", "--services"])


def _lab(request: pytest.FixtureRequest, extra_args: list[str]) -> Iterator[LabCluster]:
    require_rig()
    backend = tier_backend(request)
    if backend is not None:
        from kubevip_testbed.peers.lab_backend import RealApiBackend

        _labelling_account(request)
        backend = RealApiBackend(request.getfixturevalue("real_api"), service_account=ACCOUNT)
    with LabCluster(timers=TIMERS, api=backend, extra_args=extra_args) as cluster:
        with cluster.api.admin_client() as api:
            core = client.CoreV1Api(api)
            for node in cluster.nodes:  # the real server outlives one lab: its Nodes may exist, with labels
                try:
                    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)))
                except client.ApiException as exc:
                    if exc.status != 409:
                        raise
                    core.patch_node(node, {"metadata": {"labels": {HAS_IP: None}}})
        for node in cluster.nodes:
            cluster.start(node)
        yield cluster


def _carriers(lab: LabCluster, key: str = HAS_IP) -> dict[str, str]:
    """Node -> its value of label `key`, for the lab's Nodes that carry it."""
    with lab.api.admin_client() as api:
        nodes = client.CoreV1Api(api).list_node(_request_timeout=5).items
    found = {}
    for node in nodes:
        labels = (node.metadata.labels if node.metadata else None) or {}
        name = str(node.metadata.name if node.metadata else "")
        if name in lab.nodes and key in labels:
            found[name] = str(labels[key])
    return found


@pytest.mark.parametrize("lab", ["emulator", "kube-apiserver"], indirect=True)
def test_exactly_the_leader_carries_the_label_through_a_crash_and_none_after_sigterm(lab: LabCluster) -> None:
    leader = settled(lab)
    wait_for(lambda: _carriers(lab) == {leader: lab.vip})

    lab.kill(leader)  # a crash: no clean-up runs, the label stays on its Node
    assert _carriers(lab) == {leader: lab.vip}
    wait_for(lambda: lab.lease_holder() not in ("", leader), timeout=30)
    successor = lab.lease_holder()
    wait_for(lambda: _carriers(lab) == {successor: lab.vip}, timeout=30)  # the stale one is gone
    removed = [e for e in lab.events(successor) if e["event"] == "nodelabel.stale_removed"]
    assert [e["node"] for e in removed] == [leader]

    for node in lab.managers:  # a follower may still be starting (its handlers not installed yet)
        wait_for(lambda: any(e["event"] == "daemon.started" for e in lab.events(node)), timeout=20)  # noqa: B023
    for node in [n for n in list(lab.managers) if n != successor] + [successor]:  # the leader last
        started = time.monotonic()
        assert lab.terminate(node) == 0
        print(f"{node} stopped in {time.monotonic() - started:.3f} s")
    assert _carriers(lab) == {}
    assert any(e["event"] == "nodelabel.removed" for e in lab.events(successor))


@pytest.mark.parametrize("services_lab", ["emulator", "kube-apiserver"], indirect=True)
def test_the_services_lease_holder_carries_each_served_services_label(services_lab: LabCluster) -> None:
    from tests.test_services_rig import Api

    lab, key = services_lab, PREFIX + "web.default"
    api = Api(lab)
    try:
        api.service("web", "198.51.100.20")
        api.endpoints("web", ["n2"])
        wait_for(lambda: lab.api.lease_holder("kube-system", "plndr-svcs-lock") != "", timeout=30)
        holder = lab.api.lease_holder("kube-system", "plndr-svcs-lock")
        wait_for(lambda: _carriers(lab, key) == {holder: "198.51.100.20"}, timeout=30)
        leader = settled(lab)
        wait_for(lambda: _carriers(lab) == {leader: lab.vip})  # the control plane's label beside it
        api.delete("web")
        wait_for(lambda: _carriers(lab, key) == {}, timeout=30)
        api.service("web", "198.51.100.20")  # back: labelled again, then removed by SIGTERM
        wait_for(lambda: _carriers(lab, key) == {holder: "198.51.100.20"}, timeout=30)
        for node in lab.managers:
            wait_for(lambda: any(e["event"] == "daemon.started" for e in lab.events(node)), timeout=20)  # noqa: B023
        for node in list(lab.managers):
            assert lab.terminate(node) == 0
        assert _carriers(lab, key) == {}
        assert _carriers(lab) == {}
    finally:
        api.close()
