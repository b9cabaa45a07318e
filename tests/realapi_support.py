"""Pytest fixtures for the real-API tier (registered by `pytest_plugins` in tests/conftest.py): one kube-apiserver
(with Debian's etcd) for the whole session, with the RBAC of `kube-vip-metal manifest rbac` applied.

Without the binary (tests/peers/build.sh) or etcd these tests skip on a workstation and fail in CI (`CI` set).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kubevip_testbed.lab.api_backend import ApiBackend
from kubevip_testbed.peers import apiserver
from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.objects import apply, rendered
from tests.rig_support import require

NODES = ["n1", "n2", "n3", "n4", "n5"]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the real API server, so tests/run.sh can run them once the build is done."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "real_api" in getattr(item, "fixturenames", ()) or "kube-apiserver" in params.values():
            item.add_marker(pytest.mark.realapi)


def require_real_api() -> None:
    require("real kube-apiserver", apiserver.missing())


@pytest.fixture(scope="session")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApiServer]:
    require_real_api()
    with RealApiServer(tmp_path_factory.mktemp("kube-apiserver"), nodes=NODES) as server:
        # what kube-controller-manager (not run here) would create: each namespace's `default` ServiceAccount
        apply(server, [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
                       for ns in ("default", "kube-system")])
        apply(server, rendered("rbac"))
        yield server


def tier_backend(request: pytest.FixtureRequest, tier: str | None = None) -> ApiBackend | None:
    """The API a rig lab runs on for `tier` (default: the test's parameter, else "emulator"): None means the
    emulator (LabCluster's own); "kube-apiserver" is the session's real API server, where each manager
    authenticates with its own token of the `kube-vip` ServiceAccount (the rendered RBAC)."""
    if (tier or getattr(request, "param", "emulator")) != "kube-apiserver":
        return None
    from kubevip_testbed.peers.lab_backend import RealApiBackend

    return RealApiBackend(request.getfixturevalue("real_api"))
