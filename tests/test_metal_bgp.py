"""BGP settings from the Equinix Metal API: the real SDK against the spec-validating emulator over real HTTP.

The emulator's BGP endpoints first (project config, sessions, derived neighbours, through the SDK's own models),
then `discover_bgp`: every neighbour and every peer IP of every family, sessions created once only, a project
without BGP refused with the fix named, transient failures retried or left to the daemon, and neither the token
nor the MD5 password in any log line, error or repr. The `metal` fixture fails a test on any contract violation.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import pytest
from equinix.services import metalv1
from equinix.services.metalv1.exceptions import ForbiddenException, UnprocessableEntityException

from generic.bgp.peers import PeerSource
from generic.logfmt import KeyValueFormatter
from generic.secret import Secret
from kubevip_metal.errors import FatalError, NotReady
from kubevip_metal.metal.bgp import MetalBgpNotEnabled, discover_bgp
from kubevip_metal.metal.client import BgpSession, Device, MetalClient
from kubevip_metal.metal.setup import MetalSetupFatal, MetalSetupPending
from kubevip_metal.peering.settings import PeeringError
from kubevip_testbed.emulators.metalapi import typical_bgp_neighbor
from tests.metal_support import MetalWorld

MD5 = "Md5Passw0rd1"  # what BgpConfigRequestInput's pattern allows: 10-20 letters and digits, mixed case
V4_PEERS = [ipaddress.ip_address("169.254.255.1"), ipaddress.ip_address("169.254.255.2")]
V6_PEERS = [ipaddress.ip_address("fc00::e"), ipaddress.ip_address("fc00::f")]


def client(metal: MetalWorld, **kwargs: Any) -> MetalClient:
    kwargs.setdefault("sleep", lambda _seconds: None)  # retries without waiting
    return MetalClient(Secret(metal.token), metal.api_url, **kwargs)


def device(metal: MetalWorld, hostname: str = "n1") -> Device:
    return Device(metal.device_ids[hostname], hostname)


def dual_stack(metal: MetalWorld) -> Device:
    """A fourth control-plane device with an IPv6 management address, so it can have an IPv6 session."""
    device_id = metal.emulator.add_device(metal.project_id, "n4", ipv6=True)
    metal.device_ids["n4"] = device_id
    return Device(device_id, "n4")


def private_v4(metal: MetalWorld, dev: Device) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(metal.emulator.state.addresses_of(dev.id)["private_ipv4"])


def public_v6(metal: MetalWorld, dev: Device) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(metal.emulator.state.addresses_of(dev.id)["public_ipv6"])


def counts(metal: MetalWorld) -> dict[str, int]:
    return metal.emulator.request_counts()


# --- the emulator's BGP endpoints, through the SDK ----------------------------------------------------------------


def test_the_project_bgp_config_is_empty_until_enabled_then_says_disabled(metal: MetalWorld) -> None:
    bgp = metalv1.BGPApi(metal.client())
    assert bgp.find_bgp_config_by_project(metal.project_id).id is None  # "empty structure is returned"
    metal.emulator.enable_project_bgp(metal.project_id, asn=65001, md5=MD5)
    config = bgp.find_bgp_config_by_project(metal.project_id)
    assert (config.status, config.deployment_type, config.asn, config.md5, config.max_prefix) == (
        "enabled", "local", 65001, MD5, 10)
    metal.emulator.disable_project_bgp(metal.project_id)
    again = bgp.find_bgp_config_by_project(metal.project_id)
    assert (again.id, again.status, again.asn) == (config.id, "disabled", 65001)


def test_sessions_are_one_per_family_and_need_project_bgp(metal: MetalWorld) -> None:
    devices = metalv1.DevicesApi(metal.client())
    n1 = metal.device_ids["n1"]
    ipv4 = metalv1.BGPSessionInput(address_family="ipv4")
    with pytest.raises(UnprocessableEntityException) as not_enabled:
        devices.create_bgp_session(n1, ipv4)
    assert not_enabled.value.data.errors == [f"BGP is not enabled on project {metal.project_id}"]
    metal.emulator.enable_project_bgp(metal.project_id)
    created = devices.create_bgp_session(n1, ipv4)
    assert (created.address_family, created.device.href, created.status) == ("ipv4", f"/metal/v1/devices/{n1}",
                                                                             "unknown,unknown")
    with pytest.raises(UnprocessableEntityException) as duplicate:
        devices.create_bgp_session(n1, ipv4)
    assert duplicate.value.data.errors == [f"Device {n1} already has session for address family ipv4"]
    with pytest.raises(UnprocessableEntityException) as no_v6:  # the standard devices have no IPv6 address
        devices.create_bgp_session(n1, metalv1.BGPSessionInput(address_family="ipv6"))
    assert "has no IPv6 address" in no_v6.value.data.errors[0]
    with pytest.raises(UnprocessableEntityException):  # the spec's optional family is required here
        devices.create_bgp_session(n1, metalv1.BGPSessionInput())
    assert [s.id for s in devices.find_bgp_sessions(n1).bgp_sessions] == [created.id]
    with pytest.raises(ForbiddenException):  # the spec documents no 404 for an unknown device here
        devices.find_bgp_sessions("00000000-0000-4000-8000-000000000000")


def test_neighbours_follow_the_project_config_and_the_sessions(metal: MetalWorld) -> None:
    devices = metalv1.DevicesApi(metal.client())
    n4 = dual_stack(metal)
    assert devices.get_bgp_neighbor_data(n4.id).bgp_neighbors == []  # no BGP, no session
    metal.emulator.enable_project_bgp(metal.project_id, asn=65100, md5=MD5)
    assert devices.get_bgp_neighbor_data(n4.id).bgp_neighbors == []  # BGP, but no session yet
    metal.emulator.add_bgp_session(n4.id, "ipv4")
    metal.emulator.add_bgp_session(n4.id, "ipv6", default_route=True)
    v4, v6 = devices.get_bgp_neighbor_data(n4.id).bgp_neighbors
    assert (v4.address_family, v4.customer_ip, v4.customer_as, v4.peer_as, v4.multihop) == (
        4, str(private_v4(metal, n4)), 65100, 65530, True)
    assert v4.peer_ips == ["169.254.255.1", "169.254.255.2"] and (v4.md5_enabled, v4.md5_password) == (True, MD5)
    assert [r.route for r in v4.routes_in] == [f"{metal.eip}/32"] and v4.routes_out == []
    assert (v6.address_family, v6.customer_ip, v6.customer_as) == (6, str(public_v6(metal, n4)), 65100)
    assert [ipaddress.ip_address(ip) for ip in v6.peer_ips] == V6_PEERS
    assert [r.route for r in v6.routes_out] == ["::/0"]
    metal.emulator.disable_project_bgp(metal.project_id)
    assert devices.get_bgp_neighbor_data(n4.id).bgp_neighbors == []


def test_set_bgp_neighbors_overrides_the_derived_ones_until_reset(metal: MetalWorld) -> None:
    devices = metalv1.DevicesApi(metal.client())
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.add_bgp_session(n1.id)
    metal.emulator.set_bgp_neighbors(n1.id, [])
    assert devices.get_bgp_neighbor_data(n1.id).bgp_neighbors == []
    metal.emulator.set_bgp_neighbors(n1.id, None)
    assert len(devices.get_bgp_neighbor_data(n1.id).bgp_neighbors) == 1


def test_a_seed_document_can_enable_bgp_and_create_sessions() -> None:
    from kubevip_testbed.emulators.metalapi import MetalApiEmulator

    emulator = MetalApiEmulator("t", validate=False)
    ids = emulator.seed({"projects": [{"name": "p", "bgp": {"asn": 65000, "md5": MD5},
                                       "devices": [{"hostname": "n1", "ipv6": True,
                                                    "bgp_sessions": ["ipv4", "ipv6"]}]}]})
    n1 = ids["projects"]["p"]["devices"]["n1"]
    assert emulator.state.bgp_session_families(n1) == ["ipv4", "ipv6"]
    (project,) = emulator.state.snapshot()["projects"]
    assert project["bgp"] == {"status": "enabled", "asn": 65000, "deployment_type": "local", "md5": True}
    assert project["devices"][0]["bgp_sessions"] == ["ipv4", "ipv6"]


# --- discover_bgp ----------------------------------------------------------------------------------------------


def test_every_neighbour_of_both_families_gives_every_peer(metal: MetalWorld) -> None:
    n4 = dual_stack(metal)
    metal.emulator.enable_project_bgp(metal.project_id, asn=65010, md5=MD5)
    found = discover_bgp(client(metal), metal.project_id, n4, families=(4, 6))
    assert found.origin is PeerSource.METAL_API
    assert [p.address for p in found.peers] == V4_PEERS + V6_PEERS  # family, then address
    for peer in found.peers:
        assert (peer.asn, peer.password, peer.multihop, peer.source) == (65530, Secret(MD5), True,
                                                                         PeerSource.METAL_API)
        assert peer.local_address == (private_v4(metal, n4) if peer.address.version == 4 else public_v6(metal, n4))
    assert (found.local_as, found.router_id) == (65010, private_v4(metal, n4))
    assert metal.emulator.state.bgp_session_families(n4.id) == ["ipv4", "ipv6"]
    assert counts(metal)["createBgpSession"] == 2


def test_each_neighbour_keeps_its_own_as_password_and_multihop(metal: MetalWorld) -> None:
    """kube-vip read `neighbours[0]` only; here the second neighbour's routers keep their own settings."""
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.add_bgp_session(n1.id, "ipv4")
    metal.emulator.set_bgp_neighbors(n1.id, [
        typical_bgp_neighbor("2001:db8:4111::9", peer_as=65531, peer_ips=["fc00::f", "fc00::e"], multihop=False,
                             md5_password="OtherPassw0rd"),
        typical_bgp_neighbor("10.70.0.1", md5_password=MD5),
    ])
    found = discover_bgp(client(metal), metal.project_id, n1)
    assert [(p.address, p.asn, p.password, p.multihop) for p in found.peers] == [
        (V4_PEERS[0], 65530, Secret(MD5), True), (V4_PEERS[1], 65530, Secret(MD5), True),
        (V6_PEERS[0], 65531, Secret("OtherPassw0rd"), False), (V6_PEERS[1], 65531, Secret("OtherPassw0rd"), False)]
    assert found.router_id == ipaddress.IPv4Address("10.70.0.1")


