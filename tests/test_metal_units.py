"""Metal pieces that need no API server: retry policy, the metadata client (with `responses`), self-discovery."""

from __future__ import annotations

import pytest
import requests
import responses

from kubevip_metal.metal import metadata
from kubevip_metal.metal.client import Device
from kubevip_metal.metal.identity import IdentityError, find_self
from kubevip_metal.metal.retry import MetalApiError, call, retryable, server_wait

URL = "http://metadata.test/metadata"


class _HttpError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.reason = status, headers or {}, "boom"


def test_retry_policy_classifies_errors() -> None:
    assert retryable(_HttpError(429)) and retryable(_HttpError(500)) and retryable(_HttpError(503))
    assert not retryable(_HttpError(400)) and not retryable(_HttpError(404)) and not retryable(_HttpError(422))
    assert retryable(ConnectionResetError())


def test_server_wait_reads_retry_after_and_rate_limit_reset() -> None:
    assert server_wait(_HttpError(429, {"Retry-After": "2.5"})) == 2.5
    assert server_wait(_HttpError(429, {"X-RateLimit-Reset": "105"}), now=lambda: 100.0) == 5.0
    assert server_wait(_HttpError(429)) is None


def test_call_honours_retry_after_and_never_retries_other_4xx() -> None:
    waits: list[float] = []
    outcomes = iter([_HttpError(429, {"Retry-After": "3"}), _HttpError(503)])

    def flaky() -> str:
        exc = next(outcomes, None)
        if exc is not None:
            raise exc
        return "ok"

    assert call("op", flaky, sleep=waits.append) == "ok"
    assert waits[0] >= 3.0 and len(waits) == 2
    attempts = []

    def refused() -> None:
        attempts.append(1)
        raise _HttpError(422)

    with pytest.raises(MetalApiError, match="op: HTTP 422") as info:
        call("op", refused, sleep=waits.append)
    assert len(attempts) == 1 and info.value.status == 422


@responses.activate
def test_metadata_gives_the_device_id() -> None:
    responses.get(URL, json={"id": "dev-1", "hostname": "n1.example", "bgp_neighbors": [{"peer_as": 65530}]})
    found = metadata.fetch(URL)
    assert found is not None and found.device_id == "dev-1" and found.bgp_neighbors[0]["peer_as"] == 65530


@responses.activate
def test_metadata_retries_5xx_then_gives_up_quietly() -> None:
    responses.get(URL, status=503)
    assert metadata.fetch(URL, attempts=2) is None
    assert len(responses.calls) == 2


@responses.activate
def test_metadata_unreachable_or_garbage_is_none() -> None:
    responses.get(URL, body=requests.ConnectionError("no route"))
    assert metadata.fetch(URL, attempts=1) is None
    responses.replace(responses.GET, URL, body="not json")
    assert metadata.fetch(URL, attempts=1) is None
    responses.replace(responses.GET, URL, json={"hostname": "no id"})
    assert metadata.fetch(URL, attempts=1) is None


class _Devices:
    def __init__(self, devices: list[Device]) -> None:
        self._devices = devices

    def devices(self, project_id: str) -> list[Device]:
        return self._devices

    def device(self, device_id: str) -> Device:
        return next(d for d in self._devices if d.id == device_id)


def test_find_self_order_and_matching() -> None:
    client = _Devices([Device("a", "n1.example.com"), Device("b", "n2"), Device("c", "N3.other")])
    none = lambda: None  # noqa: E731
    assert find_self(client, "p", "n2", device_id="a", metadata=none).id == "a"  # type: ignore[arg-type]
    meta = lambda: metadata.Metadata("m", "x", ())  # noqa: E731
    assert find_self(client, "p", "n2", device_id=None, metadata=meta).id == "m"  # type: ignore[arg-type]
    assert find_self(client, "p", "n2", device_id=None, metadata=none).id == "b"  # type: ignore[arg-type]
    assert find_self(client, "p", "n1", device_id=None, metadata=none).id == "a"  # type: ignore[arg-type]
    assert find_self(client, "p", "n3.cluster.local", device_id=None, metadata=none).id == "c"  # type: ignore[arg-type]
    with pytest.raises(IdentityError, match="no device for node 'n9'; tried"):
        find_self(client, "p", "n9", device_id=None, metadata=none)  # type: ignore[arg-type]
    twins = _Devices([Device("a", "n1.x"), Device("b", "n1.y")])
    with pytest.raises(IdentityError, match="2 devices match"):
        find_self(twins, "p", "n1", device_id=None, metadata=none)  # type: ignore[arg-type]
