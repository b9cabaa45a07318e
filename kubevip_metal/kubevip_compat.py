"""kube-vip's flags and environment variables that kube-vip-metal does not have, each with what to do about it.

kube-vip-metal keeps kube-vip's names, so an operator moves a cluster over by changing the image and the command of
an existing manifest. That manifest may carry settings for kube-vip features this project does not have (the IPVS
load balancer, the routing-table and WireGuard modes, egress, ...). Dropping them silently would leave
the operator believing the cluster still has what it had, so every such name is listed here and is either

* `refuse`d: the setting changes what the cluster gets, so a value other than kube-vip's default or "off" stops the
  manager with one line saying what is lost and what to change; or
* `warn`ed about: it has no effect here (kube-vip never used it either, or kube-vip-metal already behaves that way,
  or it only tunes a refused feature), so the manager starts and logs one line.

The names come from kube-vip's sources at v0.8.10 (the last release with Equinix Metal support) and at a 2026 HEAD:
`pkg/kubevip/config_envvar.go` / `config_environment.go`, the few variables read elsewhere, and the flags of
`cmd/kube-vip.go` and `cmd/kube-vip-manifests.go`; `tests/data/kubevip_names.txt` lists them and a test keeps this
table complete against it and disjoint from `kubevip_metal.options.OPTIONS`.

The CLI takes these flags out of the command line with `split_flags` before its parser sees them (cobra's forms:
`--flag`, `--flag=value`, `--flag value`), then scans them with `scan_flags` (every command) and the environment with
`scan_environment` (the manager only: `manifest` never reads the environment). The first refused finding is the one
error line (exit 2); warnings join the configuration's warnings (logged by the manager, printed by `manifest`).

Imported at CLI start: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

MASK = "***"  # the same mask as generic.secret.MASK


class Disposition(Enum):
    REFUSE = "refuse"
    WARN = "warn"


@dataclass(frozen=True)
class ForeignOption:
    """One kube-vip setting kube-vip-metal does not have. `off_values` are lower case; "" is always among them."""

    flags: tuple[str, ...]
    env: tuple[str, ...]
    boolean: bool
    disposition: Disposition
    reason: str
    off_values: frozenset[str]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.flags, *self.env)

    def is_off(self, value: str) -> bool:
        return value.lower() in self.off_values


@dataclass(frozen=True)
class Finding:
    """A foreign setting that is set to something other than "off"; `message` is one line naming `source`."""

    source: str
    value: str = field(repr=False)
    disposition: Disposition
    message: str


_BOOL_OFF = frozenset({"", "false", "0", "f"})  # what Go's strconv.ParseBool reads as false, and unset
_R, _W = Disposition.REFUSE, Disposition.WARN


def _bool(flags: tuple[str, ...], env: tuple[str, ...], disposition: Disposition, reason: str) -> ForeignOption:
    return ForeignOption(flags, env, True, disposition, reason, _BOOL_OFF)


def _value(flags: tuple[str, ...], env: tuple[str, ...], disposition: Disposition, reason: str,
           *defaults: str) -> ForeignOption:
    return ForeignOption(flags, env, False, disposition, reason, frozenset({"", *(d.lower() for d in defaults)}))


def _only_for(feature: str) -> str:
    return f"only used by {feature}, which kube-vip-metal does not have; remove it"


_TABLE = "kube-vip's routing-table mode (--table / vip_routingtable)"
_IPVS = "kube-vip's IPVS load balancer (--enableLoadBalancer / lb_enable)"
_EGRESS = "kube-vip's Service egress (SNAT of a pod's outgoing traffic to its Service VIP) is not available in " \
          "kube-vip-metal; remove it"
_ZEBRA = "kube-vip's route export to FRR (--zebra / zebra_enable)"
_MPBGP = "kube-vip's multiprotocol BGP next-hop settings are not available in kube-vip-metal; remove it"
_RBAC = "kube-vip-metal's `manifest rbac` writes a ClusterRole and ClusterRoleBinding only (a namespaced Role and " \
        "RoleBinding are not available); remove it"

FOREIGN: tuple[ForeignOption, ...] = (
    # Announcement modes
    _bool(("--wireguard",), ("vip_wireguard",), _R, "kube-vip's WireGuard mode is not available in kube-vip-metal; "
          "use --arp / vip_arp=true or --bgp / bgp_enable=true instead"),
    _bool(("--table",), ("vip_routingtable",), _R, "kube-vip's routing-table mode is not available in kube-vip-metal; "
          "use --bgp / bgp_enable=true (or --arp / vip_arp=true) instead"),
    _value(("--tableID",), ("vip_routingtableid",), _W, _only_for(_TABLE), "198"),
    _value(("--tableType",), ("vip_routingtabletype",), _W, _only_for(_TABLE), "0", "1"),  # v0.8.10: 0, HEAD: 1
    _value(("--routingProtocol",), ("vip_routingprotocol",), _W, _only_for(_TABLE), "248"),
    _bool(("--cleanRoutingTable",), ("vip_cleanroutingtable",), _W, "kube-vip-metal adds no routes to a routing "
          "table, so there is nothing to clean; remove it (flush by hand any routes kube-vip left there)"),
    # kube-vip's load balancer
    _bool(("--enableLoadBalancer",), ("lb_enable",), _R, "kube-vip's IPVS load balancing across the control-plane "
          "nodes is not available in kube-vip-metal (the VIP reaches the leader only); set it to false, or run a "
          "separate load balancer"),
    _value(("--lbPort",), ("lb_port",), _W, _only_for(_IPVS), "6443"),
    _value(("--lbForwardingMethod",), ("lb_fwdmethod",), _W, _only_for(_IPVS), "local"),
    _value((), ("backend_health_check_interval",), _W, _only_for(f"{_IPVS} and {_TABLE}"), "0"),
    _value((), ("iptables_backend",), _W, "kube-vip-metal writes no iptables or nftables rules; remove it"),
    # Services features
    _bool(("--onlyAllowTrafficServicePorts",), ("enable_service_security",), _R, "kube-vip's firewall that drops "
          "traffic to a Service VIP on ports the Service does not expose is not available in kube-vip-metal; set it "
          "to false, and filter on the host or the network if you need it"),
    _bool(("--disableServiceUpdates",), ("disable_service_updates",), _R, "kube-vip's mode that leaves a Service's "
          "status.loadBalancer untouched is not available in kube-vip-metal; set it to false"),
    _bool(("--enableEndpointSlices",), ("enable_endpointslices",), _W, "chooses where kube-vip reads a Service's "
          "endpoints; kube-vip-metal has no such switch; remove it"),
    _bool(("--enableEndpoints",), ("enable_endpoints",), _W, "chooses where kube-vip reads a Service's endpoints; "
          "kube-vip-metal has no such switch; remove it"),
    _value(("--mirrorDestInterface",), ("mirror_dest_interface",), _R, "kube-vip's mirroring of the Service "
           "interface's traffic is not available in kube-vip-metal; remove it"),
    _value((), ("svc_namespace",), _R, "kube-vip's restriction of the Service watch to one namespace is not available "
           "in kube-vip-metal; remove it (for the namespace of generated objects use --namespace / cp_namespace)"),
    _bool(("--perServiceElectionOnDemand",), ("per_service_election_on_demand",), _R, "kube-vip's per-Service election "
          "for annotated Services only is not available in kube-vip-metal; set it to false (--servicesElection / "
          "svc_election elects per Service for all of them)"),
    _bool(("--bgpAttachIPToInterface",), ("bgp_attach_ip_to_interface",), _R, "kube-vip's option to also put BGP "
          "Service VIPs on the interface is not available in kube-vip-metal; set it to false"),
    _bool((), ("enable_upnp", "enableUPNP"), _R, "kube-vip's UPnP port forwarding for Services is not available in "
          "kube-vip-metal; set it to false"),
    # Egress
    _value((), ("egress_podcidr",), _R, _EGRESS),
    _value((), ("egress_servicecidr",), _R, _EGRESS),
    _bool((), ("egress_enableinternalsnat",), _R, _EGRESS),
    # v0.8.10 read only the variable (default false), HEAD has a flag that defaults to true: any value is meaningless.
    ForeignOption(("--egressWithNftables",), ("egress_withnftables",), True, _W, "chooses the backend of kube-vip's "
                  "Service egress, which kube-vip-metal does not have; remove it", frozenset({""})),
    _bool((), ("egress_clean", "EGRESS_CLEAN"), _W, "kube-vip-metal writes no egress rules and does not clean "
          "kube-vip's; remove it (delete by hand any rules kube-vip left behind)"),
    _value(("--instanceName",), ("instance_name", "INSTANCE_NAME"), _W, "names kube-vip's nftables egress tables, "
           "which kube-vip-metal does not have; remove it"),
    # Control plane and leader election
    _bool(("--autodetectcp",), ("cp_detect",), _R, "kube-vip's detection of the local API server's address is not "
          "available in kube-vip-metal; set it to false, and give the address with --kubernetesAddr / "
          "kubernetes_addr if the kubeconfig's server is not reachable"),
    _value((), ("vip_leaseannotations",), _R, "kube-vip's annotations on the control-plane Lease are not available in "
           "kube-vip-metal; remove it", "{}", "null"),
    _bool(("--preserveVipOnLeadershipLoss",), ("vip_preserve_on_leadership_loss",), _R, "kube-vip's keeping of the VIP "
          "after leadership is lost is not available: kube-vip-metal always removes it, so that two nodes never hold "
          "it; set it to false"),
    # kube-vip's generator writes the timeout under this name too (vip_loseleadership=30): refused as well.
    _bool(("--loseLeadership",), ("vip_loseleadership",), _R, "kube-vip's step-down when the VIP's interface goes "
          "down is not available in kube-vip-metal (the leader keeps the lease and announces again when the link "
          "returns); set it to false"),
    _value(("--loseLeadershiptTimeoutSeconds",), ("vip_loseleadership_timeout_seconds",), _W,
           _only_for("kube-vip's --loseLeadership / vip_loseleadership"), "30", "0"),
    _bool(("--allowInterfaceNotUp",), ("vip_allow_interface_not_up",), _W, "kube-vip-metal always waits (retrying) "
          "for an interface that is not up; remove it"),
    # BGP
    _value((), ("bgp_routerinterface",), _R, "kube-vip's router ID taken from an interface's address is not available "
           "in kube-vip-metal; set --bgpRouterID / bgp_routerid to that address instead"),
    _value((), ("mpbgp_nexthop",), _R, _MPBGP),
    _value((), ("mpbgp_ipv4",), _R, _MPBGP),
    _value((), ("mpbgp_ipv6",), _R, _MPBGP),
    _bool(("--zebra",), ("zebra_enable",), _R, "kube-vip's route export to FRR's zebra is not available in "
          "kube-vip-metal; set it to false"),
    _value(("--zebraUrl",), ("zebra_url",), _W, _only_for(_ZEBRA), "unix:/var/run/frr/zserv.api"),
    _value(("--zebraVersion",), ("zebra_version",), _W, _only_for(_ZEBRA), "6"),
    _value(("--zebraSoftwareName",), ("zebra_software_name",), _W, _only_for(_ZEBRA), "frr8.3"),
    # DHCP
    _value(("--dhcpMode",), ("dhcp_mode",), _R, "kube-vip's choice of the DHCP address family is not available in "
           "kube-vip-metal; remove it"),
    _value(("--dhcpBackoffAttempts",), ("dhcp_backoff_attempts",), _W, "tunes kube-vip's DHCP retries; kube-vip-metal "
           "has no such setting; remove it", "3"),
    # Addresses and interfaces
    _bool((), ("vip_skipdad",), _W, "kube-vip-metal always adds IPv6 VIPs without duplicate address detection "
          "(NODAD); remove it"),
    _bool(("--loInterfaceGlobalScope",), ("vip_interfaceloglobal",), _W, "kube-vip-metal always gives VIPs global "
          "scope, on lo too; remove it"),
    # Unused by kube-vip itself, or tuning only
    _bool((), ("vip_singlenode",), _W, "parsed but never used by kube-vip itself; remove it"),
    _bool((), ("vip_startleader",), _W, "parsed but never used by kube-vip itself; remove it"),
    _value((), ("vip_configmap",), _W, "names a ConfigMap kube-vip's manager never reads; remove it", "plndr"),
    _value(("--debounceTime",), ("debounce_time",), _W, "tunes kube-vip's batching of watch events; kube-vip-metal "
           "has no such setting; remove it", "0s", "0"),
    _value((), ("PACKNGO_DEBUG",), _W, "turned on the debug log of kube-vip's Equinix Metal client library; use "
           "--log-level debug / vip_loglevel=-4 instead"),
    # Configuration file
    _value(("--config-file",), ("config_file",), _R, "kube-vip's configuration file is not read by kube-vip-metal, so "
           "its settings would be lost; pass them as flags or environment variables"),
    # manifest rbac
    _bool(("--role",), (), _R, _RBAC),
    _bool(("--rolebinding",), (), _R, _RBAC),
)

BY_FLAG: dict[str, ForeignOption] = {flag: option for option in FOREIGN for flag in option.flags}
BY_ENV: dict[str, ForeignOption] = {name: option for option in FOREIGN for name in option.env}

_SECRET_WORDS = ("pass", "token", "secret", "key", "auth", "credential")


def shown_value(name: str, value: str) -> str:
    """`value` as a message may print it: masked when the name looks like it holds a secret, a URL's password
    masked, control characters escaped, and long values cut."""
    if any(word in name.lower() for word in _SECRET_WORDS):
        return MASK
    try:
        url = urlsplit(value)
        if url.password is not None:
            value = value.replace(f":{url.password}@", f":{MASK}@", 1)
        elif url.username is not None and url.scheme:
            value = value.replace(f"{url.username}@", f"{MASK}@", 1)
    except ValueError:
        pass
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)
    return text if len(text) <= 80 else text[:77] + "..."


def _finding(option: ForeignOption, source: str, value: str) -> Finding:
    return Finding(source, value, option.disposition, f"{source}={shown_value(source, value)}: {option.reason}")


def _ordered(findings: list[Finding]) -> list[Finding]:
    """Refusals first (the CLI prints the first one), then by name."""
    return sorted(findings, key=lambda f: (f.disposition is not Disposition.REFUSE, f.source, f.value))


def scan_environment(environ: Mapping[str, str]) -> list[Finding]:
    """Findings for the foreign variables in `environ` that are set to something other than "off"."""
    return _ordered([_finding(BY_ENV[name], name, value) for name, value in environ.items()
                     if name in BY_ENV and not BY_ENV[name].is_off(value)])


def scan_flags(given: Mapping[str, str]) -> list[Finding]:
    """Findings for foreign flags: flag as typed (`--table`) -> its value ("true" for a bare boolean flag)."""
    return _ordered([_finding(BY_FLAG[flag], flag, value) for flag, value in given.items()
                     if flag in BY_FLAG and not BY_FLAG[flag].is_off(value)])


def split_flags(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Take kube-vip's foreign flags out of a command line, as cobra would read them (`--flag=value`, `--flag value`,
    a bare boolean `--flag`), before argparse sees it. Returns the other tokens, in order, and flag -> value for
    `scan_flags`. A value flag with nothing after it stays in the tokens, for the parser to reject."""
    rest: list[str] = []
    found: dict[str, str] = {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "--":
            rest += tokens[i:]
            break
        flag, sep, value = token.partition("=")
        option = BY_FLAG.get(flag)
        if option is None:
            rest.append(token)
        elif sep:
            found[flag] = value
        elif option.boolean:
            found[flag] = "true"
        elif i + 1 < len(tokens):
            found[flag] = tokens[i + 1]
            i += 1
        else:
            rest.append(token)
        i += 1
    return rest, found
