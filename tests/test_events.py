"""The Event recorder against the Kubernetes API emulator, with an injected clock: identical events aggregate into
one Event whose count is PATCHed, a new object after the window or when the Event expired; the per-object token
bucket (25, then one per 5 minutes); a full queue, a refused or an unreachable API drop and count, never raise; the
bounded flush at close. And the daemon's hooks: BGP session transitions, VIP drift repairs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from generic.addresses import Vip
from generic.bgp.speaker import SessionPhase, SessionState
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import build_config
from kubevip_metal.daemon.events import DaemonEvents
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.events import EventRecorder, ObjectRef
from kubevip_testbed.emulators.kubeapi import KubeApiEmulator
from kubevip_testbed.waiting import wait_for
from tests.fakes import FakeAddresses
from tests.kubeapi_support import EmulatedApi

LEASE = ObjectRef.lease("kube-system", "plndr-cp-lock", "uid-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kube() -> Iterator[tuple[KubeApiEmulator, Any, Any]]:
    """The emulator, the daemon's client (identity n1) and the test's admin CoreV1Api."""
    with EmulatedApi(["n1", "admin"]) as api:
        yield api.kube, api.client("n1"), client.CoreV1Api(api.client("admin"))


def events(core: Any, namespace: str = "kube-system") -> list[Any]:
    return sorted(core.list_namespaced_event(namespace).items, key=lambda e: e.metadata.name)


def recorder(api: Any, clock: Clock, **kwargs: Any) -> EventRecorder:
    made = EventRecorder(lambda: api, "n1", clock=clock, backoff=0.01, **kwargs)
    made.start()
    return made


def settle(rec: EventRecorder) -> None:
    wait_for(rec.idle, timeout=10)


def test_identical_events_are_one_event_whose_count_is_bumped(kube: tuple[KubeApiEmulator, Any, Any]) -> None:
    _emulator, api, core = kube
    clock = Clock()
    rec = recorder(api, clock)
    try:
        rec.record(LEASE, "BecameLeader", "n1 became leader")
        settle(rec)
        (first,) = events(core)
        assert first.count == 1
        assert first.involved_object.kind == "Lease" and first.involved_object.uid == "uid-1"
        assert first.involved_object.namespace == "kube-system" and first.involved_object.name == "plndr-cp-lock"
        assert first.source.component == "kube-vip-metal" and first.source.host == "n1"
        assert first.reporting_component == "kube-vip-metal" and first.reporting_instance == "n1"
        assert first.type == "Normal" and first.reason == "BecameLeader"

        clock.now += 60
        rec.record(LEASE, "BecameLeader", "n1 became leader")
        rec.record(LEASE, "BecameLeader", "n1 became leader")
        settle(rec)
        (bumped,) = events(core)
        assert bumped.metadata.name == first.metadata.name and bumped.count == 3
        assert rec.patched >= 1 and rec.created == 1

        rec.record(LEASE, "BecameLeader", "n2 became leader")  # another message: another Event
        settle(rec)
        assert sorted(e.count for e in events(core)) == [1, 3]

        clock.now += 601  # past the window: a new object, the old one keeps its count
        rec.record(LEASE, "BecameLeader", "n1 became leader")
        settle(rec)
        assert sorted(e.count for e in events(core) if e.message == "n1 became leader") == [1, 3]
    finally:
        rec.close()


def test_an_expired_event_is_created_again(kube: tuple[KubeApiEmulator, Any, Any]) -> None:
    _emulator, api, core = kube
    rec = recorder(api, Clock())
    try:
        rec.record(LEASE, "SteppedDown", "n1 stopped leading: shutting down")
        settle(rec)
        (first,) = events(core)
        core.delete_namespaced_event(first.metadata.name, "kube-system")  # what the API server's TTL does
        rec.record(LEASE, "SteppedDown", "n1 stopped leading: shutting down")
        settle(rec)
        (again,) = events(core)
        assert again.metadata.name != first.metadata.name and again.count == 1
    finally:
        rec.close()


def test_each_object_has_a_token_bucket(kube: tuple[KubeApiEmulator, Any, Any]) -> None:
    _emulator, api, core = kube
    clock = Clock()
    rec = recorder(api, clock, burst=5, refill=300)
    node = ObjectRef.node("n1")
    try:
        for i in range(8):
            rec.record(node, "BgpPeerDown", f"flap {i}", "Warning")
        rec.record(LEASE, "BecameLeader", "n1 became leader")  # another object: its own bucket
        settle(rec)
        assert rec.dropped == {"rate_limited": 3}
        assert len(events(core, "default")) == 5  # a Node's Events go to `default`, as the kubelet's
        assert len(events(core)) == 1
        clock.now += 300  # one token back
        rec.record(node, "BgpPeerDown", "flap 8", "Warning")
        rec.record(node, "BgpPeerDown", "flap 9", "Warning")
        settle(rec)
        assert rec.dropped == {"rate_limited": 4}
        node_events = events(core, "default")
        assert len(node_events) == 6
        assert {e.involved_object.uid for e in node_events} == {"n1"}
        assert all(e.involved_object.namespace is None for e in node_events)
    finally:
        rec.close()


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    rec = EventRecorder(lambda: None, "n1", queue_size=2, clock=Clock())  # no writer started
    for i in range(5):
        rec.record(LEASE, "BecameLeader", f"n{i}")
    assert rec.dropped == {"queue_full": 3}


def test_refused_and_unreachable_writes_are_dropped_and_logged_modestly(
        kube: tuple[KubeApiEmulator, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    emulator, api, core = kube
    emulator.forbid("n1")
    rec = recorder(api, Clock())
    try:
        for i in range(3):
            rec.record(LEASE, "BecameLeader", f"n{i} became leader")
        settle(rec)
        assert rec.dropped == {"refused": 3}
        assert [r.getMessage() for r in caplog.records].count("event.refused") == 1  # then quiet for a minute
        assert events(core) == []
    finally:
        rec.close()

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing listens
    configuration.retries = False
    unreachable = recorder(client.ApiClient(configuration), Clock(), attempts=3)
    try:
        unreachable.record(LEASE, "BecameLeader", "n1 became leader")
        settle(unreachable)
        assert unreachable.dropped == {"failed": 1}
    finally:
        unreachable.close()


def test_no_client_yet_is_retried_then_dropped() -> None:
    rec = recorder(None, Clock(), attempts=2)
    try:
        rec.record(LEASE, "BecameLeader", "n1 became leader")
        settle(rec)
        assert rec.dropped == {"failed": 1}
    finally:
        rec.close()


def test_close_writes_what_is_queued_then_refuses_more(kube: tuple[KubeApiEmulator, Any, Any]) -> None:
    _emulator, api, core = kube
    rec = EventRecorder(lambda: api, "n1", clock=Clock())
    for i in range(3):
        rec.record(LEASE, "SteppedDown", f"n1 stopped leading: reason {i}")
    rec.start()
    rec.close(timeout=10)  # generous: a loaded machine; what counts is that all three were written
    assert len(events(core)) == 3
    rec.record(LEASE, "BecameLeader", "too late")
    assert rec.dropped == {"shutdown": 1}


class ListRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[ObjectRef, str, str, str]] = []

    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = "Normal") -> None:
        self.seen.append((ref, reason, message, kind))


def _daemon_events() -> tuple[DaemonEvents, ListRecorder]:
    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", "192.0.2.10",
                                         "--interface", "eth0", "--nodeName", "n1"])
    assert command is not None
    config = build_config(given, command)
    recorded = ListRecorder()
    return DaemonEvents(config, recorded), recorded


def _state(phase: SessionPhase, since: float, error: str | None = None) -> SessionState:
    return SessionState(ipaddress.ip_address("10.0.0.1"), 65000, phase, since, error)


def test_bgp_session_changes_become_node_events() -> None:
    hooks, recorded = _daemon_events()
    peer = ipaddress.ip_address("10.0.0.1")
    seen = hooks.sessions_changed({}, {peer: _state(SessionPhase.IDLE, 1.0)})
    assert recorded.seen == []  # still starting: nothing to tell
    seen = hooks.sessions_changed(seen, {peer: _state(SessionPhase.ESTABLISHED, 2.0)})
    seen = hooks.sessions_changed(seen, {peer: _state(SessionPhase.ESTABLISHED, 2.0)})
    seen = hooks.sessions_changed(seen, {peer: _state(SessionPhase.IDLE, 3.0, "hold timer expired")})
    seen = hooks.sessions_changed(seen, {peer: _state(SessionPhase.ESTABLISHED, 4.0)})
    hooks.sessions_changed(seen, {peer: _state(SessionPhase.ESTABLISHED, 5.0)})  # a flap between two reads
    assert [(ref.kind, ref.name, reason, kind) for ref, reason, _m, kind in recorded.seen] == [
        ("Node", "n1", "BgpPeerUp", "Normal"), ("Node", "n1", "BgpPeerDown", "Warning"),
        ("Node", "n1", "BgpPeerUp", "Normal"), ("Node", "n1", "BgpPeerDown", "Warning"),
        ("Node", "n1", "BgpPeerUp", "Normal")]
    assert "hold timer expired" in recorded.seen[1][2] and "10.0.0.1 (AS 65000)" in recorded.seen[1][2]


def test_a_drift_repair_lands_on_each_owners_object() -> None:
    hooks, recorded = _daemon_events()
    addresses = FakeAddresses()
    vips = VipController(addresses, [])
    vips.on_repaired = hooks.vip_repaired
    vip = Vip(ipaddress.ip_address("192.0.2.10"), 32, "eth0")
    hooks.service_served("default", "web", "uid-web", [vip])
    vips.claim("control-plane", [vip], active=True)
    vips.claim("service:default/web", [vip], active=True)
    addresses.held.discard(vip)  # deleted by hand
    assert vips.reconcile() == 1
    repaired = [(ref.kind, ref.name, ref.uid, kind) for ref, reason, _m, kind in recorded.seen
                if reason == "VipDriftRepaired"]
    assert repaired == [("Lease", "plndr-cp-lock", "", "Warning"), ("Service", "web", "uid-web", "Warning")]
    assert "re-added" in recorded.seen[-1][2]


def test_stepping_down_says_why() -> None:
    hooks, recorded = _daemon_events()
    hooks.stepped_down("not renewed within the renew deadline")
    hooks.stepped_down("shutting down")
    assert [(reason, kind) for _r, reason, _m, kind in recorded.seen] == [("SteppedDown", "Warning"),
                                                                         ("SteppedDown", "Normal")]
    assert recorded.seen[0][2] == "n1 stopped leading: not renewed within the renew deadline"


def test_outcomes_are_metrics(kube: tuple[KubeApiEmulator, Any, Any]) -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from kubevip_metal.metrics import DaemonCollector

    _emulator, api, core = kube
    rec = recorder(api, Clock(), burst=2)
    try:
        for _ in range(3):
            rec.record(LEASE, "BecameLeader", "n1 became leader")
        settle(rec)
    finally:
        rec.close()
    config = SimpleNamespace(node_name="n1", election=SimpleNamespace(lease_name="plndr-cp-lock"))
    daemon = SimpleNamespace(config=config, control_plane=None, services=None,
                             vips=SimpleNamespace(repairs=0, announcers=[]), events=SimpleNamespace(recorder=rec))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    got = {s.labels["result"]: s.value for family in registry.collect() for s in family.samples
           if s.name == "kube_vip_events_total"}
    # one Event (count 2): written as one request, or created and then bumped, as the writer happened to see them
    assert got["rate_limited"] == 1 and got["created"] == 1 and got["patched"] in (0, 1)
    (written,) = events(core)
    assert written.count == 2


def test_a_hanging_api_never_holds_up_the_daemons_stop() -> None:
    """The SteppedDown of a clean stop goes to an API server that accepts connections and never answers: the stop
    still ends well within SIGTERM's 2 s (Events get what is left of 1.2 s), and the Event is counted as lost."""
    import socket
    import time

    from kubevip_metal.daemon.daemon import Daemon
    from kubevip_metal.daemon.dependencies import Dependencies
    from kubevip_metal.daemon.modes import ModeSpec
    from tests.fakes import RecordingAnnouncer
    from tests.memory_lock import MemoryStore

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshakes; nobody ever reads
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
    configuration.retries = False
    hanging: Any = client.ApiClient(configuration)
    made: list[EventRecorder] = []

    def events_factory(_config: Any, _api: Any) -> EventRecorder:
        made.append(EventRecorder(lambda: hanging, "n1"))
        return made[-1]

    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", "192.0.2.10",
                                         "--nodeName", "n1", "--leaseDuration", "1", "--leaseRenewDuration", "0.75",
                                         "--leaseRetry", "0.2"])
    assert command is not None
    store, addresses = MemoryStore(), FakeAddresses()
    deps = Dependencies(api_client=lambda: "unused", addresses=addresses, metal_client=lambda: None,
                        lease_lock=lambda _api, _ns, _name: store.client("n1"), events=events_factory)
    announcer = RecordingAnnouncer()
    modes: Any = {build_config(given, command).mode: ModeSpec(lambda a, v: a.default_route_interface(v),
                                                              lambda _c, _d, _p, _a: [announcer])}
    daemon = Daemon(build_config(given, command), deps, modes)
    try:
        daemon.start()
        wait_for(lambda: bool(addresses.held), timeout=10)  # leading: BecameLeader is now stuck in the writer
        began = time.monotonic()
        daemon.stop()
        assert time.monotonic() - began < 2.0
        assert not addresses.held
        (rec,) = made
        # once the hanging request times out, the writer counts the BecameLeader and the SteppedDown as lost
        wait_for(lambda: sum(rec.dropped.values()) == 2, timeout=30)
        assert rec.created == 0
    finally:
        daemon.stop()
        silent.close()
        hanging.close()