def test_neighbours_that_disagree_on_the_local_as_are_refused(metal: MetalWorld) -> None:
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.add_bgp_session(n1.id)
    metal.emulator.set_bgp_neighbors(n1.id, [typical_bgp_neighbor("10.70.0.1", customer_as=65000),
                                             typical_bgp_neighbor("2001:db8:4111::1", customer_as=65001,
                                                                  peer_ips=["fc00::e"])])
    with pytest.raises(PeeringError, match="disagree on the local AS: IPv4 says 65000, IPv6 says 65001"):
        discover_bgp(client(metal), metal.project_id, n1)


def test_a_session_is_created_once_only(metal: MetalWorld) -> None:
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    bgp = client(metal)
    first = discover_bgp(bgp, metal.project_id, n1)
    second = discover_bgp(bgp, metal.project_id, n1)
    assert first == second and [p.address for p in first.peers] == V4_PEERS
    assert first.peers[0].password is None  # the project has no MD5 password
    assert counts(metal) == {"findBgpConfigByProject": 2, "findBgpSessions": 2, "createBgpSession": 1,
                             "getBgpNeighborData": 2}
    assert metal.emulator.state.bgp_session_families(n1.id) == ["ipv4"]


def test_a_session_made_by_someone_else_is_used_without_a_post(metal: MetalWorld) -> None:
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.add_bgp_session(n1.id, "ipv4")  # the CCM got there first
    discover_bgp(client(metal), metal.project_id, n1)
    assert "createBgpSession" not in counts(metal)


