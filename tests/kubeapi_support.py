"""Small helpers for tests that talk to a Kubernetes API (the emulator or kube-apiserver) through the official
client: a Lease body, an error's Status body, and the ApiException a call raises."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException


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
