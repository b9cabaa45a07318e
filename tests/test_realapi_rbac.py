"""Real authorization: the rendered RBAC is exactly what the election needs. With one verb taken away (update on
Leases) a candidate can never take over an expired Lease on the real kube-apiserver; with the rendered role it does."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from kubevip_testbed.election import Candidate, leaders, ours
from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.objects import apply, rendered
from kubevip_testbed.waiting import wait_for

TIMERS = "2,1.5,0.4"
LEASE = "rbac-lease"


def _without_lease_update(real_api: RealApiServer) -> str:
    """A ServiceAccount bound to a copy of the rendered ClusterRole minus `update` on Leases; its token."""
    role = copy.deepcopy(next(doc for doc in rendered("rbac") if doc["kind"] == "ClusterRole"))
    role["metadata"]["name"] = "kube-vip-test-no-lease-update"
    for rule in role["rules"]:
        if "leases" in rule["resources"]:
            rule["verbs"] = [verb for verb in rule["verbs"] if verb != "update"]
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "kube-vip-no-update", "namespace": "kube-system"}}
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "kube-vip-test-no-lease-update"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "kube-vip-no-update", "namespace": "kube-system"}]}
    apply(real_api, [role, account, binding])
    return real_api.service_account_token("kube-system", "kube-vip-no-update")


def test_a_missing_permission_keeps_a_candidate_from_ever_leading(real_api: RealApiServer, tmp_path: Path,
                                                                   candidates: list[Candidate]) -> None:
    full = real_api.write_kubeconfig(tmp_path / "full.kubeconfig",
                                     real_api.service_account_token("kube-system", "kube-vip"))
    crippled = real_api.write_kubeconfig(tmp_path / "crippled.kubeconfig", _without_lease_update(real_api))
    first = ours("n1", full, LEASE, TIMERS).start()
    candidates.append(first)
    wait_for(lambda: leaders([first]) == ["n1"])
    first.kill()  # the Lease stays, held by n1, and expires after 2 s; taking it over needs `update`
    weak = ours("n2", crippled, LEASE, TIMERS).start()
    candidates.append(weak)
    # it runs and has read the Lease (a process still starting after the fixed 6 s would prove nothing)
    wait_for(lambda: any(e["event"] == "new_leader" for e in weak.snapshot()), timeout=30)
    time.sleep(6)
    assert not any(e["event"] == "started_leading" for e in weak.snapshot())
    strong = ours("n3", full, LEASE, TIMERS).start()  # the rendered role is enough
    candidates.append(strong)
    wait_for(lambda: leaders([weak, strong]) == ["n3"], timeout=10)
