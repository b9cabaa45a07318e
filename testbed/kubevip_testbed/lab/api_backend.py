"""Where a lab cluster's managers find their Kubernetes API: the emulator by default, or (in tests and benchmarks)
a real kube-apiserver behind a fault proxy. Either serves the nodes on a socket in the router namespace, so
a node cut off by nftables really loses its API server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Protocol

from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig


class ApiBackend(Protocol):
    def start(self, nodes: list[str], node_socket: socket.socket) -> str:
        """Serve `nodes` on `node_socket` (in the router namespace); return the URL they use."""

    def write_kubeconfig(self, node: str, path: Path, server: str) -> None: ...

    def lease_holder(self, namespace: str, name: str) -> str:
        """The Lease's holderIdentity, "" when there is none (or no Lease)."""

    def set_fault(self, node: str, *, latency: float = 0.0, outage: str | None = None, fail_next: int = 0,
                  fail_status: int = 500, retry_after: float | None = None) -> None: ...

    def clear_fault(self, node: str) -> None: ...

    def request_counts_by_verb(self) -> dict[str, dict[str, int]]:
        """Requests per node and verb since the last reset."""

    def reset_request_counts(self) -> None: ...

    def admin_client(self) -> Any:
        """An official `kubernetes.client.ApiClient` with cluster-admin rights, for a test's own writes (Nodes)."""

    def stop(self) -> None: ...


ADMIN_TOKEN = "tok-admin"  # the emulator's test identity, not a credential


class EmulatorBackend:
    """The in-process Kubernetes API emulator, one token per node (`tok-<node>`); also served on loopback."""

    def __init__(self) -> None:
        self.emulator: KubeApiEmulator | None = None
        self.thread: EmulatorThread | None = None

    def start(self, nodes: list[str], node_socket: socket.socket) -> str:
        tokens = {f"tok-{node}": node for node in nodes} | {ADMIN_TOKEN: "admin"}
        self.emulator = KubeApiEmulator(tokens)
        self.thread = EmulatorThread(self.emulator, listen=[("127.0.0.1", 0)], sockets=[node_socket])
        self.thread.start()
        return self.thread.urls[-1]

    def write_kubeconfig(self, node: str, path: Path, server: str) -> None:
        write_kubeconfig(path, server, f"tok-{node}")

    def lease_holder(self, namespace: str, name: str) -> str:
        lease = self.emulator.get_object("coordination.k8s.io/v1/leases", namespace, name) if self.emulator else None
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def set_fault(self, node: str, *, latency: float = 0.0, outage: str | None = None, fail_next: int = 0,
                  fail_status: int = 500, retry_after: float | None = None) -> None:
        assert self.emulator is not None
        self.emulator.set_fault(node, latency=latency, outage=outage, fail_next=fail_next, fail_status=fail_status,
                                retry_after=retry_after)

    def clear_fault(self, node: str) -> None:
        assert self.emulator is not None
        self.emulator.clear_fault(node)

    def request_counts_by_verb(self) -> dict[str, dict[str, int]]:
        assert self.emulator is not None
        return self.emulator.request_counts_by_verb()

    def reset_request_counts(self) -> None:
        assert self.emulator is not None
        self.emulator.reset_request_counts()

    def admin_client(self) -> Any:
        from kubernetes import client

        assert self.thread is not None
        configuration = client.Configuration()
        configuration.host = self.thread.urls[0]  # loopback
        configuration.api_key = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        configuration.retries = False
        return client.ApiClient(configuration)

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
