"""The daemon started in-process with fakes: the composition root, the manager's retry loop, fatal errors, and two
nodes handing the control-plane VIP over on one in-memory Lease. No namespaces, no subprocesses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from generic.election.lock import Lock
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import Config, Mode, build_config
from kubevip_metal.daemon.daemon import Daemon
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.modes import ModeSpec
from kubevip_metal.errors import FatalError, NotReady
from kubevip_metal.manager import run
from kubevip_testbed.waiting import wait_for
from tests.fakes import FakeAddresses, RecordingAnnouncer, RecordingSpeaker
from tests.memory_lock import MemoryStore
from tests.metal_support import MetalWorld

FAST = ["--leaseDuration", "1", "--leaseRenewDuration", "0.75", "--leaseRetry", "0.2"]


def _config(node: str, *extra: str) -> Config:
    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", "192.0.2.10",
                                         "--nodeName", node, *FAST, *extra])
    assert command is not None
    return build_config(given, command)


class Node:
    """One node's daemon with its own fake kernel and announcer, on a shared Lease store."""

    def __init__(self, name: str, store: MemoryStore, *extra: str) -> None:
        self.name, self.store = name, store
        self.addresses = FakeAddresses()
        self.announcer = RecordingAnnouncer()
        self.api_calls = 0
        self.locks: list[tuple[Any, str, str]] = []
        self.config = _config(name, *extra)
        self.deps = Dependencies(api_client=self._api_client, addresses=self.addresses,
                                 metal_client=self._no_metal, lease_lock=self._lock)
        self.daemon = Daemon(self.config, self.deps, self.modes())

    def modes(self) -> dict[Mode, ModeSpec]:
        return {Mode.ARP: ModeSpec(lambda addresses, version: addresses.default_route_interface(version),
                                   lambda _config, _deps, _priority, _api: [self.announcer])}

    def _api_client(self) -> Any:
        self.api_calls += 1
        return f"api-client-of-{self.name}"

    def _no_metal(self) -> Any:
        raise AssertionError("the ARP mode never builds a Metal client")

    def _lock(self, api: Any, namespace: str, name: str) -> Lock:
        self.locks.append((api, namespace, name))
        return self.store.client(self.name)

    @property
    def holds(self) -> bool:
        return bool(self.addresses.held)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    store = MemoryStore()
    started = [Node("n1", store), Node("n2", store)]
    yield started
    for node in started:
        node.daemon.stop()


def test_two_daemons_hand_the_vip_over_on_stop(nodes: list[Node]) -> None:
    for node in nodes:
        node.daemon.start()
    wait_for(lambda: sum(node.holds for node in nodes) == 1, timeout=20)  # two daemons starting on a busy machine
    leader = next(node for node in nodes if node.holds)
    follower = next(node for node in nodes if node is not leader)
    assert leader.announcer.announced == leader.addresses.held
    assert leader.locks == [(f"api-client-of-{leader.name}", "kube-system", "plndr-cp-lock")]
    leader.daemon.stop()  # steps down (VIP gone), then releases the Lease
    assert not leader.holds and leader.announcer.closed
    # a released Lease is taken at once (the timeout is failure latency only: 2 s was tight on a busy machine)
    wait_for(lambda: follower.holds, timeout=10)
    assert all(node.api_calls == 1 for node in nodes)  # one API client per process, whatever the electors


def test_start_retries_where_it_failed_and_keeps_what_is_up() -> None:
    store = MemoryStore()
    node = Node("n1", store)
    node.addresses.interfaces.discard("eth0")  # no default route yet, so no interface to put the VIP on
    try:
        with pytest.raises(NotReady, match="no --interface given"):
            node.daemon.start()
        node.addresses.interfaces.add("eth0")
        node.daemon.start()
        assert node.api_calls == 1  # the client built by the first attempt was kept
        wait_for(lambda: node.holds, timeout=5)
    finally:
        node.daemon.stop()


