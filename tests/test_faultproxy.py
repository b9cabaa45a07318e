"""The fault proxy in front of the real kube-apiserver, through the official client: it relays requests and
streaming watches faithfully, and injects the emulator's faults (latency, 429 with Retry-After, 5xx, an outage
that hangs or refuses, open watches silenced or cut) for one client only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch

from kubevip_testbed.peers.apiserver import ADMIN_TOKEN, RealApiServer
from kubevip_testbed.peers.faultproxy import FaultProxy, FaultProxyThread
from kubevip_testbed.waiting import wait_for

watches: Any = watch  # untyped in the client


@pytest.fixture
def proxied(real_api: RealApiServer) -> Iterator[tuple[FaultProxy, Any, Any]]:
    """The proxy, and two admin clients through it: `victim` (faulted) and `bystander` (never faulted)."""
    assert real_api.pki is not None
    proxy = FaultProxy(real_api.url, real_api.ca_cert, real_api.pki.serving_cert, real_api.pki.serving_key)
    other = real_api.service_account_token("kube-system", "kube-vip")
    with FaultProxyThread(proxy, listen=[("127.0.0.1", 0)]) as thread:
        proxy.identify(ADMIN_TOKEN, "victim")
        proxy.identify(other, "bystander")
        with real_api.client(server=thread.urls[0]) as victim, real_api.client(other, thread.urls[0]) as bystander:
            yield proxy, client.CoordinationV1Api(victim), client.CoordinationV1Api(bystander)


def _lease(name: str) -> client.V1Lease:
    return client.V1Lease(metadata=client.V1ObjectMeta(name=name), spec=client.V1LeaseSpec(holder_identity="a"))


def test_requests_and_watches_are_relayed(proxied: tuple[FaultProxy, Any, Any]) -> None:
    proxy, victim, _ = proxied
    created = victim.create_namespaced_lease("kube-system", _lease("relay"))
    seen: list[str] = []

    def follow() -> None:
        for event in watches.Watch().stream(victim.list_namespaced_lease, "kube-system", timeout_seconds=3,
                                            resource_version=created.metadata.resource_version,
                                            field_selector="metadata.name=relay"):
            seen.append(f"{event['type']} {event['object'].spec.holder_identity}")

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)
    created.spec.holder_identity = "b"
    victim.replace_namespaced_lease("relay", "kube-system", created)
    stale = client.V1Lease(metadata=client.V1ObjectMeta(name="relay",
                                                        resource_version=created.metadata.resource_version))
    with pytest.raises(client.ApiException) as conflict:  # the real server's 409 passes through unchanged
        victim.replace_namespaced_lease("relay", "kube-system", stale)
    assert conflict.value.status == 409
    wait_for(lambda: seen == ["MODIFIED b"], timeout=3)
    follower.join()
    verbs = proxy.requests.by_verb()["victim"]
    assert verbs["post"] == 1 and verbs["put"] == 2 and verbs["get"] == 1


def test_429_and_5xx_for_one_client_only(proxied: tuple[FaultProxy, Any, Any]) -> None:
    proxy, victim, bystander = proxied
    proxy.set_fault("victim", fail_next=2, fail_status=429, retry_after=3)
    for _ in range(2):
        with pytest.raises(client.ApiException) as throttled:
            victim.list_namespaced_lease("kube-system")
        assert throttled.value.status == 429
        assert (throttled.value.headers or {}).get("Retry-After") == "3"
    bystander.list_namespaced_lease("kube-system")  # unaffected
    victim.list_namespaced_lease("kube-system")  # the two failures are used up
    proxy.set_fault("victim", fail_next=1, fail_status=503)
    with pytest.raises(client.ApiException) as unavailable:
        victim.list_namespaced_lease("kube-system")
    assert unavailable.value.status == 503 and unavailable.value.reason == "Service Unavailable"


def test_latency_is_added_to_one_client(proxied: tuple[FaultProxy, Any, Any]) -> None:
    proxy, victim, bystander = proxied
    proxy.set_fault("victim", latency=0.4)
    started = time.monotonic()
    victim.list_namespaced_lease("kube-system")
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    bystander.list_namespaced_lease("kube-system")
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize("outage", ["hang", "refuse"])
def test_outage_hangs_or_refuses_requests_and_open_watches(proxied: tuple[FaultProxy, Any, Any],
                                                           outage: str) -> None:
    proxy, victim, bystander = proxied
    name = f"outage-{outage}"
    created = victim.create_namespaced_lease("kube-system", _lease(name))
    seen: list[str] = []
    ended: list[BaseException | None] = []

    def follow() -> None:
        try:
            for event in watches.Watch().stream(victim.list_namespaced_lease, "kube-system", timeout_seconds=4,
                                                resource_version=created.metadata.resource_version,
                                                field_selector=f"metadata.name={name}"):
                seen.append(event["object"].spec.holder_identity)
            ended.append(None)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            ended.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.3)
    proxy.set_fault("victim", outage=outage)
    started = time.monotonic()
    with pytest.raises((urllib3.exceptions.HTTPError, OSError)):
        victim.read_namespaced_lease(name, "kube-system", _request_timeout=1)
    waited = time.monotonic() - started
    assert waited >= 0.9 if outage == "hang" else waited < 0.5
    created.spec.holder_identity = "b"
    bystander.replace_namespaced_lease(name, "kube-system", created)  # the bystander still writes
    time.sleep(0.3)
    assert seen == []  # the victim's watch heard nothing of it
    if outage == "refuse":
        wait_for(lambda: bool(ended), timeout=2)
        assert ended[0] is not None  # cut, not ended cleanly
    proxy.clear_fault("victim")
    assert victim.read_namespaced_lease(name, "kube-system").spec.holder_identity == "b"
    follower.join(6)
