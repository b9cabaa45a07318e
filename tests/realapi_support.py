"""Pytest fixtures for the real-API tier (registered by `pytest_plugins` in tests/conftest.py): one kube-apiserver
(with Debian's etcd) for the whole session, with the RBAC of `kube-vip-metal manifest rbac` applied.

Without the binary (tests/peers/build.sh) or etcd these tests skip on a workstation and fail in CI (`CI` set).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.peers import apiserver
from tests.peers.apiserver import RealApiServer
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


def rendered(*args: str) -> list[dict[str, Any]]:
    """The documents `kube-vip-metal manifest ARGS` prints, as an operator would pipe them to kubectl."""
    out = subprocess.run([sys.executable, "-m", "kubevip_metal", "manifest", *args], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def apply(server: RealApiServer, documents: list[dict[str, Any]], dry_run: bool = False) -> None:
    """Create each document (server-side dry run with `dry_run`); one that exists already is left as it is."""
    from kubernetes import utils as kube_utils

    utils: Any = kube_utils  # untyped in the client
    with server.client() as api:
        for doc in documents:
            try:
                utils.create_from_dict(api, doc, namespace=doc.get("metadata", {}).get("namespace", "default"),
                                       **({"dry_run": "All"} if dry_run else {}))
            except utils.FailToCreateError as exc:
                if any(error.status != 409 for error in exc.api_exceptions):
                    raise


@pytest.fixture(scope="session")
def real_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealApiServer]:
    require_real_api()
    with RealApiServer(tmp_path_factory.mktemp("kube-apiserver"), nodes=NODES) as server:
        # what kube-controller-manager (not run here) would create: each namespace's `default` ServiceAccount
        apply(server, [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}
                       for ns in ("default", "kube-system")])
        apply(server, rendered("rbac"))
        yield server