def test_a_mode_without_announcers_is_fatal_not_a_silent_no_op() -> None:
    store = MemoryStore()
    node = Node("n1", store)
    with pytest.raises(FatalError, match="arp mode is not available"):
        Daemon(node.config, node.deps, modes={})


def test_manager_retries_not_ready_then_runs_and_exits_zero_on_stop() -> None:
    store = MemoryStore()
    node = Node("n1", store)
    failures = iter([NotReady("no kubeconfig yet")])

    def flaky_api() -> Any:
        for failure in failures:
            raise failure
        return "api"

    node.deps.api_client = flaky_api
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run(node.config, stop, node.deps)))
    thread.start()
    wait_for(lambda: node.holds, timeout=10)  # after one backoff of 1 s
    stop.set()
    thread.join(5)
    assert result == [0] and not node.holds


def test_manager_exits_one_on_a_fatal_error_and_leaves_nothing() -> None:
    store = MemoryStore()
    node = Node("n1", store)

    def refused() -> Any:
        raise FatalError("Metal API: 401 Unauthorized")

    node.deps.api_client = refused
    assert run(node.config, threading.Event(), node.deps) == 1
    assert not node.holds


def test_leftover_vip_from_a_crash_is_removed_before_campaigning() -> None:
    store = MemoryStore()
    other = store.client("n9")  # another node holds the Lease for a long time
    from datetime import UTC, datetime

    from generic.election.lock import LeaderRecord

    now = datetime.now(UTC)
    other.create(LeaderRecord("n9", 60, now, now, 0), 1.0)
    node = Node("n1", store)
    vip = next(iter(_vips(node)))
    node.addresses.held.add(vip)
    try:
        node.daemon.start()
        assert not node.holds
    finally:
        node.daemon.stop()


def _vips(node: Node) -> set[Any]:
    from kubevip_metal.daemon.controlplane import resolve_vips

    return set(resolve_vips(node.config, node.addresses, lambda addresses, version: addresses.default_route_interface(
        version)))


def _metal_config(node: str, world: MetalWorld, *extra: str) -> Config:
    command, given = parse_command_line([
        "manager", "--controlplane", "--metal", "--address", world.eip, "--nodeName", node, *FAST,
        "--metalKey", world.token, "--metalProjectID", world.project_id, "--metalAPIURL", world.api_url,
        "--metalMetadataURL", "http://127.0.0.1:9/metadata", *extra])
    assert command is not None
    return build_config(given, command)


def test_the_elastic_ip_is_an_announcer_that_follows_the_leader(metal: MetalWorld) -> None:
    """Metal mode through the real production wiring of its announcer (the SDK against the spec-validating
    emulator): the EIP goes to the leader's device, the address is held on lo, and it moves on a hand-over."""
    from kubevip_metal.daemon.dependencies import production

    store = MemoryStore()
    daemons: dict[str, tuple[Daemon, FakeAddresses]] = {}
    for node in ("n1", "n2"):
        config = _metal_config(node, metal)
        deps = production(config)
        addresses = FakeAddresses()
        deps.addresses, deps.api_client = addresses, lambda: "api"
        deps.lease_lock = lambda _api, _ns, _name, node=node: store.client(node)  # type: ignore[misc]
        daemons[node] = (Daemon(config, deps), addresses)
    try:
        for daemon, _ in daemons.values():
            daemon.start()

        def holder() -> list[str]:
            assigned = set(metal.emulator.assignments_of(metal.eip))
            return [node for node, device in metal.device_ids.items() if device in assigned]

        wait_for(lambda: len(holder()) == 1 and any(a.held for _, a in daemons.values()), timeout=10)
        leader = holder()[0]
        assert {vip.interface for vip in daemons[leader][1].held} == {"lo"}
        follower = "n2" if leader == "n1" else "n1"
        assert not daemons[follower][1].held
        daemons[leader][0].stop()
        wait_for(lambda: holder() == [follower], timeout=10)  # only the new leader's device holds it
        assert not daemons[leader][1].held
    finally:
        for daemon, _ in daemons.values():
            daemon.stop()


