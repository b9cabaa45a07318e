"""A DNS `--address`: the resolver (modes, TTL, failures, its deadline) against a DNS server on loopback, the
follower's rules (when it asks again, what a change and a failure do, how often it says so), and the daemon
moving the control-plane VIP through the VIP controller when the name's answer changes."""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from generic.addresses import Vip
from generic.dns import Answer, DnsResolver, LookupFailed
from generic.parse import IPAddress
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import Config, ConfigError, Mode, build_config
from kubevip_metal.daemon import dns_follow
from kubevip_metal.daemon.daemon import Daemon
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.dns_follow import NameFollower
from kubevip_metal.daemon.modes import ModeSpec
from kubevip_metal.errors import DaemonError, NotReady
from kubevip_testbed.waiting import wait_for
from tests.dns_support import LoopbackDns
from tests.fakes import FakeAddresses, RecordingAnnouncer
from tests.memory_lock import MemoryStore

NAME = "vip.kube.test"


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [dict(getattr(r, "kv_fields", {})) for r in caplog.records if r.getMessage() == name]


# -- the resolver -------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LoopbackDns]:
    with LoopbackDns() as dns:
        yield dns


def _resolver(server: LoopbackDns, timeout: float = 2.0) -> DnsResolver:
    return DnsResolver(timeout=timeout, nameservers=["127.0.0.1"], port=server.port)


def test_each_mode_takes_its_addresses_and_the_smallest_ttl(server: LoopbackDns) -> None:
    server.records[NAME] = [("192.0.2.10", 30), ("192.0.2.11", 30), ("2001:db8::10", 7)]
    resolve = _resolver(server)
    assert resolve(NAME, "first") == Answer((ip("192.0.2.10"),), 30.0)  # A only: AAAA is not asked
    assert resolve(NAME, "ipv4") == Answer((ip("192.0.2.10"),), 30.0)
    assert resolve(NAME, "ipv6") == Answer((ip("2001:db8::10"),), 7.0)
    assert resolve(NAME, "dual") == Answer((ip("192.0.2.10"), ip("2001:db8::10")), 7.0)
    server.records[NAME] = [("2001:db8::10", 7)]
    assert resolve(NAME, "first").addresses == (ip("2001:db8::10"),)  # no A: the first AAAA
    server.records[NAME] = [("192.0.2.30", 30), ("192.0.2.20", 30)]
    assert {resolve(NAME, "first").addresses for _ in range(5)} == {(ip("192.0.2.20"),)}  # the lowest, always


def test_a_missing_family_a_missing_name_and_a_bad_mode_fail_with_one_line(server: LoopbackDns) -> None:
    server.records[NAME] = [("192.0.2.10", 30)]
    resolve = _resolver(server)
    with pytest.raises(LookupFailed, match=r"^cannot resolve vip.kube.test: no an IPv4 and an IPv6 address"):
        resolve(NAME, "dual")
    with pytest.raises(LookupFailed, match="no an IPv6 address"):
        resolve(NAME, "ipv6")
    with pytest.raises(LookupFailed, match=r"no such name \(NXDOMAIN\)"):
        resolve("absent.kube.test", "first")
    with pytest.raises(ValueError, match="DNS mode"):
        resolve(NAME, "both")


def test_a_server_that_does_not_answer_is_a_failure_within_the_timeout(server: LoopbackDns) -> None:
    server.records[NAME] = [("192.0.2.10", 30)]
    server.silent = True
    with pytest.raises(LookupFailed, match=r"no answer within 0.3 s"):
        _resolver(server, timeout=0.3)("vip.kube.test", "first")
    assert server.queries >= 1


def test_every_lookup_asks_the_server_no_cache(server: LoopbackDns) -> None:
    server.records[NAME] = [("192.0.2.10", 3600)]
    resolve = _resolver(server)
    resolve(NAME, "ipv4")
    server.records[NAME] = [("192.0.2.20", 3600)]
    assert resolve(NAME, "ipv4").addresses == (ip("192.0.2.20"),)


