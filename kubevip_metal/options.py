"""Every command-line flag and environment variable, in one table.

The table is the single source for the argument parser, `--help` (grouped as in kube-vip's flag
reference), the environment lookup, and README's flag table (`python -m kubevip_metal.options`).
Names and environment variables are kube-vip's, so an existing deployment keeps working when only the
image and the command change. The typed meaning of each value lives in `config.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Group(Enum):
    MODE = "Mode"
    VIP = "VIP config"
    CP_HEALTH = "Control-plane health check"
    BGP = "BGP config"
    METAL = "Equinix Metal"
    DNS = "DNS and DDNS"
    ETCD = "etcd leader election"
    SERVICES = "Services"
    KUBERNETES = "Kubernetes client"
    OBSERVABILITY = "Logs and metrics"
    MANIFEST = "Manifest generation"


class Availability(Enum):
    """Who honours a setting today. A `NOT_YET` setting is parsed and validated (so `manifest` can render it for a
    cluster that upgrades later), but the manager refuses any value other than its default with one line naming
    it: an option is never accepted and then ignored."""

    DAEMON = "daemon"
    MANIFEST = "manifest"  # read by `manifest` only (the image, --inCluster, --taint)
    NOT_YET = "not yet"


@dataclass(frozen=True)
class Option:
    """One setting. `name` is the canonical flag without dashes; the first `env` entry is the one manifests emit.
    `feature` names what a `NOT_YET` option belongs to, for the refusal."""

    name: str
    group: Group
    help: str
    env: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    default: str | None = None
    boolean: bool = False
    secret: bool = False
    metavar: str = "VALUE"
    available: Availability = Availability.DAEMON
    feature: str = ""

    @property
    def manifest_only(self) -> bool:
        return self.available is Availability.MANIFEST

    @property
    def env_name(self) -> str:
        """The variable a manifest sets for this option."""
        if not self.env:
            raise KeyError(f"--{self.name} has no environment variable")
        return self.env[0]

    def is_default(self, text: str) -> bool:
        """True when `text` means the same as the default (booleans compared as booleans; "" is "not given")."""
        if self.boolean:
            from generic.parse import parse_bool

            try:
                return parse_bool(text) == parse_bool(self.default or "false")
            except ValueError:
                return False
        return text.strip() in ("", self.default or "")

    @property
    def flags(self) -> tuple[str, ...]:
        return (f"--{self.name}", *self.aliases)

    @property
    def flag(self) -> str:
        return f"--{self.name}"


def _flag(name: str, group: Group, help: str, *env: str, **kw: object) -> Option:
    return Option(name, group, help, tuple(env), **kw)  # type: ignore[arg-type]


_B = {"boolean": True, "default": "false"}
_M: dict[str, object] = {"available": Availability.MANIFEST}


def _later(feature: str) -> dict[str, object]:
    return {"available": Availability.NOT_YET, "feature": feature}


_ETCD = _later("etcd leader election")

OPTIONS: tuple[Option, ...] = (
    # Mode (seed: the first two rows of the table)
    _flag("controlplane", Group.MODE, "Provide the control-plane VIP", "cp_enable", aliases=("--controlPlane",), **_B),
    _flag("services", Group.MODE, "Watch Services of type LoadBalancer and provide their VIPs", "svc_enable",
          aliases=("--servcies",), **_B),
    # VIP config
    _flag("arp", Group.VIP, "Announce VIPs with gratuitous ARP / unsolicited NDP from the leader", "vip_arp", **_B),
    _flag("bgp", Group.VIP, "Announce VIPs over BGP", "bgp_enable", **_B),
    _flag("vip", Group.VIP, "Deprecated: use --address", "vip_address", metavar="IP"),
    _flag("address", Group.VIP, "The VIP: an IP address, a comma list of one IPv4 and one IPv6, or a DNS name",
          "address", metavar="IP|NAME"),
    _flag("interface", Group.VIP, "Interface for the VIP (default: the interface of the default route)",
          "vip_interface", metavar="IFACE"),
    _flag("serviceInterface", Group.VIP, "Interface for Service VIPs (default: --interface)",
          "vip_servicesinterface", metavar="IFACE"),
    _flag("leaderElection", Group.VIP, "Elect one node to hold the VIP (always on for ARP and the Elastic IP)",
          "vip_leaderelection", **_B),
    _flag("cidr", Group.VIP, "Prefix length of the VIP: 32 (IPv4) / 128 (IPv6), or '24,64' for both families",
          "vip_cidr", "vip_subnet", aliases=("--vipSubnet",), default="32,128", metavar="BITS"),
    _flag("inCluster", Group.VIP, "Use the pod's ServiceAccount instead of a host kubeconfig "
          "(manifest default: false for a pod, true for a DaemonSet)", boolean=True, **_M),
    _flag("taint", Group.VIP, "DaemonSet: run only on control-plane nodes (tolerations and node affinity)",
          **_M, **_B),
    _flag("leaseDuration", Group.VIP, "Seconds a lease is valid without renewal", "vip_leaseduration",
          default="5", metavar="SECONDS"),
    _flag("leaseRenewDuration", Group.VIP, "Seconds the leader keeps trying to renew before it steps down",
          "vip_renewdeadline", default="3", metavar="SECONDS"),
    _flag("leaseRetry", Group.VIP, "Seconds between renewals and between attempts to acquire",
          "vip_retryperiod", default="1", metavar="SECONDS"),
    _flag("namespace", Group.VIP, "Namespace of the leases and of the generated objects", "cp_namespace",
          aliases=("-n",), default="kube-system", metavar="NAME"),
    _flag("leaseName", Group.VIP, "Name of the control-plane Lease", "vip_leasename", default="plndr-cp-lock",
          metavar="NAME"),
    _flag("servicesLeaseName", Group.VIP, "Name of the Services Lease (ARP mode)", "svc_leasename",
          default="plndr-svcs-lock", metavar="NAME"),
    _flag("leaderElectionType", Group.VIP, "Where the election runs: kubernetes (a Lease) or etcd",
          "vip_leaderelectiontype", default="kubernetes", metavar="TYPE", **_ETCD),
    _flag("port", Group.VIP, "Port of the Kubernetes API server behind the control-plane VIP", "port",
          default="6443", metavar="PORT"),
    _flag("arpRate", Group.VIP, "Milliseconds between gratuitous ARP / NDP repeats (500-60000)", "vip_arpRate",
          default="3000", metavar="MS"),
    _flag("nodeName", Group.VIP, "This node's Kubernetes name (default: the host name, lower case)",
          "vip_nodename", metavar="NAME"),
    _flag("enableNodeLabeling", Group.VIP, "Label the control-plane leader's Node kube-vip.io/has-ip=<VIP> (a new "
          "leader removes a crashed one's) and each Service's serving Node service-provided.kube-vip.io/"
          "<name>.<namespace>=<IPs> (IPv6 as 32 hex digits, two addresses joined by _); removed on exit",
          "enable_node_labeling", **_B),
    # BGP config
    _flag("bgpRouterID", Group.BGP, "BGP router ID, typically this node's address", "bgp_routerid", metavar="IPV4"),
    _flag("localAS", Group.BGP, "The AS we peer from", "bgp_as", default="65000", metavar="AS"),
    _flag("bgppeers", Group.BGP, "Peers: address:AS:password:multihop[:port],... ([v6] in brackets, "
          'a "quoted" field may hold : and ,)', "bgp_peers", secret=True, metavar="PEERS"),
    _flag("bgppeersFile", Group.BGP, "File holding the --bgppeers list (keeps passwords out of manifests)",
          "bgp_peers_file", metavar="PATH"),
    _flag("peerAddress", Group.BGP, "Address of a single BGP peer", "bgp_peeraddress", metavar="IP"),
    _flag("peerAS", Group.BGP, "AS of the single peer, and of --bgppeers entries that leave AS empty",
          "bgp_peeras", default="65000", metavar="AS"),
    _flag("peerPass", Group.BGP, "TCP MD5 password of the single peer", "bgp_peerpass", secret=True,
          metavar="PASSWORD"),
    _flag("peerPassFile", Group.BGP, "File holding the single peer's password", "bgp_peerpass_file", metavar="PATH"),
    _flag("multihop", Group.BGP, "Enable eBGP multihop with the single peer", "bgp_multihop",
          aliases=("--multiHop",), **_B),
    _flag("annotations", Group.BGP, "Wait for and use BGP settings from node annotations with this prefix "
          "(e.g. metal.equinix.com)", "annotation", aliases=("--annotaions",), metavar="PREFIX"),
    _flag("sourceIP", Group.BGP, "Source address of the BGP sessions", "bgp_sourceip", metavar="IP"),
    _flag("sourceIF", Group.BGP, "Source interface of the BGP sessions", "bgp_sourceif", metavar="IFACE"),
    _flag("bgpHoldTimer", Group.BGP, "BGP hold time in seconds (0 or 3-65535)", "bgp_hold_time", default="30",
          metavar="SECONDS"),
    _flag("bgpKeepAliveInterval", Group.BGP, "BGP keepalive interval in seconds: a third of the hold time (the "
          "speaker derives it; another value is refused)",
          "bgp_keepalive_interval", default="10", metavar="SECONDS"),
    _flag("controlPlaneHealthCheckAddress", Group.CP_HEALTH, "URL of this node's API server health check (HTTP 200 = "
          "healthy), or just a port for https://127.0.0.1:PORT/readyz; an https URL without a path checks "
          "/readyz. Empty: off. A sick leader hands the control-plane VIP to a healthy node; by BGP without "
          "leader election a sick node withdraws", "control_plane_health_check_address", metavar="URL|PORT"),
    _flag("controlPlaneHealthCheckPeriodSeconds", Group.CP_HEALTH, "Seconds between two health checks",
          "control_plane_health_check_period_seconds", default="5", metavar="SECONDS"),
    _flag("controlPlaneHealthCheckTimeoutSeconds", Group.CP_HEALTH, "Seconds one health check may take",
          "control_plane_health_check_timeout_seconds", default="3", metavar="SECONDS"),
    _flag("controlPlaneHealthCheckFailureThreshold", Group.CP_HEALTH, "Failed checks in a row that make this node "
          "unhealthy (1-100)", "control_plane_health_check_failure_threshold", default="3", metavar="N"),
    _flag("controlPlaneHealthCheckSuccessThreshold", Group.CP_HEALTH, "Passed checks in a row that make this node "
          "healthy again (1-100; kube-vip-metal's own)", "control_plane_health_check_success_threshold",
          default="2", metavar="M"),
    _flag("controlPlaneHealthCheckCAPath", Group.CP_HEALTH, "CA file (PEM) the https health check verifies the "
          "certificate with (the name `kubernetes` for a loopback URL); empty: not verified",
          "control_plane_health_check_ca_path", metavar="PATH"),
    # Equinix Metal
    _flag("metal", Group.METAL, "Use the Equinix Metal API (Elastic IP for the control plane, BGP settings)",
          "vip_packet", **_B),
    _flag("metalKey", Group.METAL, "Equinix Metal API token", "PACKET_AUTH_TOKEN", "METAL_AUTH_TOKEN",
          secret=True, metavar="TOKEN"),
    _flag("metalKeyFile", Group.METAL, "File holding the API token (static pods cannot read Secrets)",
          "vip_packetkeyfile", metavar="PATH"),
    _flag("metalProject", Group.METAL, "Equinix Metal project name", "vip_packetproject", metavar="NAME"),
    _flag("metalProjectID", Group.METAL, "Equinix Metal project UUID", "vip_packetprojectid", metavar="UUID"),
    _flag("provider-config", Group.METAL, "Path to the Equinix Metal CCM's cloud-sa.json (apiKey, projectID)",
          "provider_config", metavar="PATH"),
    _flag("metalDeviceID", Group.METAL, "This node's device UUID (default: metadata service, then host name)",
          "vip_packetdeviceid", metavar="UUID"),
    _flag("metalAPIURL", Group.METAL, "Metal API base URL", "vip_packetapiurl",
          default="https://api.equinix.com/metal/v1", metavar="URL"),
    _flag("metalMetadataURL", Group.METAL, "Metadata service URL (finds this device without the API)",
          "vip_packetmetadataurl", default="https://metadata.platformequinix.com/metadata", metavar="URL"),
    # DNS and DDNS
    _flag("ddns", Group.DNS, "Get the VIP by DHCP and register --address (an FQDN) through dynamic DNS",
          "vip_ddns", **_B),
    _flag("dnsMode", Group.DNS, "Which answers of a DNS --address to use: first, ipv4, ipv6, dual", "dns_mode",
          default="first", metavar="MODE"),
    _flag("dnsInterval", Group.DNS, "Seconds between lookups of a DNS --address (a longer TTL is waited out, up to "
          "300 s); the VIP follows the name", "dns_interval", default="3", metavar="SECONDS"),
    # etcd election
    _flag("etcdEndpoints", Group.ETCD, "etcd endpoints, comma separated (host:port or URL)", "etcd_endpoints",
          metavar="LIST", **_ETCD),
    _flag("etcdCACert", Group.ETCD, "CA certificate for etcd", "etcd_cacert", metavar="PATH", **_ETCD),
    _flag("etcdCert", Group.ETCD, "Client certificate for etcd", "etcd_cert", metavar="PATH", **_ETCD),
    _flag("etcdKey", Group.ETCD, "Client key for etcd", "etcd_key", metavar="PATH", **_ETCD),
    # Services
    _flag("servicesElection", Group.SERVICES, "One election per Service instead of one for all", "svc_election",
          **_B),
    _flag("lbClassOnly", Group.SERVICES, "Only Services whose loadBalancerClass is --lbClassName", "lb_class_only",
          **_B),
    _flag("lbClassName", Group.SERVICES, "The loadBalancerClass we serve", "lb_class_name",
          default="kube-vip.io/kube-vip-class", metavar="NAME"),
    _flag("lbClassNameLegacyHandling", Group.SERVICES, "Also serve Services without a loadBalancerClass",
          "lb_class_legacy_handling", boolean=True, default="true"),
    # Kubernetes client
    _flag("k8sConfigPath", Group.KUBERNETES, "kubeconfig of a static pod", "k8s_config_file",
          default="/etc/kubernetes/admin.conf", metavar="PATH"),
    _flag("k8sBootstrapConfigPath", Group.KUBERNETES, "kubeconfig used while --k8sConfigPath has no rights yet "
          "(kubeadm >= 1.29 during 'kubeadm init')", "k8s_bootstrap_config_file",
          default="/etc/kubernetes/super-admin.conf", metavar="PATH"),
    _flag("kubernetesAddr", Group.KUBERNETES, "API server URL to use instead of the kubeconfig's",
          "kubernetes_addr", metavar="URL"),
    # Logs and metrics
    _flag("log-level", Group.OBSERVABILITY, "debug, info, warning, error, or kube-vip's numbers (-4, 0, 4, 8)",
          "vip_loglevel", aliases=("--log",), default="info", metavar="LEVEL"),
    _flag("log-format", Group.OBSERVABILITY, "text (key=value) or json, one event per line", "log_format",
          default="text", metavar="FORMAT"),
    _flag("prometheusHTTPServer", Group.OBSERVABILITY, "Prometheus /metrics listen address (`:PORT`: every "
          "address); empty disables", "prometheus_server", default=":2112", metavar="HOST:PORT"),
    _flag("healthCheckPort", Group.OBSERVABILITY, "Port of /healthz (1025-65535); 0 disables",
          "health_check_port", default="0", metavar="PORT"),
    # Manifest generation
    _flag("image", Group.MANIFEST, "Container image of generated manifests", **_M,
          default="ghcr.io/kube-vip-metal/kube-vip-metal", metavar="IMAGE"),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}


def markdown_table() -> str:
    """README's flag table, generated so that it cannot drift from the code."""
    lines = []
    for group in Group:
        lines += [f"**{group.value}**", "", "| flag | environment | default | meaning |", "|---|---|---|---|"]
        for option in (o for o in OPTIONS if o.group is group):
            flags = ", ".join(f"`{f}`" for f in option.flags)
            env = ", ".join(f"`{e}`" for e in option.env) or ("(manifest only)" if option.manifest_only else "-")
            default = f"`{option.default}`" if option.default not in (None, "") else ""
            meaning = option.help.replace("|", "\\|") + (" (secret)" if option.secret else "")
            if option.available is Availability.NOT_YET:
                meaning += " **(not available yet: refused by the manager)**"
            lines.append(f"| {flags} | {env} | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