def test_a_metal_token_the_api_refuses_is_fatal(metal: MetalWorld) -> None:
    from kubevip_metal.daemon.dependencies import production

    config = _metal_config("n1", metal, "--metalKey", "wrong-token")
    deps = production(config)
    deps.addresses, deps.api_client = FakeAddresses(), lambda: "api"
    deps.lease_lock = lambda _api, _ns, _name: MemoryStore().client("n1")
    with pytest.raises(FatalError, match="401"):
        Daemon(config, deps).start()


def test_a_metal_api_that_is_down_is_not_ready_not_fatal(metal: MetalWorld) -> None:
    from kubevip_metal.daemon.dependencies import production

    config = _metal_config("n1", metal)
    deps = production(config)
    deps.addresses, deps.api_client = FakeAddresses(), lambda: "api"
    deps.lease_lock = lambda _api, _ns, _name: MemoryStore().client("n1")
    metal.emulator.set_fault(down=True)  # connections refused (each call retried with backoff, then given up)
    with pytest.raises(NotReady, match="Metal API"):
        Daemon(config, deps).start()


def test_leftovers_go_even_while_the_api_server_is_unreachable() -> None:
    """A static pod restarted after a crash removes its stale VIP before it waits for the API server."""
    node = Node("n1", MemoryStore())

    def unreachable() -> Any:
        raise NotReady("no kubeconfig yet")

    node.deps.api_client = unreachable
    node.addresses.held |= _vips(node)
    try:
        with pytest.raises(NotReady):
            node.daemon.start()
        assert not node.holds
    finally:
        node.daemon.stop()


def test_the_lease_is_not_released_while_the_vip_could_not_be_removed() -> None:
    """If the kernel refuses to remove the VIP, the Lease is left to expire: a successor must not add it while it
    is still here."""
    from generic.addresses import AddressError

    store = MemoryStore()
    node = Node("n1", store)
    node.daemon.start()
    wait_for(lambda: node.holds, timeout=5)

    def refuse(_vip: object) -> bool:
        raise AddressError("Operation not permitted")

    node.addresses.remove = refuse  # type: ignore[method-assign,assignment]
    node.daemon.stop()
    assert store.record is not None and store.record.holder == "n1"


def test_stop_while_start_waits_on_the_outside_world_starts_nothing_after() -> None:
    """SIGTERM during a Metal API retry: stop returns at once, and the blocked start builds nothing afterwards."""
    from kubevip_metal.daemon.daemon import Stopped

    node = Node("n1", MemoryStore())
    entered, release = threading.Event(), threading.Event()
    late = RecordingAnnouncer()

    def slow_announcers(_config: Config, _deps: Dependencies, _priority: Any, _api: Any) -> list[Any]:
        entered.set()
        release.wait(5)
        return [late]

    node.daemon = Daemon(node.config, node.deps, {Mode.ARP: ModeSpec(
        lambda addresses, version: addresses.default_route_interface(version), slow_announcers)})
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            node.daemon.start()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    assert entered.wait(5)
    node.daemon.stop()  # does not wait for the blocked call
    release.set()
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    assert late.closed and node.api_calls == 0 and not node.holds