# -- the follower -------------------------------------------------------------------------------------------


class FakeLookup:
    def __init__(self, *addresses: str, ttl: float | None = None) -> None:
        self.answer: Answer | LookupFailed = Answer(tuple(ip(a) for a in addresses), ttl)
        self.calls = 0

    def set(self, *addresses: str, ttl: float | None = None) -> None:
        self.answer = Answer(tuple(ip(a) for a in addresses), ttl)

    def fail(self, reason: str = "no answer within 2 s") -> None:
        self.answer = LookupFailed(f"cannot resolve {NAME}: {reason}")

    def __call__(self, name: str, mode: str) -> Answer:
        self.calls += 1
        if isinstance(self.answer, LookupFailed):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _follower(lookup: FakeLookup, moves: list[tuple[IPAddress, ...]], clock: Clock | None = None,
              interval: float = 3.0) -> NameFollower:
    first = lookup(NAME, "first")
    return NameFollower(NAME, "first", lookup, first, moves.append, interval=interval, clock=clock or Clock())


def test_a_changed_answer_moves_and_the_same_answer_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    lookup = FakeLookup("192.0.2.10")
    moves: list[tuple[IPAddress, ...]] = []
    follower = _follower(lookup, moves)
    assert follower.poll() == 3.0 and moves == []
    lookup.set("192.0.2.20", ttl=1)
    assert follower.poll() == 3.0  # a TTL under the interval: the interval
    assert moves == [(ip("192.0.2.20"),)] and follower.current == (ip("192.0.2.20"),)
    (moved,) = events(caplog, "dns.moved")
    assert (moved["old"], moved["new"]) == ("192.0.2.10", "192.0.2.20")
    follower.poll()
    assert len(moves) == 1


def test_the_ttl_is_waited_out_when_longer_than_the_interval_up_to_a_ceiling() -> None:
    follower = _follower(FakeLookup("192.0.2.10"), [])
    assert follower.wait_after(Answer((ip("192.0.2.10"),), 30.0)) == 30.0
    assert follower.wait_after(Answer((ip("192.0.2.10"),), 86400.0)) == dns_follow.MAX_TTL
    assert follower.wait_after(Answer((ip("192.0.2.10"),), None)) == 3.0
    assert follower.wait_after(None) == 3.0


def test_failures_keep_the_address_and_are_said_at_a_modest_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    lookup = FakeLookup("192.0.2.10", ttl=120)
    moves: list[tuple[IPAddress, ...]] = []
    follower = _follower(lookup, moves, clock)
    lookup.fail()
    for _ in range(10):  # 30 s of failures at the interval
        assert follower.poll() == 3.0  # after a failure: the interval again, not the last TTL
        clock.now += 3.0
    assert moves == [] and follower.current == (ip("192.0.2.10"),)
    (warned,) = events(caplog, "dns.lookup_failed")
    assert warned["kept"] == "192.0.2.10" and "no answer within" in warned["error"]
    clock.now += dns_follow.WARN_EVERY
    follower.poll()
    assert [e["failures"] for e in events(caplog, "dns.lookup_failed")] == [1, 11]
    lookup.set("192.0.2.10")
    follower.poll()
    (recovered,) = events(caplog, "dns.lookup_recovered")
    assert recovered["failures"] == 11 and follower.failures == 0
    assert moves == []


