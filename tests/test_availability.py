"""No option is accepted and then ignored: the test walks the whole option table.

Every option is either honoured by the running daemon (proved by running the daemon's code on a configuration
that records which of its fields are read, and checking that what the option changes is among them), read by
`manifest` only, or refused by the manager at start with one line naming it (and rendered by `manifest` with a
one-line warning, since kube-vip users generate manifests ahead of an upgrade).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from pathlib import Path
from typing import Any, cast

import certifi
import pytest

from generic import logfmt
from generic.dns import Answer, choose
from generic.parse import IPAddress
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import Config, ConfigError, Mode, build_config
from kubevip_metal.daemon.daemon import Daemon
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.modes import MODES, ModeSpec
from kubevip_metal.errors import NotReady
from kubevip_metal.kubeclient import build_api_client
from kubevip_metal.manager import configure_logging, start_health
from kubevip_metal.metal.client import Device, Reservation
from kubevip_metal.metal.setup import elastic_ip, metal_client
from kubevip_metal.options import OPTIONS, Availability
from kubevip_testbed.waiting import wait_for
from tests.conftest import run_cli
from tests.ddns_support import FakeClient
from tests.fakes import FakeAddresses, RecordingAnnouncer, RecordingSpeaker
from tests.memory_lock import MemoryStore

ARP = ["--controlplane", "--arp", "--address", "192.0.2.10", "--nodeName", "n1"]
DNS_NAME = ["--controlplane", "--arp", "--address", "cp.kube.test", "--nodeName", "n1"]  # answered by _fake_dns
METAL = ["--controlplane", "--metal", "--address", "192.0.2.10", "--nodeName", "n1", "--metalKey", "t0ken",
         "--metalProjectID", "7c1b2f3a-0000-4000-8000-000000000001", "--metalMetadataURL", "http://127.0.0.1:9/m"]

BGP = ["--controlplane", "--bgp", "--leaderElection", "--address", "192.0.2.10", "--nodeName", "n1",
       "--bgppeers", "198.51.100.1:65001"]
BGP_SINGLE = [*BGP, "--peerAddress", "198.51.100.3"]
LOCAL_HEALTH = [*ARP, "--controlPlaneHealthCheckAddress", "https://127.0.0.1:9/readyz"]  # a port nobody serves

# a non-default value for every option the daemon honours, and the base configuration it applies to
DAEMON_SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "bgpRouterID": (BGP, ["--bgpRouterID", "192.0.2.1"]),
    "localAS": (BGP, ["--localAS", "65010"]),
    "bgppeers": (BGP, ["--bgppeers", "198.51.100.2:65002"]),
    "bgppeersFile": (BGP, []),  # through a file: see THROUGH_FILES
    "peerAddress": (BGP, ["--peerAddress", "198.51.100.3"]),
    "peerAS": (BGP_SINGLE, ["--peerAS", "65003"]),
    "peerPass": (BGP_SINGLE, ["--peerPass", "pw"]),
    "peerPassFile": (BGP_SINGLE, []),  # through a file: see THROUGH_FILES
    "multihop": (BGP_SINGLE, ["--multihop"]),
    "sourceIP": (BGP, ["--sourceIP", "198.51.100.11"]),
    "sourceIF": (BGP, ["--sourceIF", "eth0"]),
    "bgpHoldTimer": (BGP, ["--bgpHoldTimer", "90"]),
    "address": (ARP, ["--address", "192.0.2.40"]),
    "interface": (ARP, ["--interface", "eth7"]),
    "leaderElection": (ARP, ["--leaderElection"]),
    "cidr": (ARP, ["--cidr", "24,64"]),
    "leaseDuration": (ARP, ["--leaseDuration", "9"]),
    "leaseRenewDuration": (ARP, ["--leaseRenewDuration", "2"]),
    "leaseRetry": (ARP, ["--leaseRetry", "0.5"]),
    "namespace": (ARP, ["--namespace", "kube-vip"]),
    "leaseName": (ARP, ["--leaseName", "cp-lock"]),
    "port": (ARP, ["--port", "8443"]),
    "arpRate": (ARP, ["--arpRate", "1000"]),
    "nodeName": (ARP, ["--nodeName", "n2"]),
    "enableNodeLabeling": (ARP, ["--enableNodeLabeling"]),
    "metalKey": (METAL, ["--metalKey", "other"]),
    "metalKeyFile": (METAL, []),  # the file's content becomes metal.api_key: see THROUGH_FILES
    "metalProject": ([*METAL[:-4], "--metalProject", "p"], ["--metalProject", "proj"]),
    "metalProjectID": (METAL, ["--metalProjectID", "7c1b2f3a-0000-4000-8000-000000000002"]),
    "provider-config": (METAL, []),  # its apiKey becomes metal.api_key: see THROUGH_FILES
    "metalDeviceID": (METAL, ["--metalDeviceID", "7c1b2f3a-0000-4000-8000-0000000000d1"]),
    "metalAPIURL": (METAL, ["--metalAPIURL", "http://127.0.0.1:9/metal/v1"]),
    "metalMetadataURL": (METAL, ["--metalMetadataURL", "http://127.0.0.1:9/other"]),
    "dnsMode": (DNS_NAME, ["--dnsMode", "ipv4"]),
    "dnsInterval": (DNS_NAME, ["--dnsInterval", "10"]),
    "ddns": (DNS_NAME, ["--ddns"]),  # the leased address (tests.ddns_support's fake DHCP client) is claimed
    "k8sConfigPath": (ARP, ["--k8sConfigPath", "/tmp/x.conf"]),
    "k8sBootstrapConfigPath": (ARP, ["--k8sBootstrapConfigPath", "/tmp/y.conf"]),
    "kubernetesAddr": (ARP, ["--kubernetesAddr", "https://127.0.0.1:6443"]),
    "log-level": (ARP, ["--log-level", "debug"]),
    "log-format": (ARP, ["--log-format", "json"]),
    "annotations": (BGP, ["--annotations", "metal.equinix.com"]),
    "services": (ARP, ["--services"]),
    "servicesElection": ([*ARP, "--services"], ["--servicesElection"]),
    "prometheusHTTPServer": (ARP, ["--prometheusHTTPServer", "127.0.0.1:29112"]),
    "healthCheckPort": (ARP, ["--healthCheckPort", "8080"]),
    "controlPlaneHealthCheckAddress": (ARP, ["--controlPlaneHealthCheckAddress", "6443"]),
    "controlPlaneHealthCheckPeriodSeconds": (LOCAL_HEALTH, ["--controlPlaneHealthCheckPeriodSeconds", "7"]),
    "controlPlaneHealthCheckTimeoutSeconds": (LOCAL_HEALTH, ["--controlPlaneHealthCheckTimeoutSeconds", "1"]),
    "controlPlaneHealthCheckFailureThreshold": (LOCAL_HEALTH, ["--controlPlaneHealthCheckFailureThreshold", "5"]),
    "controlPlaneHealthCheckSuccessThreshold": (LOCAL_HEALTH, ["--controlPlaneHealthCheckSuccessThreshold", "4"]),
    "controlPlaneHealthCheckCAPath": (LOCAL_HEALTH, ["--controlPlaneHealthCheckCAPath", certifi.where()]),  # any PEM
    "serviceInterface": ([*ARP, "--services"], ["--serviceInterface", "eth7"]),
    "servicesLeaseName": ([*ARP, "--services"], ["--servicesLeaseName", "svc-lock"]),
    "lbClassOnly": ([*ARP, "--services"], ["--lbClassOnly"]),
    "lbClassName": ([*ARP, "--services"], ["--lbClassName", "example.com/lb"]),
    "lbClassNameLegacyHandling": ([*ARP, "--services"], ["--lbClassNameLegacyHandling=false"]),
}
# no runnable configuration lacks these: the daemon must read the field they set
WITHOUT_BASE: dict[str, tuple[list[str], str]] = {
    "controlplane": (ARP, "control_plane"),
    "arp": (ARP, "mode"),
    "metal": (METAL, "mode"),
    "vip": (["--controlplane", "--arp", "--nodeName", "n1", "--vip", "192.0.2.30"], "vip.addresses"),
    "bgp": (BGP, "mode"),
}
# honoured by being checked: the speaker sends keepalives every third of the hold time, and any other value is refused
CHECKED = {"bgpKeepAliveInterval"}
# the daemon honours these through the content of a file
THROUGH_FILES = {"metalKeyFile": "metal.api_key", "provider-config": "metal.api_key", "bgppeersFile": "bgp.peers",
                 "peerPassFile": "bgp.peers"}

# a non-default value for every option that waits for a feature
NOT_YET_SAMPLES: dict[str, list[str]] = {
    "leaderElectionType": ["--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379"],
    "etcdEndpoints": ["--etcdEndpoints", "127.0.0.1:2379"], "etcdCACert": ["--etcdCACert", "/etc/ca.pem"],
    "etcdCert": ["--etcdCert", "/etc/c.pem", "--etcdKey", "/etc/k.pem"],
    "etcdKey": ["--etcdCert", "/etc/c.pem", "--etcdKey", "/etc/k.pem"],
}
NOT_YET_BASE: dict[str, list[str]] = {}


def _config(argv: list[str], refuse: bool = True) -> Config:
    command, given = parse_command_line(["manager", *argv])
    assert command is not None
    return build_config(given, command, read_files=False, refuse_unavailable=refuse)


def test_every_option_has_a_verdict() -> None:
    by_kind = {kind: {o.name for o in OPTIONS if o.available is kind} for kind in Availability}
    assert by_kind[Availability.DAEMON] == set(DAEMON_SAMPLES) | set(WITHOUT_BASE) | CHECKED
    assert by_kind[Availability.NOT_YET] == set(NOT_YET_SAMPLES)
    assert by_kind[Availability.MANIFEST] == {"inCluster", "taint", "image"}
    assert all(o.feature for o in OPTIONS if o.available is Availability.NOT_YET)


@pytest.mark.parametrize("name", sorted(NOT_YET_SAMPLES))
def test_manager_refuses_what_is_not_available_yet(name: str) -> None:
    base = NOT_YET_BASE.get(name, ARP)
    _config(base)  # the base alone runs
    with pytest.raises(ConfigError, match="not available yet in kube-vip-metal") as refused:
        _config([*base, *NOT_YET_SAMPLES[name]])
    option = next(o for o in OPTIONS if o.name == name)
    assert refused.value.name in {*option.flags, *NOT_YET_SAMPLES[name]}, str(refused.value)


def test_refusal_is_one_line_and_exit_2_and_env_is_named() -> None:
    dns = ["--controlplane", "--arp", "--address", "cp.example.com", "--nodeName", "n1"]
    result = run_cli(["manager", *dns, "--etcdEndpoints", "127.0.0.1:2379"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == ['kube-vip-metal: error: --etcdEndpoints "127.0.0.1:2379": not available '
                                          "yet in kube-vip-metal 0.1.0 (etcd leader election); remove it or set it "
                                          "empty"]
    env = {"bgp_enable": "true", "bgp_peers": "198.51.100.1:65001:s3cret", "vip_leaderelectiontype": "etcd",
           "etcd_endpoints": "127.0.0.1:2379"}
    result = run_cli(["manager", "--controlplane", "--leaderElection", "--address", "192.0.2.10"], env)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith('kube-vip-metal: error: vip_leaderelectiontype "etcd": not available yet')
    assert "s3cret" not in result.stderr


def test_defaults_of_unavailable_options_are_accepted() -> None:
    explicit = ["--localAS", "65000", "--leaderElectionType", "kubernetes", "--lbClassNameLegacyHandling=true",
                "--healthCheckPort", "0", "--prometheusHTTPServer", "", "--bgp=false", "--services=false"]
    assert _config([*ARP, *explicit]).mode is Mode.ARP


def test_manifest_renders_them_with_one_warning_per_feature() -> None:
    result = run_cli(["manifest", "daemonset", "--arp", "--controlplane", "--address",
                      "cp.example.com", "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379",
                      "--healthCheckPort", "8080"])
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert warnings == [
        "kube-vip-metal: warning: --leaderElectionType, --etcdEndpoints: not available yet in kube-vip-metal 0.1.0 "
        "(etcd leader election); the manager refuses this manifest until it is",
    ]
    assert "etcd_endpoints" in result.stdout and "/healthz" in result.stdout and "/readyz" in result.stdout


# -- consumption: what the daemon reads ------------------------------------------------------------------------

class _Recorder:
    """Wraps the frozen configuration and notes every field read, as a dotted path (`vip.arp_rate_ms`)."""

    def __init__(self, target: Any, seen: set[str], path: str = "") -> None:
        self._target, self._seen, self._path = target, seen, path

    def __getattr__(self, name: str) -> Any:
        path = f"{self._path}{name}"
        self._seen.add(path)
        derived = getattr(type(self._target), name, None)
        if isinstance(derived, property) and derived.fget is not None:
            return derived.fget(self)  # a derived value: record the fields it is made of
        value = getattr(self._target, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _Recorder(value, self._seen, path + ".")
        return value


def _changed(a: Any, b: Any, path: str = "") -> set[str]:
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        out: set[str] = set()
        for item in dataclasses.fields(a):
            if item.name in ("warnings", "command"):
                continue
            out |= _changed(getattr(a, item.name), getattr(b, item.name), f"{path}{item.name}.")
        return out
    return set() if a == b else {path.rstrip(".")}


class _FakeMetal:
    def project_id_by_name(self, name: str) -> str:
        return "7c1b2f3a-0000-4000-8000-000000000001"

    def device(self, device_id: str) -> Device:
        return Device(device_id, "n1")

    def devices(self, project_id: str) -> list[Device]:
        return [Device("7c1b2f3a-0000-4000-8000-0000000000d1", "n1")]

    def reservation(self, project_id: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Reservation:
        return Reservation("r1", address, 32, ())


class _FakeResolver:
    def interface_address(self, name: str, family: int) -> IPAddress | None:
        return ipaddress.ip_address("198.51.100.11")

    def route_source(self, peer: IPAddress) -> IPAddress | None:
        return ipaddress.ip_address("198.51.100.11")


def _fake_dns(name: str, mode: str) -> Answer:
    """A DNS --address answered here: no test asks a DNS server outside the machine."""
    both = (ipaddress.ip_address("192.0.2.10"), ipaddress.ip_address("2001:db8::10"))
    return Answer(choose(name, both[:1], both[1:], mode), None)


def _read_by_the_daemon(config: Config, tmp_path: Path) -> set[str]:
    """Run every piece of the daemon that reads the configuration, on a recorder; return what was read."""
    seen: set[str] = set()
    recorded = cast(Config, _Recorder(config, seen))
    addresses = FakeAddresses(("eth0", "eth7", "lo"))
    deps = Dependencies(api_client=lambda: "api", addresses=addresses, metal_client=lambda: _FakeMetal(),
                        lease_lock=lambda api, namespace, name: MemoryStore().client("n1"), dns_lookup=_fake_dns,
                        dhcp_client=FakeClient)
    announcer = RecordingAnnouncer()
    modes = {mode: ModeSpec(lambda a, v: "eth0", lambda _c, _d, _p, _a: [announcer]) for mode in Mode}
    daemon = Daemon(recorded, deps, modes)
    try:
        daemon.start()
        # leading: the elector's timers have all been used (5 s was tight for a daemon start on a busy machine)
        wait_for(lambda: bool(addresses.held), timeout=20)
    finally:
        daemon.stop()
    if config.mode is Mode.ARP:  # the real ARP mode's announcer is built (it sends nothing until told to)
        for built in MODES[Mode.ARP].announcers(recorded, deps, lambda _vip: None, lambda: None):
            built.close()
    if config.mode is Mode.BGP:  # the speaker's settings, built by the real mode (the speaker itself is a fake)
        bgp_deps = dataclasses.replace(deps, bgp_speaker=RecordingSpeaker,
                                       bgp_resolver=_FakeResolver())
        try:
            for built in MODES[Mode.BGP].announcers(recorded, bgp_deps, lambda _vip: None, lambda: None):
                built.close()
        except NotReady:
            pass  # --annotations: the prefix was read, and the fake API client has no Node to read it from
    if config.mode is Mode.METAL_EIP:
        metal_client(recorded)
        elastic_ip(recorded, cast(Any, _FakeMetal()))
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n"
                          "clusters: [{name: c, cluster: {server: 'https://192.0.2.10'}}]\n"
                          "users: [{name: u, user: {token: t}}]\n"
                          "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n")
    kube = dataclasses.replace(config.kubernetes, config_path=kubeconfig)
    build_api_client(cast(Config, _Recorder(dataclasses.replace(config, kubernetes=kube), seen)))
    if config.kubernetes.config_path != Path("/etc/kubernetes/admin.conf"):
        seen.add("kubernetes.config_path")  # replaced above by a readable file; build_api_client read it
    configure_logging(recorded)
    logfmt.configure(logging.INFO, logfmt.LogFormat.TEXT)
    health = start_health(recorded, daemon, threading.Event())
    if health is not None:
        health.stop()
    return seen


@pytest.mark.parametrize("name", sorted(WITHOUT_BASE))
def test_the_daemon_reads_what_each_mode_option_sets(name: str, tmp_path: Path) -> None:
    argv, field = WITHOUT_BASE[name]
    assert field in _read_by_the_daemon(_config(argv), tmp_path)


@pytest.mark.parametrize("name", sorted(DAEMON_SAMPLES))
def test_the_daemon_reads_what_each_option_sets(name: str, tmp_path: Path) -> None:
    base, extra = DAEMON_SAMPLES[name]
    if name in THROUGH_FILES:  # the file's content is what the daemon uses
        secret = tmp_path / "secret"
        content = {"provider-config": '{"apiKey": "k", "projectID": "7c1b2f3a-0000-4000-8000-000000000001"}',
                   "bgppeersFile": "198.51.100.7:65007:pw"}
        secret.write_text(content.get(name, "k"))
        if name.startswith("metal") or name == "provider-config":
            argv = [a for a in METAL if a not in ("--metalKey", "t0ken")]
        else:
            argv = BGP[:-2] if name == "bgppeersFile" else BGP_SINGLE
        command, given = parse_command_line(["manager", *argv, f"--{name}", str(secret)])
        assert command is not None
        config = build_config(given, command, read_files=True)
        if THROUGH_FILES[name] == "metal.api_key":
            assert config.metal.api_key is not None and config.metal.api_key.reveal() == "k"
        else:
            assert any(peer.password is not None and peer.password.reveal() in ("k", "pw") for peer in config.bgp.peers)
        assert THROUGH_FILES[name] in _read_by_the_daemon(config, tmp_path)
        return
    before, after = _config(base), _config([*base, *extra])
    changed = _changed(before, after)
    assert changed, f"{name}: the sample changes nothing"
    read = _read_by_the_daemon(after, tmp_path)
    assert changed & read, f"--{name} sets {sorted(changed)}, none of which the daemon reads"


def test_the_keepalive_is_a_third_of_the_hold_time_or_refused() -> None:
    assert _config([*BGP, "--bgpHoldTimer", "90", "--bgpKeepAliveInterval", "30"]).bgp.keepalive == 30
    with pytest.raises(ConfigError, match=r'--bgpKeepAliveInterval "20": not available yet .*every 30 s'):
        _config([*BGP, "--bgpHoldTimer", "90", "--bgpKeepAliveInterval", "20"])
    assert _config([*BGP, "--bgpHoldTimer", "90"]).bgp.hold_time == 90  # the default keepalive is not a choice


def test_bgp_combinations() -> None:
    assert not _config([a for a in BGP if a != "--leaderElection"]).control_plane_elects  # every healthy node
    on_metal = _config([*BGP, "--metal", "--metalKey", "t", "--metalProject", "p"])  # peers from the Metal API too
    assert on_metal.mode is Mode.BGP and on_metal.metal.enabled
    with pytest.raises(ConfigError, match=r'--annotations "metal.equinix.com": BGP settings from node annotations '
                                          r'need --bgp'):
        _config([*ARP, "--annotations", "metal.equinix.com"])