def test_bgp_mode_advertises_the_host_route_from_the_leader_only() -> None:
    """The real BGP mode wiring (speaker settings, announcer, VIP on lo) with a recording speaker."""
    import ipaddress

    from kubevip_metal.daemon.modes import MODES

    store = MemoryStore()
    speakers: dict[str, RecordingSpeaker] = {}
    nodes = []
    for name in ("n1", "n2"):
        node = Node(name, store)
        command, given = parse_command_line(["manager", "--controlplane", "--bgp", "--leaderElection", "--address",
                                             "192.0.2.10", "--nodeName", name, *FAST, "--bgppeers",
                                             "198.51.100.1:65001", "--localAS", "65010", "--bgpRouterID", "192.0.2.1"])
        assert command is not None
        node.config = build_config(given, command)
        def speaker(settings: Any, name: str = name) -> Any:
            return speakers.setdefault(name, RecordingSpeaker(settings))

        node.deps.bgp_speaker = speaker
        node.daemon = Daemon(node.config, node.deps, MODES)
        nodes.append(node)
    try:
        for node in nodes:
            node.daemon.start()
        wait_for(lambda: sum(bool(s.routes) for s in speakers.values()) == 1, timeout=20)  # busy machine
        leader = next(node for node in nodes if speakers[node.name].routes)
        follower = next(node for node in nodes if node is not leader)
        assert set(speakers[leader.name].routes) == {ipaddress.ip_network("192.0.2.10/32")}
        assert {vip.interface for vip in leader.addresses.held} == {"lo"} and not follower.addresses.held
        settings = speakers[leader.name].settings
        assert (settings.local_as, str(settings.router_id), [str(p.address) for p in settings.peers]) == (
            65010, "192.0.2.1", ["198.51.100.1"])
        first_med = speakers[leader.name].routes[ipaddress.ip_network("192.0.2.10/32")].med
        assert first_med is not None
        leader.daemon.stop()
        assert speakers[leader.name].closed and not leader.addresses.held
        wait_for(lambda: bool(speakers[follower.name].routes), timeout=10)  # 3 s: tight on a busy machine
        # the next term advertises a lower MED: a router prefers it over a crashed leader's lingering route
        assert speakers[follower.name].routes[ipaddress.ip_network("192.0.2.10/32")].med < first_med
    finally:
        for node in nodes:
            node.daemon.stop()


def test_health_gate_falls_after_failures_in_a_row_and_rises_after_successes() -> None:
    from kubevip_metal.daemon.health import HealthGate

    changes: list[bool] = []
    gate = HealthGate(lambda: True, changes.append, rise=2, fall=3)
    for ok in (True, True, False, False, True, False, False, False, True, True):
        gate.observe(ok)
    assert changes == [True, False, True]  # one blip changes nothing; three failures withdraw; two successes return


def test_bgp_without_election_advertises_from_every_healthy_node() -> None:
    """ECMP: no Lease at all; each node wants the VIP while its API server is ready, with hysteresis."""
    import ipaddress

    from kubevip_metal.daemon.modes import MODES

    store = MemoryStore()
    health = {"n1": True, "n2": True}
    speakers: dict[str, RecordingSpeaker] = {}
    nodes = []
    for name in ("n1", "n2"):
        node = Node(name, store)
        command, given = parse_command_line(["manager", "--controlplane", "--bgp", "--address", "192.0.2.10",
                                             "--nodeName", name, "--bgppeers", "198.51.100.1:65001",
                                             "--bgpRouterID", "192.0.2.1"])
        assert command is not None
        node.config = build_config(given, command)

        def speaker(settings: Any, name: str = name) -> Any:
            return speakers.setdefault(name, RecordingSpeaker(settings))

        def probe(_api: Any, name: str = name) -> Any:
            return lambda: health[name]

        node.deps.bgp_speaker, node.deps.health_probe = speaker, probe
        node.daemon = Daemon(node.config, node.deps, MODES)
        nodes.append(node)
    route = ipaddress.ip_network("192.0.2.10/32")
    try:
        for node in nodes:
            node.daemon.start()
        wait_for(lambda: all(route in speakers[n].routes for n in health), timeout=5)  # both, after two probes
        assert not node.locks  # no election
        health["n2"] = False
        wait_for(lambda: route not in speakers["n2"].routes, timeout=6)  # after three failures in a row
        assert route in speakers["n1"].routes and not nodes[1].addresses.held
        health["n2"] = True
        wait_for(lambda: route in speakers["n2"].routes, timeout=5)
    finally:
        for node in nodes:
            node.daemon.stop()