def test_an_answer_that_cannot_be_placed_keeps_the_current_address(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(_ips: tuple[IPAddress, ...]) -> None:
        raise DaemonError("no --interface given and no IPv6 default route to pick one from")

    lookup = FakeLookup("192.0.2.10")
    follower = NameFollower(NAME, "first", lookup, lookup(NAME, "first"), refuse, interval=3.0)
    lookup.set("2001:db8::10")
    follower.poll()
    assert follower.current == (ip("192.0.2.10"),)
    (failed,) = events(caplog, "dns.move_failed")
    assert "IPv6 default route" in failed["error"]


def test_the_thread_follows_and_stops_at_once() -> None:
    lookup = FakeLookup("192.0.2.10")
    moves: list[tuple[IPAddress, ...]] = []
    follower = _follower(lookup, moves, interval=0.05)
    follower.start()
    try:
        lookup.set("192.0.2.20")
        wait_for(lambda: moves == [(ip("192.0.2.20"),)], timeout=5)
    finally:
        follower.stop(timeout=2)
    calls = lookup.calls
    lookup.set("192.0.2.30")
    threading.Event().wait(0.2)
    assert lookup.calls == calls and moves == [(ip("192.0.2.20"),)]


# -- the daemon: the VIP follows the name -------------------------------------------------------------------

FAST = ["--leaseDuration", "1", "--leaseRenewDuration", "0.75", "--leaseRetry", "0.2"]


def _config(node: str, *extra: str) -> Config:
    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", NAME,
                                         "--nodeName", node, "--dnsInterval", "0.1", *FAST, *extra])
    assert command is not None
    return build_config(given, command)


class Node:
    def __init__(self, name: str, store: MemoryStore, lookup: FakeLookup, *extra: str) -> None:
        self.addresses, self.announcer = FakeAddresses(), RecordingAnnouncer()
        config = _config(name, *extra)
        deps = Dependencies(api_client=lambda: "api", addresses=self.addresses, metal_client=lambda: None,
                            lease_lock=lambda _api, _ns, _name: store.client(name), dns_lookup=lookup)
        modes = {Mode.ARP: ModeSpec(lambda addresses, version: addresses.default_route_interface(version),
                                    lambda _config, _deps, _priority, _api: [self.announcer])}
        self.daemon = Daemon(config, deps, modes)

    def held(self) -> set[str]:
        return {str(vip.address) for vip in self.addresses.held}


def test_the_leader_moves_the_vip_when_the_name_changes_and_followers_never_hold_it() -> None:
    store, lookup = MemoryStore(), FakeLookup("192.0.2.10")
    nodes = [Node("n1", store, lookup), Node("n2", store, lookup)]
    try:
        for node in nodes:
            node.daemon.start()
        wait_for(lambda: sum(bool(n.held()) for n in nodes) == 1, timeout=5)
        leader = next(n for n in nodes if n.held())
        follower = next(n for n in nodes if n is not leader)
        assert leader.held() == {"192.0.2.10"}
        lookup.set("192.0.2.20")
        wait_for(lambda: leader.held() == {"192.0.2.20"}, timeout=5)
        old, new = Vip(ip("192.0.2.10"), 32, "eth0"), Vip(ip("192.0.2.20"), 32, "eth0")
        events_ = leader.announcer.events
        assert events_.index(("withdraw", old)) < events_.index(("announce", new))  # old withdrawn, then new
        assert leader.announcer.announced == {new}
        assert follower.held() == set() and follower.announcer.announced == set()
        # the follower followed the name too: after a hand-over the new leader takes the current address
        assert follower.daemon.control_plane is not None
        wait_for(lambda: follower.daemon.control_plane is not None and [str(v.address) for v in
                 follower.daemon.control_plane.wanted] == ["192.0.2.20"], timeout=5)
        leader.daemon.stop()
        wait_for(lambda: follower.held() == {"192.0.2.20"}, timeout=5)
    finally:
        for node in nodes:
            node.daemon.stop()


def test_a_failed_lookup_keeps_the_vip_on_the_leader() -> None:
    store, lookup = MemoryStore(), FakeLookup("192.0.2.10")
    node = Node("n1", store, lookup)
    try:
        node.daemon.start()
        wait_for(lambda: node.held() == {"192.0.2.10"}, timeout=5)
        follower = node.daemon.name_follower
        assert follower is not None
        lookup.fail()
        wait_for(lambda: follower.failures >= 3, timeout=5)
        assert node.held() == {"192.0.2.10"}
        lookup.set("192.0.2.20")
        wait_for(lambda: node.held() == {"192.0.2.20"}, timeout=5)
    finally:
        node.daemon.stop()
    assert node.held() == set()


