"""Kubernetes objects on the real API server, created as an operator would: the documents `kube-vip-metal manifest`
prints, sent through the official client's `create_from_dict` (kubectl create).

Shared by the real-API test fixtures and `benchmarks/failover.py`, so both run under exactly the RBAC that
`kube-vip-metal manifest rbac` renders.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from kubevip_testbed.peers.apiserver import RealApiServer


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