class _StaleSessions(MetalClient):
    """A client whose first session listing predates a session someone else just created."""

    stale = True

    def bgp_sessions(self, device_id: str) -> list[BgpSession]:
        if self.stale:
            self.stale = False
            return []
        return super().bgp_sessions(device_id)


def test_losing_the_creation_race_counts_as_existing(metal: MetalWorld) -> None:
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.add_bgp_session(n1.id, "ipv4")
    bgp = _StaleSessions(Secret(metal.token), metal.api_url)
    found = discover_bgp(bgp, metal.project_id, n1)
    assert [p.address for p in found.peers] == V4_PEERS
    creates = [r for r in metal.emulator.request_records() if r.operation == "createBgpSession"]
    assert [r.status for r in creates] == [422]  # answered "already has session", then re-read: done
    assert metal.emulator.state.bgp_session_families(n1.id) == ["ipv4"]


def test_a_project_without_bgp_is_a_clear_fatal_error(metal: MetalWorld) -> None:
    n1 = device(metal)
    with pytest.raises(MetalBgpNotEnabled) as never:
        discover_bgp(client(metal), metal.project_id, n1)
    message = str(never.value)
    assert isinstance(never.value, FatalError) and "\n" not in message
    assert message.startswith(f"BGP is not enabled on Metal project {metal.project_id}; ")
    assert f"metal project bgp-enable --project-id {metal.project_id} --deployment-type local" in message
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.disable_project_bgp(metal.project_id)
    with pytest.raises(MetalBgpNotEnabled, match=f"BGP is disabled on Metal project {metal.project_id}; enable"):
        discover_bgp(client(metal), metal.project_id, n1)
    assert "createBgpSession" not in counts(metal)