def test_a_name_that_does_not_resolve_at_start_is_not_ready_until_it_does() -> None:
    lookup = FakeLookup("192.0.2.10")
    lookup.fail("no such name (NXDOMAIN)")
    node = Node("n1", MemoryStore(), lookup)
    try:
        with pytest.raises(NotReady, match=r"cannot resolve vip.kube.test: no such name"):
            node.daemon.start()
        lookup.set("192.0.2.10")
        node.daemon.start()
        wait_for(lambda: node.held() == {"192.0.2.10"}, timeout=5)
    finally:
        node.daemon.stop()


def test_dual_moves_each_family_and_bgp_style_batches_see_one_change() -> None:
    lookup = FakeLookup("192.0.2.10", "2001:db8::10")
    node = Node("n1", MemoryStore(), lookup, "--dnsMode", "dual")
    try:
        node.daemon.start()
        wait_for(lambda: node.held() == {"192.0.2.10", "2001:db8::10"}, timeout=5)
        lookup.set("192.0.2.10", "2001:db8::20")
        wait_for(lambda: node.held() == {"192.0.2.10", "2001:db8::20"}, timeout=5)
        assert ("withdraw", Vip(ip("192.0.2.10"), 32, "eth0")) not in node.announcer.events  # untouched
    finally:
        node.daemon.stop()


# -- configuration ------------------------------------------------------------------------------------------


def _build(*argv: str) -> Config:
    command, given = parse_command_line(["manager", *argv])
    assert command is not None
    return build_config(given, command)


def test_dns_interval_is_validated_and_defaults_to_kube_vips_three_seconds() -> None:
    assert _build("--controlplane", "--arp", "--address", NAME).vip.dns_interval == 3.0
    assert _build("--controlplane", "--arp", "--address", NAME, "--dnsInterval", "500ms").vip.dns_interval == 0.5
    with pytest.raises(ConfigError, match=r"--dnsInterval.*0.1-3600"):
        _build("--controlplane", "--arp", "--address", NAME, "--dnsInterval", "0.01")
    with pytest.raises(ConfigError, match=r"--dnsInterval \"5\": is for a DNS name in --address"):
        _build("--controlplane", "--arp", "--address", "192.0.2.10", "--dnsInterval", "5")


def test_dns_mode_for_an_ip_address_is_said_to_have_no_effect() -> None:
    # kube-vip ignores it silently; a manifest carried over from kube-vip still starts, with a warning
    warned = _build("--controlplane", "--arp", "--address", "192.0.2.10", "--dnsMode", "ipv6").warnings
    assert "--dnsMode / dns_mode ipv6 has no effect: --address is not a DNS name" in warned
    assert not _build("--controlplane", "--arp", "--address", "192.0.2.10", "--dnsMode", "first").warnings
    assert not _build("--controlplane", "--arp", "--address", NAME, "--dnsMode", "ipv6").warnings


def test_a_name_in_the_elastic_ip_mode_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"--address \"vip.kube.test\".*Elastic IP mode needs an IP address"):
        _build("--controlplane", "--metal", "--address", NAME, "--metalKey", "x", "--metalProjectID",
               "6b0c5d52-7f55-4f1b-9a5e-1a2f3c4d5e6f")


def test_manifests_carry_dns_interval_only_when_set_for_a_name() -> None:
    from kubevip_metal.manifests import build_documents

    def env(*argv: str) -> dict[str, str]:
        command, given = parse_command_line(["manifest", "pod", "--controlplane", "--arp", "--interface", "eth0",
                                             *argv])
        assert command is not None
        (pod,) = build_documents(build_config(given, command))
        return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}

    assert env("--address", NAME, "--dnsInterval", "10")["dns_interval"] == "10"
    assert "dns_interval" not in env("--address", NAME)  # the default: the manager falls back to the same
    assert env("--address", NAME, "--dnsMode", "dual")["dns_mode"] == "dual"
    assert env("--address", NAME)["address"] == NAME
