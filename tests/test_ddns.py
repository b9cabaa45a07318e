"""--ddns's lifecycle with a fake DHCP client (the same surface as pyroute2's AsyncDHCPClient, driving the real
hooks): what the control plane is told to claim on bound, renewed, expired, NAK and release; what is sent; a
server that never answers is reported, not fatal; the options are validated by name."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2.dhcp.enums import dhcp
from pyroute2.dhcp.fsm import State
from pyroute2.dhcp.hooks import Trigger

from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import ConfigError, build_config
from kubevip_metal.daemon.ddns import DdnsClient, MemoryLease, host_name, retransmission
from kubevip_testbed.waiting import wait_for
from tests.ddns_support import IP, FakeClient, lease


@pytest.fixture
def fake() -> Iterator[type[FakeClient]]:
    FakeClient.made, FakeClient.answering = [], True
    yield FakeClient


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [{"event": r.getMessage(), "level": r.levelname.lower(), **getattr(r, "kv_fields", {})}
            for r in caplog.records]


def _client(claims: list[Any], **kw: Any) -> DdnsClient:
    return DdnsClient("eth0", "cp.rig.test", claims.append, factory=FakeClient, **kw)


def test_the_config_sent_carries_the_host_name_as_client_id_and_writes_no_file() -> None:
    ddns = _client([])
    config = ddns.config()
    assert config.host_name == "cp" and config.client_id == b"cp" and config.interface == "eth0"
    assert config.lease_type is MemoryLease and MemoryLease.load("eth0") is None
    assert not config.handle_signals  # the loop runs on its own thread: no signal handlers there
    assert {t for h in config.hooks for t in h.triggers} == set(Trigger)
    assert dhcp.Option.LEASE_TIME in config.requested_parameters
    assert host_name("api.example.com.") == "api"


def test_retransmission_backs_off_to_a_ceiling_with_jitter() -> None:
    delays = [d for _, d in zip(range(8), retransmission(), strict=False)]
    assert 0.75 <= delays[0] <= 1.25 and 1.5 <= delays[1] <= 2.5
    assert all(12.0 <= d <= 20.0 for d in delays[4:])


def test_a_term_claims_the_leased_address_and_releases_it(fake: type[FakeClient],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    claims: list[Any] = []
    ddns = _client(claims)
    ddns.start_term()
    wait_for(lambda: claims == [ipaddress.ip_address(IP)], timeout=5)
    assert ddns.address == ipaddress.ip_address(IP) and ddns.leases == 1
    ddns.end_term()
    client = fake.made[0]
    assert client.sent == ["discover", "release"]
    ddns.stop()
    assert claims == [ipaddress.ip_address(IP)]  # a release keeps the (now inactive) claim for policing
    assert ddns.address is None and ddns.state == "off"
    bound = next(e for e in _events(caplog) if e["event"] == "ddns.bound")
    assert bound["address"] == IP and bound["lease_time"] == 120
    assert any(e["event"] == "ddns.released" for e in _events(caplog))
    # its private loop and claim worker are gone with it: nothing keeps running after stop
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("ddns-dhcp")], timeout=2)


def test_renewal_keeps_expiry_and_nak_withdraw_a_new_lease_claims_again(fake: type[FakeClient],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    claims: list[Any] = []
    ddns = _client(claims)
    ddns.start_term()
    wait_for(lambda: len(claims) == 1, timeout=5)
    client = fake.made[0]
    client.fire_from_test(Trigger.RENEWED, lease())
    assert claims == [ipaddress.ip_address(IP)]  # the same address: no change to the claim
    assert ddns.renewals == 1
    client.fire_from_test(Trigger.EXPIRED, lease())
    assert claims[-1] is None and ddns.address is None  # the lease ended: the VIP goes
    assert ddns.expiries == 1
    assert [e["level"] for e in _events(caplog) if e["event"] == "ddns.expired"] == ["warning"]
    client.fire_from_test(Trigger.BOUND, lease("198.51.100.151"))
    assert claims[-1] == ipaddress.ip_address("198.51.100.151")
    client.fire_from_test(Trigger.UNBOUND, lease("198.51.100.151"))  # a NAK, not a release
    assert claims[-1] is None
    ddns.stop()


def test_a_server_that_never_answers_is_reported_and_a_term_ends_cleanly(fake: type[FakeClient],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake.answering = False
    claims: list[Any] = []
    ddns = _client(claims, report_after=0.5)
    ddns.start_term()
    wait_for(lambda: any(e["event"] == "ddns.no_lease" for e in _events(caplog)), timeout=10)
    ddns.stop()
    warning = next(e for e in _events(caplog) if e["event"] == "ddns.no_lease")
    assert warning["level"] == "warning" and warning["host_name"] == "cp"
    assert claims == [] and fake.made[0].sent == ["discover"]  # nothing leased: nothing to release


def test_a_second_start_in_one_term_is_ignored_and_a_new_term_starts_a_new_client(fake: type[FakeClient]) -> None:
    claims: list[Any] = []
    ddns = _client(claims)
    ddns.start_term()
    ddns.start_term()
    wait_for(lambda: len(claims) == 1, timeout=5)
    assert len(fake.made) == 1
    ddns.end_term()
    ddns.start_term()
    wait_for(lambda: len(fake.made) == 2 and fake.made[1].state is State.BOUND, timeout=5)
    ddns.stop()
    assert fake.made[1].sent == [f"discover {IP}", "release"]  # this node's last lease, asked for again


def test_a_new_term_asks_for_the_names_address_or_the_last_lease(fake: type[FakeClient]) -> None:
    claims: list[Any] = []
    ddns = _client(claims)
    ddns.hint = ipaddress.ip_address("198.51.100.160")  # what the name answered while another node led
    ddns.start_term()
    wait_for(lambda: claims == [ipaddress.ip_address("198.51.100.160")], timeout=5)
    assert fake.made[0].sent == ["discover 198.51.100.160"]
    ddns.end_term()
    ddns.hint = None  # the name is gone (released): this node's own last lease is asked for
    ddns.start_term()
    wait_for(lambda: len(fake.made) == 2 and fake.made[1].state is State.BOUND, timeout=5)
    ddns.stop()
    assert fake.made[1].sent == ["discover 198.51.100.160", "release"]


def test_leadership_back_during_a_slow_release_starts_a_new_term(fake: type[FakeClient]) -> None:
    claims: list[Any] = []
    ddns = _client(claims)
    slow = threading.Event()
    original = FakeClient.__aexit__

    async def slow_exit(self: FakeClient, *exc: object) -> None:
        await asyncio.sleep(0.3)  # a release that takes longer than end_term waits
        slow.set()
        await original(self, *exc)

    FakeClient.__aexit__ = slow_exit  # type: ignore[method-assign]  # (looked up when `async with` enters)
    try:
        ddns.start_term()
        wait_for(lambda: len(claims) == 1, timeout=5)
        ddns.end_term(timeout=0.05)
        ddns.start_term()  # waits for the release, then starts the next term
    finally:
        FakeClient.__aexit__ = original  # type: ignore[method-assign]
    assert slow.is_set()
    wait_for(lambda: len(fake.made) == 2 and fake.made[1].state is State.BOUND, timeout=5)
    ddns.stop()


BASE = ["manager", "--controlplane", "--arp", "--address", "cp.rig.test", "--nodeName", "n1", "--ddns"]


def _config(argv: list[str]) -> Any:
    command, given = parse_command_line(argv)
    assert command is not None
    return build_config(given, command, read_files=False)


def test_ddns_is_available_with_arp_and_a_name() -> None:
    config = _config(BASE)
    assert config.vip.ddns and config.vip.dns_name == "cp.rig.test"


@pytest.mark.parametrize("extra, flag", [
    (["--dnsMode", "ipv6"], "dnsMode"), (["--dnsMode", "dual"], "dnsMode"),
])
def test_what_ddns_cannot_honour_is_refused_by_name(extra: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _config([*BASE, *extra])
    assert flag in str(refused.value)


def test_ddns_by_bgp_is_refused() -> None:
    argv = ["manager", "--controlplane", "--bgp", "--leaderElection", "--address", "cp.rig.test", "--nodeName", "n1",
            "--ddns", "--localAS", "65000", "--bgpRouterID", "192.0.2.1", "--bgppeers", "192.0.2.254:65001::false"]
    with pytest.raises(ConfigError, match="ddns"):
        _config(argv)