def test_a_global_bgp_request_under_review_is_waited_for(metal: MetalWorld) -> None:
    metal.emulator.enable_project_bgp(metal.project_id, asn=64512, deployment_type="global", status="requested")
    with pytest.raises(MetalSetupPending, match=r"requested \(global\) and waits for Equinix's review"):
        discover_bgp(client(metal), metal.project_id, device(metal))


def test_a_refused_session_is_fatal_with_the_apis_reason(metal: MetalWorld) -> None:
    metal.emulator.enable_project_bgp(metal.project_id)
    n1 = device(metal)
    with pytest.raises(MetalSetupFatal, match=r"create BGP session: HTTP 422 Device .* has no IPv6 address"):
        discover_bgp(client(metal), metal.project_id, n1, families=(6,))


def test_a_neighbour_metal_has_not_filled_in_yet_is_waited_for(metal: MetalWorld) -> None:
    n1 = device(metal)
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.set_bgp_neighbors(n1.id, [])
    with pytest.raises(MetalSetupPending, match="no IPv4 BGP neighbour"):
        discover_bgp(client(metal), metal.project_id, n1)
    assert metal.emulator.state.bgp_session_families(n1.id) == ["ipv4"]


@pytest.mark.parametrize("status", [503, 429])
def test_transient_failures_are_retried(metal: MetalWorld, status: int) -> None:
    metal.emulator.enable_project_bgp(metal.project_id, md5=MD5)
    metal.emulator.set_fault(fail_next=2, fail_status=status, retry_after=None)
    slept: list[float] = []
    bgp = client(metal, sleep=slept.append)
    found = discover_bgp(bgp, metal.project_id, device(metal))
    assert [p.address for p in found.peers] == V4_PEERS
    assert [s for _m, _p, s, _t in metal.emulator.requests()][:3] == [status, status, 200]
    assert len(slept) == 2


def test_an_api_that_stays_down_leaves_the_daemon_retrying(metal: MetalWorld) -> None:
    metal.emulator.enable_project_bgp(metal.project_id)
    metal.emulator.set_fault(down=True)
    with pytest.raises(MetalSetupPending, match="get project BGP config") as pending:
        discover_bgp(client(metal, attempts=2), metal.project_id, device(metal))
    assert isinstance(pending.value, NotReady)


def test_other_4xx_are_fatal(metal: MetalWorld) -> None:
    metal.emulator.enable_project_bgp(metal.project_id)
    with pytest.raises(MetalSetupFatal, match="HTTP 401") as refused:
        discover_bgp(MetalClient(Secret("wr0ng-token"), metal.api_url), metal.project_id, device(metal))
    assert "wr0ng" not in str(refused.value)
    with pytest.raises(MetalSetupFatal, match="list BGP sessions: HTTP 403"):
        discover_bgp(client(metal), metal.project_id, Device("00000000-0000-4000-8000-000000000000", "gone"))


def test_bad_families_are_a_programming_error(metal: MetalWorld) -> None:
    with pytest.raises(ValueError, match="some of 4 and 6"):
        discover_bgp(client(metal), metal.project_id, device(metal), families=(5,))
    assert counts(metal) == {}


def test_neither_the_token_nor_the_password_is_ever_shown(metal: MetalWorld, caplog: pytest.LogCaptureFixture,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    n4 = dual_stack(metal)
    metal.emulator.enable_project_bgp(metal.project_id, md5=MD5)
    metal.emulator.set_fault(fail_next=1, fail_status=503, retry_after=None)  # a retry is logged too
    bgp = client(metal)
    found = discover_bgp(bgp, metal.project_id, n4, families=(4, 6))
    shown = [repr(found), str(found), repr(bgp.project_bgp_config(metal.project_id)), repr(bgp.bgp_neighbors(n4.id))]
    metal.emulator.disable_project_bgp(metal.project_id)
    with pytest.raises(MetalBgpNotEnabled) as fatal:
        discover_bgp(bgp, metal.project_id, n4)
    shown += [str(fatal.value), repr(fatal.value)]
    formatter = KeyValueFormatter()
    shown += [formatter.format(record) for record in caplog.records]
    captured = capsys.readouterr()
    shown += [captured.out, captured.err]
    assert any("metal.retry" in line for line in shown) and any("metal.bgp_discovered" in line for line in shown)
    for text in shown:
        assert MD5 not in text and metal.token not in text
