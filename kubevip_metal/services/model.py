"""Which Services are ours and what they want, from the Service object alone (kube-vip's rules, its annotations).

A Service is ours when it is `type: LoadBalancer`, not annotated `kube-vip.io/ignore: "true"`, and its
`loadBalancerClass` passes kube-vip's rules: an explicit class must equal `--lbClassName`; a Service without one is
served with the legacy handling (the default) unless `--lbClassOnly`; without the legacy handling a class is
required.

Its addresses come from the `kube-vip.io/loadbalancerIPs` annotation (a comma list, one per family, as the
kube-vip cloud provider and the Equinix Metal CCM write it), else `spec.loadBalancerIP`. **Status is an output,
never an input**: kube-vip read `status.loadBalancer.ingress` too and so adopted addresses another load-balancer
controller had written there (k3s' servicelb writes node IPs: kube-vip issues #1288, #815). A Service that is ours
but has no address yet is waiting for its IPAM; one whose annotation is malformed is skipped with a reason that
names the Service and the key, and the others are unaffected.

`0.0.0.0` (kube-vip's DHCP rule, §7.3) asks for an IPv4 address leased by DHCP for the Service
(kubevip_metal.services.dhcp): its host name (option 12) is `kube-vip.io/loadbalancerHostname` or the Service's
name, its client identifier that annotation or `kube-vip-metal/<uid>` (the server keys the lease on it, so any
node gets the same address), and the address last leased (`kube-vip.io/requestedIP`, written by the holder) is
asked for first. `::` is skipped: there is no DHCPv6 client here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from generic.parse import IPAddress

IGNORE = "kube-vip.io/ignore"
LOADBALANCER_IPS = "kube-vip.io/loadbalancerIPs"
VIP_HOST = "kube-vip.io/vipHost"
REQUESTED_IP = "kube-vip.io/requestedIP"  # the DHCP-leased address(es), `v4[,v6]`, written by the holder
LB_HOSTNAME = "kube-vip.io/loadbalancerHostname"  # the DHCP host name (and client identifier)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # on each EndpointSlice


@dataclass(frozen=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Port:
    port: int
    protocol: str


@dataclass(frozen=True)
class Dhcp:
    """A Service whose IPv4 VIP is leased by DHCP: what its client sends."""

    host: str  # option 12
    client_id: str  # option 61: the lease's key, the same on every node
    requested: IPAddress | None  # kube-vip.io/requestedIP's IPv4 address: asked for first


@dataclass(frozen=True)
class ServiceIntent:
    """What a Service of ours wants: its VIPs, the ports to publish in its status, and whether only nodes with a
    local ready endpoint may serve it (`externalTrafficPolicy: Local`)."""

    key: ServiceKey
    uid: str
    addresses: tuple[IPAddress, ...]
    ports: tuple[Port, ...]
    local: bool
    dhcp: Dhcp | None = None  # `0.0.0.0`: the IPv4 VIP is leased (not in `addresses`)


@dataclass(frozen=True)
class Skipped:
    """Ours, but not served: why (names the Service and the key; shown in the log and an Event)."""

    key: ServiceKey
    reason: str


@dataclass(frozen=True)
class ClassRules:
    name: str  # --lbClassName
    only: bool  # --lbClassOnly
    legacy: bool  # --lbClassNameLegacyHandling


def key_of(obj: Mapping[str, Any]) -> ServiceKey:
    metadata = obj.get("metadata") or {}
    return ServiceKey(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _ours(spec: Mapping[str, Any], annotations: Mapping[str, str], rules: ClassRules) -> bool:
    if spec.get("type") != "LoadBalancer" or str(annotations.get(IGNORE, "")).lower() == "true":
        return False
    klass = spec.get("loadBalancerClass")
    if klass:
        return bool(klass == rules.name)
    return rules.legacy and not rules.only


def _addresses(key: ServiceKey, spec: Mapping[str, Any],
               annotations: Mapping[str, str]) -> tuple[IPAddress, ...] | Skipped:
    text = annotations.get(LOADBALANCER_IPS)
    source = LOADBALANCER_IPS if text else "spec.loadBalancerIP"
    if not text:
        text = str(spec.get("loadBalancerIP") or "")
    found: list[IPAddress] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            return Skipped(key, f"Service {key}: {source} {item[:64]!r} is not an IP address")
        if address.is_unspecified and address.version == 6:
            return Skipped(key, f"Service {key}: {source} {item}: an IPv6 address leased by DHCP (::) is not "
                                "available (DHCPv4 only, 0.0.0.0)")
        if any(a.version == address.version for a in found):
            return Skipped(key, f"Service {key}: {source} has two IPv{address.version} addresses; give one per "
                                "family")
        found.append(address)
    return tuple(found)


def _ports(spec: Mapping[str, Any]) -> tuple[Port, ...]:
    ports = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("port"), int):
            ports.append(Port(int(entry["port"]), str(entry.get("protocol") or "TCP")))
    return tuple(ports)


def interpret(obj: Mapping[str, Any], rules: ClassRules) -> ServiceIntent | Skipped | None:
    """The Service's intent, why it is skipped, or None when it is not ours (or has no address yet)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    annotations = metadata.get("annotations") or {}
    if not _ours(spec, annotations, rules):
        return None
    key = key_of(obj)
    addresses = _addresses(key, spec, annotations)
    if isinstance(addresses, Skipped):
        return addresses
    if not addresses:
        return None  # waiting for its IPAM (the cloud provider, the CCM) to write an address
    local = spec.get("externalTrafficPolicy") == "Local"
    uid = str(metadata.get("uid") or "")
    dhcp = None
    if any(a.is_unspecified for a in addresses):
        addresses = tuple(a for a in addresses if not a.is_unspecified)
        leased = _dhcp(key, uid, annotations)
        if isinstance(leased, Skipped):
            return leased
        dhcp = leased
    return ServiceIntent(key, uid, addresses, _ports(spec), local, dhcp)


def _dhcp(key: ServiceKey, uid: str, annotations: Mapping[str, str]) -> Dhcp | Skipped:
    named = str(annotations.get(LB_HOSTNAME) or "").strip()
    if named and not _HOST.fullmatch(named):
        return Skipped(key, f"Service {key}: {LB_HOSTNAME} {named[:64]!r} is not a DNS label")
    if not named and not uid:
        return Skipped(key, f"Service {key}: a DHCP address needs the Service's uid or {LB_HOSTNAME}")
    requested = None
    for item in str(annotations.get(REQUESTED_IP) or "").split(","):
        try:
            address = ipaddress.ip_address(item.strip())
        except ValueError:
            continue  # a stale or foreign value: only a hint, DISCOVER without it
        if address.version == 4 and not address.is_unspecified:
            requested = address
            break
    return Dhcp(named or key.name, named or f"kube-vip-metal/{uid}", requested)


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def serving_nodes(slice_obj: Mapping[str, Any]) -> tuple[ServiceKey | None, frozenset[str]]:
    """An EndpointSlice's Service and the nodes with a serving endpoint in it (`serving`, so an endpoint that is
    terminating but still serves keeps its node eligible during a rolling update; `ready` when the API has no
    `serving`)."""
    metadata = slice_obj.get("metadata") or {}
    service = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service:
        return None, frozenset()
    nodes = set()
    for endpoint in slice_obj.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        serving = conditions.get("serving")
        if serving is None:
            serving = conditions.get("ready")
        if serving is None or serving:  # the API says: nil means ready
            node = endpoint.get("nodeName")
            if node:
                nodes.add(str(node))
    return ServiceKey(str(metadata.get("namespace") or ""), str(service)), frozenset(nodes)
