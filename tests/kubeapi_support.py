"""Small helpers for tests that talk to a Kubernetes API (the emulator or kube-apiserver) through the official
client: the emulator on loopback with a client per identity, a Lease body, an error's Status body, and the
ApiException a call raises."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator


class EmulatedApi:
    """The Kubernetes API emulator served on loopback, where each of `identities` has the token `tok-<name>`;
    `client(name)` is a new official ApiClient authenticated as that identity. Closing closes every client made
    and stops the server."""

    def __init__(self, identities: Iterable[str]) -> None:
        self.kube = KubeApiEmulator({f"tok-{name}": name for name in identities})
        self.thread = EmulatorThread(self.kube)
        self.thread.start()
        self._clients: list[Any] = []  # the client ships no types for close()

    def client(self, name: str) -> Any:
        configuration = client.Configuration()
        configuration.host = self.thread.urls[0]
        configuration.api_key = {"authorization": f"Bearer tok-{name}"}
        configuration.retries = False
        made = client.ApiClient(configuration)
        self._clients.append(made)
        return made

    def close(self) -> None:
        for made in self._clients:
            made.close()
        self.thread.stop()

    def __enter__(self) -> EmulatedApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


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
