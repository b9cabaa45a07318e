"""The one configuration object: built once at start from flags and kube-vip's environment variables.

Precedence is kube-vip's: a default, then the flag, then a non-empty environment variable (the manager
only; `manifest` reads flags alone so a stray `address=` in a shell cannot leak into a manifest).
Every rule is checked here, at start, and a violation raises `ConfigError` naming the flag or variable
and the value, so nothing deeper in the daemon ever sees an unchecked string. Secrets are `Secret`
objects from here on and print as `***`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from generic.bgp.peers import BgpPeer, PeerListError, parse_peer_list
from generic.election.elector import TimerError, Timers
from generic.logfmt import LogFormat
from generic.secret import MASK, Secret
from kubevip_metal import __version__, parsers
from kubevip_metal.options import BY_NAME, OPTIONS, Availability
from kubevip_metal.parsers import IPAddress

T = TypeVar("T")

_NOT_YET = f"not available yet in kube-vip-metal {__version__}"


class ConfigError(Exception):
    """A rejected setting. `str()` is the one line the CLI prints after `kube-vip-metal: error: `."""

    def __init__(self, name: str, value: str | None, reason: str) -> None:
        self.name, self.value, self.reason = name, value, reason
        shown = "" if value is None else " " + _quote(value)
        super().__init__(f"{name}{shown}: {reason}")


def _quote(value: str) -> str:
    text = value if len(value) <= 120 else value[:117] + "..."
    return json.dumps(text, ensure_ascii=False)


class Command(Enum):
    MANAGER = "manager"
    POD = "manifest pod"
    DAEMONSET = "manifest daemonset"
    RBAC = "manifest rbac"

    @property
    def is_manifest(self) -> bool:
        return self is not Command.MANAGER


class Mode(Enum):
    """How a VIP reaches the network."""

    ARP = "arp"
    BGP = "bgp"
    METAL_EIP = "metal-eip"  # Equinix Metal routes an Elastic IP to the leader; nothing is announced


class ElectionType(Enum):
    KUBERNETES = "kubernetes"
    ETCD = "etcd"


class DnsMode(Enum):
    FIRST = "first"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DUAL = "dual"


@dataclass(frozen=True)
class Given:
    """A raw value and where it came from (`--localAS` or `bgp_as`), before parsing."""

    source: str
    text: str


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]
    ca_cert: Path | None
    cert: Path | None
    key: Path | None


@dataclass(frozen=True)
class ElectionConfig:
    requested: bool  # --leaderElection as given (manifests echo it)
    type: ElectionType
    namespace: str
    lease_name: str
    services_lease_name: str
    timers: Timers
    etcd: EtcdConfig | None


@dataclass(frozen=True)
class VipConfig:
    address: str | None  # as configured: IP(s) or a DNS name
    addresses: tuple[IPAddress, ...]  # empty when `address` is a DNS name
    dns_name: str | None
    prefix_v4: int
    prefix_v6: int
    interface: str | None
    service_interface: str | None
    port: int
    arp_rate_ms: int
    ddns: bool
    dns_mode: DnsMode
    dns_interval: float  # seconds between lookups of `dns_name` (the floor; a longer TTL is honoured)


@dataclass(frozen=True)
class BgpConfig:
    router_id: ipaddress.IPv4Address | None
    local_as: int
    local_as_given: bool  # --localAS / bgp_as set: it overrides the local AS the Metal API or annotations give
    peers: tuple[BgpPeer, ...]
    peers_file: Path | None
    peer_pass_file: Path | None
    source_ip: IPAddress | None
    source_if: str | None
    hold_time: int
    keepalive: int
    annotations: str | None


@dataclass(frozen=True)
class MetalConfig:
    enabled: bool
    api_key: Secret | None
    api_key_file: Path | None
    project: str | None
    project_id: str | None
    provider_config: Path | None
    device_id: str | None
    api_url: str
    metadata_url: str


@dataclass(frozen=True)
class ServicesConfig:
    enabled: bool
    election: bool
    lb_class_only: bool
    lb_class_name: str
    lb_class_legacy: bool


@dataclass(frozen=True)
class KubernetesConfig:
    config_path: Path
    bootstrap_config_path: Path
    api_url: str | None


@dataclass(frozen=True)
class ObservabilityConfig:
    log_level: int
    log_format: LogFormat
    prometheus: tuple[str, int] | None
    health_port: int | None


@dataclass(frozen=True)
class LocalHealthConfig:
    """--controlPlaneHealthCheck*: this node's own API server, checked by URL (kubevip_metal/daemon/localhealth.py)."""

    url: str
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    ca_path: Path | None


