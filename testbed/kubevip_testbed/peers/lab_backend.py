"""A lab cluster's Kubernetes API backed by the real kube-apiserver: the nodes reach it through the fault proxy on
the rig's router, each with its own token of the `kube-vip` ServiceAccount, so the RBAC that
`kube-vip-metal manifest rbac` renders is what authorizes every request the managers make."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from kubernetes import client

from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.faultproxy import FaultProxy, FaultProxyThread

SERVICE_ACCOUNT = ("kube-system", "kube-vip")


class RealApiBackend:
    """`ApiBackend` (kubevip_testbed.lab.api_backend) on a running `RealApiServer`, shared by many lab clusters."""

    def __init__(self, server: RealApiServer, service_account: tuple[str, str] = SERVICE_ACCOUNT) -> None:
        self.server = server
        self.service_account = service_account
        self.tokens: dict[str, str] = {}
        self.proxy: FaultProxy | None = None
        self._thread: FaultProxyThread | None = None

    def start(self, nodes: list[str], node_socket: socket.socket) -> str:
        assert self.server.pki is not None
        pki = self.server.pki
        self.proxy = FaultProxy(self.server.url, pki.ca_cert, pki.serving_cert, pki.serving_key)
        self._thread = FaultProxyThread(self.proxy, listen=[], sockets=[node_socket])
        url = self._thread.start()[-1]
        for node in nodes:
            self.tokens[node] = self.server.service_account_token(*self.service_account)
            self.proxy.identify(self.tokens[node], node)
        self._forget_leases()  # the server outlives one cluster: start every cluster without a holder
        return url

    def _forget_leases(self) -> None:
        with self.server.client() as api:
            coordination = client.CoordinationV1Api(api)
            for lease in coordination.list_namespaced_lease("kube-system").items:
                name = str(lease.metadata.name if lease.metadata else "")
                if name.startswith("plndr-"):
                    with contextlib.suppress(client.ApiException):
                        coordination.delete_namespaced_lease(name, "kube-system")

    def write_kubeconfig(self, node: str, path: Path, server: str) -> None:
        self.server.write_kubeconfig(path, self.tokens[node], server)

    def lease_holder(self, namespace: str, name: str) -> str:
        with self.server.client() as api:
            try:
                lease = client.CoordinationV1Api(api).read_namespaced_lease(name, namespace, _request_timeout=5)
            except client.ApiException as exc:
                if exc.status == 404:
                    return ""
                raise
        return str((lease.spec.holder_identity if lease.spec else "") or "")

    def set_fault(self, node: str, *, latency: float = 0.0, outage: str | None = None, fail_next: int = 0,
                  fail_status: int = 500, retry_after: float | None = None) -> None:
        assert self.proxy is not None
        self.proxy.set_fault(node, latency=latency, outage=outage, fail_next=fail_next, fail_status=fail_status,
                             retry_after=retry_after)

    def clear_fault(self, node: str) -> None:
        assert self.proxy is not None
        self.proxy.clear_fault(node)

    def request_counts_by_verb(self) -> dict[str, dict[str, int]]:
        """Requests per node and HTTP method (get, post, put, ...) as the proxy saw them."""
        assert self.proxy is not None
        return self.proxy.requests.by_verb()

    def reset_request_counts(self) -> None:
        assert self.proxy is not None
        self.proxy.requests.reset()

    def admin_client(self) -> Any:
        return self.server.client()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
