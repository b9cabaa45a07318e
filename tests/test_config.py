"""What a valid configuration means: defaults, precedence, aliases, and each validation rule's boundary."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from generic.secret import Secret
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import (
    Command,
    Config,
    ConfigError,
    ElectionType,
    Mode,
    build_config,
    given_from_env,
)


def configure(argv: list[str], env: dict[str, str] | None = None, command: str = "manager",
              read_files: bool | None = None) -> Config:
    """The configuration as the manager parses it, including features it refuses to run until they land (their
    refusal is tested in tests/test_availability.py)."""
    parsed, given = parse_command_line([*command.split(), *argv])
    assert parsed is not None
    if parsed is Command.MANAGER:
        given.update(given_from_env(env or {}))
    return build_config(given, parsed, read_files=read_files, hostname=lambda: "Node-1", refuse_unavailable=False)


ARP_CP = ["--controlplane", "--arp", "--address", "192.0.2.10"]


def test_defaults_follow_kube_vip() -> None:
    config = configure(ARP_CP)
    assert config.mode is Mode.ARP
    assert config.control_plane and not config.services.enabled
    assert config.vip.addresses == (ipaddress.IPv4Address("192.0.2.10"),)
    assert (config.vip.prefix_v4, config.vip.prefix_v6) == (32, 128)
    assert config.vip.port == 6443
    assert config.vip.arp_rate_ms == 3000
    timers = config.election.timers
    assert (timers.lease_duration, timers.renew_deadline, timers.retry_period) == (5, 3, 1)
    assert config.election.lease_name == "plndr-cp-lock"
    assert config.election.services_lease_name == "plndr-svcs-lock"
    assert config.election.namespace == "kube-system"
    assert config.bgp.local_as == 65000
    assert config.node_name == "node-1"  # host name, lower-cased as kube-vip does
    assert config.observability.log_level == logging.INFO
    assert config.observability.prometheus == ("", 2112)  # kube-vip's :2112
    assert config.kubernetes.config_path == Path("/etc/kubernetes/admin.conf")
    assert config.control_plane_elects  # ARP always elects


def test_environment_overrides_flags() -> None:
    config = configure([*ARP_CP, "--localAS", "65001", "--leaseDuration", "9"],
                       {"bgp_as": "65010", "vip_leaseduration": "15", "vip_renewdeadline": "10",
                        "vip_retryperiod": "2", "address": "192.0.2.20"})
    assert config.bgp.local_as == 65010
    assert config.election.timers.lease_duration == 15
    assert config.vip.addresses == (ipaddress.IPv4Address("192.0.2.20"),)


def test_empty_environment_variable_does_not_override() -> None:
    assert configure([*ARP_CP, "--localAS", "65001"], {"bgp_as": ""}).bgp.local_as == 65001


def test_environment_alone_configures_the_manager() -> None:
    config = configure([], {"cp_enable": "true", "vip_arp": "1", "address": "2001:db8::10", "vip_cidr": "64",
                            "vip_interface": "eth0"})
    assert config.mode is Mode.ARP and config.vip.interface == "eth0"
    assert config.vip.prefix_v6 == 64 and config.vip.prefix_v4 == 32


def test_manifest_ignores_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("address", "192.0.2.99")
    from kubevip_metal.cli import main

    assert main(["manifest", "pod", *ARP_CP]) == 0


@pytest.mark.parametrize("flag", ["--controlPlane", "--controlplane"])
def test_seed_spellings_are_aliases(flag: str) -> None:
    assert configure([flag, "--arp", "--address", "192.0.2.10"]).control_plane
    assert configure(["--servcies", "--arp"]).services.enabled
    config = configure(["--services", "--bgp", "--annotaions", "metal.equinix.com"])
    assert config.bgp.annotations == "metal.equinix.com"


def test_boolean_with_explicit_value() -> None:
    config = configure([*ARP_CP, "--lbClassNameLegacyHandling=false", "--leaderElection=true"])
    assert config.services.lb_class_legacy is False
    assert config.election.requested is True


def test_fractional_timers_and_the_client_go_invariant() -> None:
    config = configure([*ARP_CP, "--leaseDuration", "1", "--leaseRenewDuration", "0.75", "--leaseRetry", "0.2"])
    assert config.election.timers.retry_period == 0.2
    # boundary: renew must be strictly greater than 1.2 x retry
    with pytest.raises(ConfigError, match="leaseRetry"):
        configure([*ARP_CP, "--leaseRenewDuration", "1.2", "--leaseRetry", "1"])
    configure([*ARP_CP, "--leaseRenewDuration", "1.21", "--leaseRetry", "1"])


def test_deprecated_vip_is_used_with_a_warning() -> None:
    config = configure(["--controlplane", "--arp", "--vip", "192.0.2.30"])
    assert config.vip.addresses == (ipaddress.IPv4Address("192.0.2.30"),)
    assert any("deprecated" in warning for warning in config.warnings)


def test_dns_name_address_and_dual_stack() -> None:
    config = configure(["--controlplane", "--arp", "--address", "CP.Example.com."])
    assert config.vip.dns_name == "cp.example.com" and config.vip.addresses == ()
    dual = configure(["--controlplane", "--arp", "--address", "192.0.2.10,2001:db8::10", "--cidr", "24,64"])
    assert (dual.vip.prefix_v4, dual.vip.prefix_v6) == (24, 64)


def test_bgp_peers_merge_single_peer() -> None:
    config = configure(["--services", "--bgp", "--bgppeers", "198.51.100.1:65001:pw:true,[2001:db8::1]:65002::",
                        "--peerAddress", "198.51.100.2", "--peerAS", "65003", "--peerPass", "x", "--multihop"])
    addresses = [str(peer.address) for peer in config.bgp.peers]
    assert addresses == ["198.51.100.1", "2001:db8::1", "198.51.100.2"]
    assert config.bgp.peers[2].asn == 65003 and config.bgp.peers[2].multihop
    assert config.bgp.peers[2].password == Secret("x")


def test_metal_modes() -> None:
    eip = configure(["--controlplane", "--metal", "--address", "192.0.2.10", "--metalKey", "t",
                     "--metalProject", "p"])
    assert eip.mode is Mode.METAL_EIP and eip.control_plane_elects
    bgp = configure(["--services", "--bgp", "--metal", "--metalProject", "p"], {"METAL_AUTH_TOKEN": "t"})
    assert bgp.mode is Mode.BGP and bgp.metal.api_key == Secret("t")
    ecmp = configure(["--controlplane", "--bgp", "--address", "192.0.2.10", "--peerAddress", "198.51.100.1"])
    assert not ecmp.control_plane_elects  # BGP without --leaderElection: every node announces


def test_secret_files_and_provider_config_are_read_by_the_manager(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("tok3n\n")
    provider = tmp_path / "cloud-sa.json"
    provider.write_text('{"apiKey": "from-ccm", "projectid": "7c1b2f3a-0000-4000-8000-000000000001"}')
    config = configure(["--controlplane", "--metal", "--address", "192.0.2.10", "--metalKeyFile", str(key),
                        "--metalProject", "p"])
    assert config.metal.api_key == Secret("tok3n")
    config = configure(["--controlplane", "--metal", "--address", "192.0.2.10", "--provider-config", str(provider)])
    assert config.metal.api_key == Secret("from-ccm")
    assert config.metal.project_id == "7c1b2f3a-0000-4000-8000-000000000001"
    peers = tmp_path / "peers"
    peers.write_text('198.51.100.1:65001:"a:b,c":false\n')
    config = configure(["--services", "--bgp", "--bgppeersFile", str(peers)])
    assert config.bgp.peers[0].password == Secret("a:b,c")


def test_etcd_election() -> None:
    config = configure([*ARP_CP, "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379,https://[::1]:2379"])
    assert config.election.type is ElectionType.ETCD
    assert config.election.etcd is not None and len(config.election.etcd.endpoints) == 2
    with pytest.raises(ConfigError, match="Services need the Kubernetes"):
        configure(["--services", "--arp", "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379"])


@pytest.mark.parametrize(("value", "level"), [
    ("-4", logging.DEBUG), ("0", logging.INFO), ("4", logging.WARNING), ("8", logging.ERROR),
    ("debug", logging.DEBUG), ("WARN", logging.WARNING)])
def test_log_levels_accept_kube_vip_numbers(value: str, level: int) -> None:
    assert configure(ARP_CP, {"vip_loglevel": value}).observability.log_level == level


def test_config_is_frozen() -> None:
    config = configure(ARP_CP)
    with pytest.raises(AttributeError):
        config.mode = Mode.BGP  # type: ignore[misc]


def test_bgppeers_given_more_than_once_adds_up() -> None:
    config = configure(["--controlplane", "--bgp", "--leaderElection", "--address", "192.0.2.10",
                        "--bgppeers", "198.51.100.1:65001", "--bgppeers", "198.51.100.2:65002:pw,198.51.100.3:65003"])
    assert [(str(p.address), p.asn) for p in config.bgp.peers] == [
        ("198.51.100.1", 65001), ("198.51.100.2", 65002), ("198.51.100.3", 65003)]
    with pytest.raises(ConfigError, match="the same peer address appears twice"):
        configure(["--controlplane", "--bgp", "--leaderElection", "--address", "192.0.2.10",
                   "--bgppeers", "198.51.100.1:65001", "--bgppeers", "198.51.100.1:65009"])
