"""Per-Service elections under contention: three candidates want the same 90 Leases at once, with their writes
in flight concurrently, against the Kubernetes API emulator over real HTTP. The property is client-go's: never
two leaders of one Lease at the same moment (what the Services controller reads, `leading(key)`, sampled
throughout), the leader is the one the Lease names, and a stop gives back everything, even a renewal that was
in flight when it began."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from generic.election.elector import Timers
from kubevip_metal.services.elections import ServiceElections, renew_interval
from kubevip_metal.services.model import ServiceKey
from kubevip_testbed.waiting import wait_for
from tests.kubeapi_support import EmulatedApi

TIMERS = Timers(3.0, 2.0, 0.6)
NODES = ("n1", "n2", "n3")
KEYS = [ServiceKey("default", f"s{i}") for i in range(90)]


@pytest.fixture
def apis() -> Iterator[dict[str, Any]]:
    with EmulatedApi((*NODES, "admin")) as api:
        yield {name: api.client(name) for name in (*NODES, "admin")}


def _holder(coordination: Any, key: ServiceKey) -> str:
    lease = coordination.read_namespaced_lease(f"kubevip-{key.name}", key.namespace)
    return str(lease.spec.holder_identity or "")


def test_a_held_lease_is_renewed_at_half_the_deadline_with_two_retries_of_slack() -> None:
    assert renew_interval(Timers(15.0, 10.0, 2.0)) == 5.0  # kube-vip's defaults: 2.5 times fewer writes
    assert renew_interval(Timers(30.0, 20.0, 2.0)) == 10.0
    assert renew_interval(Timers(5.0, 3.0, 1.0)) == 1.0  # two retry periods left before the deadline
    assert renew_interval(Timers(3.0, 2.0, 1.5)) == 1.5  # the retry period is the floor


def test_contended_leases_never_have_two_leaders(apis: dict[str, Any]) -> None:
    candidates = {n: ServiceElections(apis[n], n, TIMERS, lambda _key, _leading: None) for n in NODES}
    overlaps: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for key in KEYS:
                leading = [n for n, e in candidates.items() if e.leading(key)]
                if len(leading) > 1:
                    overlaps.append(f"{key}: {leading}")
            stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    coordination = client.CoordinationV1Api(apis["admin"])
    try:
        for elections in candidates.values():
            elections.start()
        sampler.start()
        for key in KEYS:  # every candidate wants every Lease at the same moment
            for elections in candidates.values():
                elections.want(key)
        wait_for(lambda: all(sum(e.leading(k) for e in candidates.values()) == 1 for k in KEYS), timeout=30)
        before, rested = sum(e.requests for e in candidates.values()), time.monotonic()
        stop.wait(3 * TIMERS.lease_duration)  # renewals go on; nobody may take over a live Lease
        writes = sum(e.requests for e in candidates.values()) - before
        # at rest each held Lease is renewed every renew_interval (0.8 s here), not every retry period (0.6 s)
        print(f"\nwrites at rest: {writes} in {time.monotonic() - rested:.1f} s for {len(KEYS)} Leases")
        assert writes <= len(KEYS) * ((time.monotonic() - rested) / renew_interval(TIMERS) + 1), writes
        for key in KEYS:
            assert [n for n, e in candidates.items() if e.leading(key)] == [_holder(coordination, key)], key
        candidates["n1"].stop()  # a graceful stop: n1's Leases are given back and taken over at once
        wait_for(lambda: all(sum(e.leading(k) for e in candidates.values()) == 1 for k in KEYS), timeout=10)
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join()
        for elections in candidates.values():
            elections.stop()
    assert not overlaps, overlaps[:5]
    assert all(_holder(coordination, key) == "" for key in KEYS)  # every stop released what it held