@dataclass(frozen=True)
class ManifestConfig:
    image: str
    in_cluster: bool | None
    taint: bool


@dataclass(frozen=True)
class Config:
    command: Command
    control_plane: bool
    mode: Mode
    node_name: str | None  # None in manifests: the pod reads it from spec.nodeName
    vip: VipConfig
    election: ElectionConfig
    bgp: BgpConfig
    metal: MetalConfig
    services: ServicesConfig
    kubernetes: KubernetesConfig
    observability: ObservabilityConfig
    manifest: ManifestConfig
    local_health: LocalHealthConfig | None = None  # None: --controlPlaneHealthCheckAddress not given
    node_labeling: bool = False  # --enableNodeLabeling: daemon/nodelabels.py, services/labels.py
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def control_plane_elects(self) -> bool:
        """ARP and the Elastic IP need one owner; BGP without --leaderElection announces from every node (ECMP)."""
        return self.control_plane and (self.election.requested or self.mode is not Mode.BGP)


def describe(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Flatten the configuration into `section.key` pairs for the start-up log; secrets stay masked."""
    for item in dataclasses.fields(config):
        if item.name == "warnings":
            continue
        value = getattr(config, item.name)
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from describe(value, key + ".")
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            yield key, [{f.name: _loggable(getattr(v, f.name)) for f in dataclasses.fields(v)} for v in value]
        elif value is not None:
            yield key, _loggable(value)


def _loggable(value: Any) -> Any:
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], str):
        return f"{value[0]}:{value[1]}"  # a listen address
    if isinstance(value, tuple):
        return [_loggable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class _Reader:
    """Looks values up by option name and turns parse failures into `ConfigError`s that name their source."""

    def __init__(self, given: Mapping[str, Given]) -> None:
        unknown = set(given) - set(BY_NAME)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        self._given = given

    def given(self, name: str) -> Given | None:
        return self._given.get(name)

    def source(self, name: str) -> str:
        found = self._given.get(name)
        return found.source if found else BY_NAME[name].flag

    def shown(self, name: str) -> str | None:
        """The value for an error message: masked for secrets."""
        found = self._given.get(name)
        text = found.text if found else BY_NAME[name].default
        if BY_NAME[name].secret:
            return MASK
        return text

    def error(self, name: str, reason: str, show_value: bool = True) -> ConfigError:
        return ConfigError(self.source(name), self.shown(name) if show_value else None, reason)

    def raw(self, name: str) -> str | None:
        found = self._given.get(name)
        if found is not None:
            return found.text
        return BY_NAME[name].default

    def get(self, name: str, parse: Callable[[str], T]) -> T | None:
        """The parsed value, or None when neither given nor defaulted (an empty string counts as not given)."""
        text = self.raw(name)
        if text is None or (text == "" and not BY_NAME[name].boolean):
            return None
        try:
            return parse(text)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def need(self, name: str, parse: Callable[[str], T]) -> T:
        """Like `get`, for settings that must have a value (they all have defaults, so only "" is missing)."""
        value = self.get(name, parse)
        if value is None:
            raise self.error(name, "must not be empty")
        return value

    def flag(self, name: str) -> bool:
        return bool(self.get(name, parsers.parse_bool))

    def path(self, name: str) -> Path | None:
        return self.get(name, parsers.parse_path)









def _read_secret_file(reader: _Reader, name: str, path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise reader.error(name, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise reader.error(name, "cannot read: not UTF-8 text") from None
    if not text:
        raise reader.error(name, "the file is empty")
    return text


def build_config(given: Mapping[str, Given], command: Command, *, read_files: bool | None = None,
                 hostname: Callable[[], str] = socket.gethostname, refuse_unavailable: bool = True) -> Config:
    """Parse and validate everything; raises `ConfigError` on the first bad value. Then, for the manager, refuse
    the first setting this version cannot honour (`refuse_unavailable=False` skips that, for tests of the
    parsing rules of features still to come); `manifest` only warns about them."""
    r = _Reader(given)
    read_files = (command is Command.MANAGER) if read_files is None else read_files
    warnings: list[str] = []

    control_plane = r.flag("controlplane")
    services_on = r.flag("services")
    arp, bgp, metal = r.flag("arp"), r.flag("bgp"), r.flag("metal")
    if command is not Command.RBAC and not (control_plane or services_on):
        raise ConfigError(command.value, None, "needs --controlplane or --services (cp_enable / svc_enable)")
    mode = _mode(r, arp, bgp, metal, control_plane, services_on, command)

    vip = _vip(r, control_plane, warnings)
    if vip.ddns and mode is not Mode.ARP:
        raise r.error("ddns", f"DDNS needs the ARP mode (--arp): the leased address is a LAN address of the VIP "
                      f"interface, which the {mode.value} mode does not announce")
    if vip.ddns and vip.dns_mode not in (DnsMode.FIRST, DnsMode.IPV4):
        raise r.error("dnsMode", f"{vip.dns_mode.value} with --ddns: the DHCP client is DHCPv4 only (first or ipv4)")
    if mode is Mode.METAL_EIP and vip.dns_name and not vip.ddns:
        raise r.error("address", "the Elastic IP mode needs an IP address: an Elastic IP is reserved in the project "
                      "by address, so a name that moves would move to an address Metal does not route here")
    election = _election(r, control_plane, services_on)
    bgp_config = _bgp(r, mode, metal, command, read_files)
    metal_config = _metal(r, metal, command, read_files)

    in_cluster = r.get("inCluster", parsers.parse_bool) if r.given("inCluster") else None
    manifest = ManifestConfig(image=r.need("image", parsers.parse_image), in_cluster=in_cluster, taint=r.flag("taint"))

    node_name = None
    if not command.is_manifest:
        node_name = r.get("nodeName", lambda t: parsers.parse_dns_subdomain(t.lower()))
        if node_name is None:
            try:
                node_name = parsers.parse_dns_subdomain(hostname().lower())
            except ValueError:
                raise ConfigError("--nodeName", None, "not given and the host name is not a valid node name") from None

    prometheus = r.get("prometheusHTTPServer", parsers.parse_listen_address)
    health = r.need("healthCheckPort", parsers.parse_health_port)
    config = Config(
        command=command,
        control_plane=control_plane,
        mode=mode,
        node_name=node_name,
        vip=vip,
        election=election,
        bgp=bgp_config,
        metal=metal_config,
        services=ServicesConfig(
            enabled=services_on,
            election=r.flag("servicesElection"),
            lb_class_only=r.flag("lbClassOnly"),
            lb_class_name=r.need("lbClassName", parsers.parse_class_name),
            lb_class_legacy=r.flag("lbClassNameLegacyHandling"),
        ),
        kubernetes=KubernetesConfig(
            config_path=r.path("k8sConfigPath") or Path("/etc/kubernetes/admin.conf"),
            bootstrap_config_path=r.path("k8sBootstrapConfigPath") or Path("/etc/kubernetes/super-admin.conf"),
            api_url=r.get("kubernetesAddr", parsers.parse_url),
        ),
        observability=ObservabilityConfig(
            log_level=r.need("log-level", parsers.parse_log_level),
            log_format=r.need("log-format", lambda t: LogFormat(parsers.parse_choice(t, ("text", "json")))),
            prometheus=prometheus,
            health_port=health or None,
        ),
        manifest=manifest,
        local_health=_local_health(r, control_plane, read_files),
        node_labeling=r.flag("enableNodeLabeling"),
    )
    # every value is valid by now; what the daemon cannot honour yet is refused (manager) or warned about (manifest)
    unavailable = _not_available_yet(r) + _combinations_not_available_yet(r, config)
    if unavailable and command is Command.MANAGER and refuse_unavailable:
        raise unavailable[0][1]
    for feature in dict.fromkeys(f for f, _ in unavailable):
        sources = ", ".join(error.name for f, error in unavailable if f == feature)
        warnings.append(f"{sources}: {_NOT_YET} ({feature}); the manager refuses this manifest until it is")
    return dataclasses.replace(config, warnings=tuple(warnings))


def _not_available_yet(r: _Reader) -> list[tuple[str, ConfigError]]:
    """Every setting given a non-default value that the daemon cannot honour yet, with its feature, in table
    order: the manager refuses the first, `manifest` warns about all (kube-vip users generate manifests ahead)."""
    found = []
    for option in OPTIONS:
        given = r.given(option.name)
        if option.available is Availability.NOT_YET and given is not None and not option.is_default(given.text):
            default = f"set it to {option.default}" if option.default else "set it empty"
            found.append((option.feature, r.error(option.name, f"{_NOT_YET} ({option.feature}); remove it or "
                                                               f"{default}")))
    return found


def _combinations_not_available_yet(r: _Reader, config: Config) -> list[tuple[str, ConfigError]]:
    """Settings valid one by one whose combination this version cannot honour yet."""
    found = []
    derived = config.bgp.hold_time // 3  # what the speaker (ExaBGP) sends; it has no keepalive setting of its own
    if config.mode is Mode.BGP and r.given("bgpKeepAliveInterval") is not None and config.bgp.keepalive != derived:
        feature = "a keepalive interval other than a third of the hold time"
        found.append((feature, r.error("bgpKeepAliveInterval", f"{_NOT_YET} ({feature}: the speaker sends "
                                       f"keepalives every {derived} s); leave it out")))
    return found


def _mode(r: _Reader, arp: bool, bgp: bool, metal: bool, control_plane: bool, services: bool,
          command: Command) -> Mode:
    if metal and arp:
        raise r.error("arp", f"cannot be used with {r.source('metal')}: ARP does not work on Equinix Metal's layer-3 "
                      "network; for the Elastic IP mode (what kube-vip's vip_arp=true + vip_packet=true control plane "
                      "did) remove --arp / set vip_arp=false, or use --bgp / bgp_enable=true")
    if arp and bgp:
        raise r.error("bgp", "choose one announcement mode: --arp or --bgp, not both")
    if arp:
        return Mode.ARP
    if bgp:
        return Mode.BGP
    if command is Command.RBAC:
        return Mode.ARP
    if not metal:
        raise ConfigError(command.value, None, "needs an announcement mode: --arp or --bgp (vip_arp / bgp_enable)")
    if services:
        raise r.error("services", "on Equinix Metal, Service VIPs need --bgp (the Elastic IP mode is for "
                      "the control plane only)")
    if not control_plane:
        raise r.error("metal", "the Elastic IP mode needs --controlplane")
    return Mode.METAL_EIP


def _vip(r: _Reader, control_plane: bool, warnings: list[str]) -> VipConfig:
    address_name = "address"
    if r.given("vip") and r.raw("vip"):
        warnings.append("--vip / vip_address is deprecated: use --address / address")
        if not r.raw("address"):
            address_name = "vip"
        elif r.raw("address") != r.raw("vip"):
            warnings.append("both --address and --vip are set: --address wins")
    parsed = r.get(address_name, parsers.parse_vip_address)
    address = r.raw(address_name) or None
    addresses, dns_name = parsed if parsed else ((), None)
    if control_plane and parsed is None:
        raise ConfigError("--address", None, "the control plane needs a VIP (--address / address)")
    prefix_v4, prefix_v6 = r.need("cidr", lambda t: parsers.parse_prefixes(t, addresses))
    ddns = r.flag("ddns")
    if ddns and not control_plane:
        raise r.error("ddns", "dynamic DNS is for the control-plane VIP: add --controlplane")
    if ddns and dns_name is None:
        raise r.error(address_name, "--ddns needs --address to be a DNS name (the FQDN to register)")
    if r.given("dnsInterval") is not None and dns_name is None:
        raise r.error("dnsInterval", "is for a DNS name in --address (the interval between its lookups); remove it")
    dns_mode = r.need("dnsMode", lambda t: DnsMode(parsers.parse_choice(t, ("first", "ipv4", "ipv6", "dual"))))
    if dns_name is None and dns_mode is not DnsMode.FIRST:  # kube-vip ignores it silently; say so, do not refuse
        warnings.append(f"--dnsMode / dns_mode {dns_mode.value} has no effect: --address is not a DNS name")
    service_interface = r.get("serviceInterface", lambda t: t if t == "auto" else parsers.parse_interface(t))
    return VipConfig(
        address=address,
        addresses=addresses,
        dns_name=dns_name,
        prefix_v4=prefix_v4,
        prefix_v6=prefix_v6,
        interface=r.get("interface", parsers.parse_interface),
        service_interface=service_interface,
        port=r.need("port", parsers.parse_port),
        arp_rate_ms=r.need("arpRate", lambda t: parsers.parse_int(t, 500, 60000, "milliseconds")),
        ddns=ddns,
        dns_mode=dns_mode,
        dns_interval=r.need("dnsInterval", _dns_interval),
    )


def _dns_interval(text: str) -> float:
    seconds = parsers.parse_seconds(text)
    if not 0.1 <= seconds <= 3600:
        raise ValueError("must be 0.1-3600 seconds")
    return seconds


def _local_health(r: _Reader, control_plane: bool, read_files: bool) -> LocalHealthConfig | None:
    period = r.need("controlPlaneHealthCheckPeriodSeconds", parsers.parse_seconds)
    timeout = r.need("controlPlaneHealthCheckTimeoutSeconds", parsers.parse_seconds)
    failures = r.need("controlPlaneHealthCheckFailureThreshold", lambda t: parsers.parse_int(t, 1, 100, "a count"))
    successes = r.need("controlPlaneHealthCheckSuccessThreshold", lambda t: parsers.parse_int(t, 1, 100, "a count"))
    ca_path = r.path("controlPlaneHealthCheckCAPath")
    raw = r.raw("controlPlaneHealthCheckAddress") or ""
    if "@" in raw and (urlsplit(raw).username is not None or urlsplit(raw).password is not None):
        raise r.error("controlPlaneHealthCheckAddress", "must not carry credentials (/readyz is readable without "
                      "them)", show_value=False)  # never echo a password
    url = r.get("controlPlaneHealthCheckAddress", parsers.parse_health_check_address)
    if url is None:
        if ca_path is not None:
            raise r.error("controlPlaneHealthCheckCAPath", "needs --controlPlaneHealthCheckAddress")
        return None
    if not control_plane:
        raise r.error("controlPlaneHealthCheckAddress", "checks the control plane's API server: add --controlplane")
    if ca_path is not None and not url.startswith("https:"):
        raise r.error("controlPlaneHealthCheckCAPath", "a CA file needs an https health check URL")
    if ca_path is not None and read_files:
        import ssl

        try:
            ssl.create_default_context(cafile=str(ca_path))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
            raise r.error("controlPlaneHealthCheckCAPath", f"not a readable PEM CA file: {reason}") from None
    return LocalHealthConfig(url, period, timeout, failures, successes, ca_path)


def _election(r: _Reader, control_plane: bool, services: bool) -> ElectionConfig:
    duration = r.need("leaseDuration", parsers.parse_seconds)
    renew = r.need("leaseRenewDuration", parsers.parse_seconds)
    retry = r.need("leaseRetry", parsers.parse_seconds)
    try:  # client-go's invariant: a leader that cannot renew steps down before any peer may take the lease
        timers = Timers(duration, renew, retry)
    except TimerError as exc:
        if exc.field == "renew_deadline":
            raise r.error("leaseRenewDuration", f"must be less than {r.source('leaseDuration')} ({exc.limit:g} s)"
                          ) from None
        raise r.error("leaseRetry", f"must be less than {r.source('leaseRenewDuration')} / 1.2 ({exc.limit:.3g} s)"
                      ) from None
    type_ = r.need("leaderElectionType", lambda t: ElectionType(parsers.parse_choice(t, ("kubernetes", "etcd"))))
    etcd = None
    if type_ is ElectionType.ETCD:
        if services:
            raise r.error("leaderElectionType", "etcd elects the control plane only; Services need the Kubernetes "
                          "API (drop --services or use --leaderElectionType kubernetes)")
        endpoints = r.get("etcdEndpoints", parsers.parse_etcd_endpoints)
        if not endpoints:
            raise r.error("leaderElectionType", "etcd election needs --etcdEndpoints")
        cert, key = r.path("etcdCert"), r.path("etcdKey")
        if (cert is None) != (key is None):
            raise r.error("etcdCert" if cert is None else "etcdKey", "give both --etcdCert and --etcdKey, or neither")
        etcd = EtcdConfig(endpoints, r.path("etcdCACert"), cert, key)
    return ElectionConfig(
        requested=r.flag("leaderElection"),
        type=type_,
        namespace=r.need("namespace", parsers.parse_dns_label),
        lease_name=r.need("leaseName", parsers.parse_dns_subdomain),
        services_lease_name=r.need("servicesLeaseName", parsers.parse_dns_subdomain),
        timers=timers,
        etcd=etcd,
    )


def _bgp(r: _Reader, mode: Mode, metal: bool, command: Command, read_files: bool) -> BgpConfig:
    local_as = r.need("localAS", parsers.parse_asn)
    peer_as = r.need("peerAS", parsers.parse_asn)
    peers: list[BgpPeer] = []
    peers_file = r.path("bgppeersFile")
    peers_text = r.raw("bgppeers")
    if peers_text and peers_file:
        raise r.error("bgppeersFile", "give --bgppeers or --bgppeersFile, not both")
    source = "bgppeersFile" if peers_file else "bgppeers"
    if peers_file and read_files:
        peers_text = _read_secret_file(r, "bgppeersFile", peers_file)
    if peers_text:
        try:
            peers.extend(parse_peer_list(peers_text, peer_as))
        except PeerListError as exc:
            raise ConfigError(r.source(source), exc.shown, str(exc)) from None

    pass_file = r.path("peerPassFile")
    if r.raw("peerPass") and pass_file:
        raise r.error("peerPassFile", "give --peerPass or --peerPassFile, not both")
    single = r.get("peerAddress", parsers.parse_ip)
    if single is not None:
        password_text = r.raw("peerPass") or None
        if pass_file and read_files:
            password_text = _read_secret_file(r, "peerPassFile", pass_file)
        if password_text and len(password_text.encode()) > 80:
            raise r.error("peerPass", "longer than 80 bytes (the TCP MD5 limit)")
        if any(p.address == single for p in peers):
            raise r.error("peerAddress", "this peer is also in --bgppeers")
        password = Secret(password_text) if password_text else None
        peers.append(BgpPeer(single, peer_as, password, r.flag("multihop")))
    elif r.raw("peerPass") or pass_file:
        raise r.error("peerPass" if r.raw("peerPass") else "peerPassFile", "a password needs --peerAddress",
                      show_value=False)

    source_ip = r.get("sourceIP", parsers.parse_ip)
    source_if = r.get("sourceIF", parsers.parse_interface)
    if source_ip is not None and source_if is not None:
        raise r.error("sourceIF", "give --sourceIP or --sourceIF, not both")
    hold = r.need("bgpHoldTimer", lambda t: parsers.parse_int(t, 0, 65535, "a hold time"))
    if 0 < hold < 3:
        raise r.error("bgpHoldTimer", "must be 0 or at least 3 seconds (RFC 4271)")
    keepalive = r.need("bgpKeepAliveInterval", lambda t: parsers.parse_int(t, 0, 21845, "a keepalive interval"))
    if r.given("bgpKeepAliveInterval") is None:
        keepalive = hold // 3  # the default follows the hold time (kube-vip's 10 s is a third of its 30 s)
    if hold and not 0 < keepalive < hold:
        raise r.error("bgpKeepAliveInterval", f"must be between 1 and the hold time ({hold} s) minus one")
    annotations = r.get("annotations", parsers.parse_dns_subdomain)
    if annotations is not None and mode is not Mode.BGP:
        raise r.error("annotations", "BGP settings from node annotations need --bgp (bgp_enable=true)")

    if mode is Mode.BGP and command is not Command.RBAC and not (peers or peers_file or annotations or metal):
        raise r.error("bgp", "no BGP peer: give --bgppeers, --peerAddress, --annotations or --metal")
    return BgpConfig(
        router_id=r.get("bgpRouterID", parsers.parse_ipv4),
        local_as=local_as,
        local_as_given=r.given("localAS") is not None,
        peers=tuple(peers),
        peers_file=peers_file,
        peer_pass_file=pass_file,
        source_ip=source_ip,
        source_if=source_if,
        hold_time=hold,
        keepalive=keepalive,
        annotations=annotations,
    )


def _metal(r: _Reader, enabled: bool, command: Command, read_files: bool) -> MetalConfig:
    key_text = r.raw("metalKey") or None
    key_file = r.path("metalKeyFile")
    provider_config = r.path("provider-config")
    project = r.raw("metalProject") or None
    project_id = r.get("metalProjectID", parsers.parse_uuid)
    if key_text and key_file:
        raise r.error("metalKeyFile", "give --metalKey or --metalKeyFile, not both")
    if enabled and read_files:
        if key_file:
            key_text = _read_secret_file(r, "metalKeyFile", key_file)
        if provider_config:
            provided = _read_provider_config(r, provider_config)
            key_text = key_text or provided.get("apiKey")
            if project_id is None and provided.get("projectID"):
                project_id = _checked_uuid(r, provided["projectID"])
    if enabled and command is not Command.RBAC:
        if not (key_text or key_file or provider_config):
            raise r.error("metal", "no API token: give --metalKey (PACKET_AUTH_TOKEN / METAL_AUTH_TOKEN), "
                          "--metalKeyFile or --provider-config")
        if not (project or project_id or provider_config):
            raise r.error("metal", "no project: give --metalProjectID, --metalProject or --provider-config")
    return MetalConfig(
        enabled=enabled,
        api_key=Secret(key_text) if key_text else None,
        api_key_file=key_file,
        project=project,
        project_id=project_id,
        provider_config=provider_config,
        device_id=r.get("metalDeviceID", parsers.parse_uuid),
        api_url=r.need("metalAPIURL", parsers.parse_url),
        metadata_url=r.need("metalMetadataURL", parsers.parse_url),
    )


def _checked_uuid(r: _Reader, text: str) -> str:
    try:
        return parsers.parse_uuid(text)
    except ValueError:
        raise r.error("provider-config", "projectID is not a UUID") from None


def _read_provider_config(r: _Reader, path: Path) -> dict[str, str]:
    """The CCM's cloud-sa.json; key names are matched case-insensitively, as Go's encoding/json does."""
    text = _read_secret_file(r, "provider-config", path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise r.error("provider-config", f"not JSON (line {exc.lineno})") from None
    if not isinstance(doc, dict):
        raise r.error("provider-config", "not a JSON object")
    wanted = {"apikey": "apiKey", "projectid": "projectID"}
    found: dict[str, str] = {}
    for key, value in doc.items():
        canonical = wanted.get(str(key).lower())
        if canonical and isinstance(value, str) and value:
            found[canonical] = value
    if "apiKey" not in found:
        raise r.error("provider-config", "has no apiKey")
    return found


def given_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Given]:
    """kube-vip's environment variables that are set and non-empty, by option name."""
    environ = os.environ if environ is None else environ
    found: dict[str, Given] = {}
    for option in OPTIONS:
        for name in option.env:
            value = environ.get(name)
            if value:
                found[option.name] = Given(name, value)
                break
    return found
