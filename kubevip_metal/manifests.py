"""Render the static pod, the DaemonSet and the RBAC from the validated configuration.

The environment follows kube-vip's names, so the manager reads back exactly the configuration that was
given to `manifest` (a test proves the round trip). Secrets never enter a Pod spec: a DaemonSet references a
Secret (printed next to it when a literal value was given), a static pod reads a root-only host file.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import Any

import yaml

import manifests as templates
from generic.bgp.peers import format_peer_list
from generic.secret import Secret
from kubevip_metal import __version__
from kubevip_metal.config import Command, Config, ConfigError, ElectionType, Mode
from kubevip_metal.options import BY_NAME

SECRET_NAME = "kube-vip-secrets"
CCM_SECRET_NAME = "metal-cloud-config"  # written by the Equinix Metal CCM; holds cloud-sa.json
CCM_SECRET_KEY = "cloud-sa.json"

_CONTROL_PLANE_TOLERATIONS = [
    {"operator": "Exists", "effect": "NoSchedule"},
    {"operator": "Exists", "effect": "NoExecute"},
]
_CONTROL_PLANE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "node-role.kubernetes.io/master", "operator": "Exists"}]},
                {"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]},
            ]
        }
    }
}


# --enableNodeLabeling (kubevip_metal/daemon/nodelabels.py, services/labels.py): a JSON merge patch of metadata.labels
# on Nodes; listing them (the stale label a crashed leader left) and getting this node's are in the skeleton already
_NODE_LABELS_RULE: dict[str, Any] = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _seconds(value: float) -> str:
    return f"{value:g}"


class _PodBuilder:
    """Collects env, volumes and Secret data for one pod spec. Variables are set by option name: the variable's
    name and its default come from the option table (kubevip_metal/options.py), never typed twice."""

    def __init__(self, config: Config, static: bool) -> None:
        self.config = config
        self.static = static  # a static pod cannot read Secrets or use a ServiceAccount
        self.env: list[dict[str, Any]] = []
        self.mounts: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []
        self.secret_data: dict[str, str] = {}

    def set(self, option: str, value: str) -> None:
        self.env.append({"name": BY_NAME[option].env_name, "value": value})

    def set_unless_default(self, option: str, value: str) -> None:
        """Only when `value` differs from the option's default (the manager falls back to the same default)."""
        if not BY_NAME[option].is_default(value):
            self.set(option, value)

    def field_ref(self, option: str, path: str) -> None:
        self.env.append({"name": BY_NAME[option].env_name, "valueFrom": {"fieldRef": {"fieldPath": path}}})

    def secret(self, option: str, value: Secret, file_option: str) -> None:
        env_name = BY_NAME[option].env_name
        if self.static:
            raise ConfigError(BY_NAME[option].flag, "***", "a static pod cannot read Secrets: put the value in a "
                              f"root-only file on every node and pass {BY_NAME[file_option].flag} PATH (or generate a "
                              "DaemonSet)")
        self.secret_data[env_name] = value.reveal()
        self.env.append({"name": env_name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": env_name}}})

    def host_file(self, volume: str, path: Path) -> None:
        """Mount one host file read-only at the same path; `File` makes a missing file fail loudly, not appear."""
        self.volumes.append({"name": volume, "hostPath": {"path": str(path), "type": "File"}})
        self.mounts.append({"name": volume, "mountPath": str(path), "readOnly": True})

    def host_dir(self, volume: str, path: str) -> None:
        if any(v.get("hostPath", {}).get("path") == path for v in self.volumes):
            return
        self.volumes.append({"name": volume, "hostPath": {"path": path, "type": "Directory"}})
        self.mounts.append({"name": volume, "mountPath": path, "readOnly": True})


_LOG_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


def _environment(b: _PodBuilder) -> None:
    c = b.config
    b.set("arp", _bool(c.mode is Mode.ARP))
    b.set("port", str(c.vip.port))
    b.field_ref("nodeName", "spec.nodeName")
    if c.vip.address:
        b.set("address", c.vip.address)
    if c.vip.interface:
        b.set("interface", c.vip.interface)
    if c.vip.service_interface:
        b.set("serviceInterface", c.vip.service_interface)
    b.set("cidr", f"{c.vip.prefix_v4},{c.vip.prefix_v6}")
    b.set_unless_default("dnsMode", c.vip.dns_mode.value)
    if c.vip.dns_name:
        b.set_unless_default("dnsInterval", _seconds(c.vip.dns_interval))
    b.set_unless_default("arpRate", str(c.vip.arp_rate_ms))
    if c.control_plane:
        b.set("controlplane", "true")
        b.set("namespace", c.election.namespace)
        b.set_unless_default("ddns", _bool(c.vip.ddns))
        b.set_unless_default("enableNodeLabeling", _bool(c.node_labeling))
    if c.services.enabled:
        b.set("services", "true")
        b.set("servicesLeaseName", c.election.services_lease_name)
        b.set_unless_default("servicesElection", _bool(c.services.election))
        b.set_unless_default("lbClassOnly", _bool(c.services.lb_class_only))
        b.set_unless_default("lbClassName", c.services.lb_class_name)
        b.set_unless_default("lbClassNameLegacyHandling", _bool(c.services.lb_class_legacy))
    b.set_unless_default("leaderElection", _bool(c.election.requested))
    b.set("leaseName", c.election.lease_name)
    b.set("leaseDuration", _seconds(c.election.timers.lease_duration))
    b.set("leaseRenewDuration", _seconds(c.election.timers.renew_deadline))
    b.set("leaseRetry", _seconds(c.election.timers.retry_period))
    if c.election.etcd is not None:
        etcd = c.election.etcd
        b.set("leaderElectionType", ElectionType.ETCD.value)
        b.set("etcdEndpoints", ",".join(etcd.endpoints))
        for option, volume, path in (("etcdCACert", "etcd-ca", etcd.ca_cert), ("etcdCert", "etcd-cert", etcd.cert),
                                     ("etcdKey", "etcd-key", etcd.key)):
            if path is not None:
                b.set(option, str(path))
                b.host_file(volume, path)
    if c.local_health is not None:  # kube-vip HEAD's variables, emitted only with the address
        health = c.local_health
        b.set("controlPlaneHealthCheckAddress", health.url)
        b.set("controlPlaneHealthCheckPeriodSeconds", _seconds(health.period))
        b.set("controlPlaneHealthCheckTimeoutSeconds", _seconds(health.timeout))
        b.set("controlPlaneHealthCheckFailureThreshold", str(health.failure_threshold))
        b.set_unless_default("controlPlaneHealthCheckSuccessThreshold", str(health.success_threshold))
        if health.ca_path is not None:
            b.set("controlPlaneHealthCheckCAPath", str(health.ca_path))
    if c.mode is Mode.BGP:
        _bgp_environment(b)
    if c.metal.enabled:
        _metal_environment(b)
    observability = c.observability
    prometheus = observability.prometheus
    b.set("prometheusHTTPServer", "" if prometheus is None else _listen(prometheus))
    if observability.health_port:
        b.set("healthCheckPort", str(observability.health_port))
    b.set_unless_default("log-level", _LOG_LEVELS[observability.log_level])
    b.set_unless_default("log-format", observability.log_format.value)


def _listen(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bgp_environment(b: _PodBuilder) -> None:
    bgp = b.config.bgp
    b.set("bgp", "true")
    if bgp.router_id is not None:
        b.set("bgpRouterID", str(bgp.router_id))
    if bgp.local_as_given:  # left out, the Metal API's or the annotations' local AS applies (else 65000)
        b.set("localAS", str(bgp.local_as))
    # a single peer whose password is in a file stays separate (bgp_peeraddress + bgp_peerpass_file)
    listed = bgp.peers[:-1] if bgp.peer_pass_file is not None else bgp.peers
    if listed:
        peers = format_peer_list(listed, reveal=True)
        if any(peer.password for peer in listed):
            b.secret("bgppeers", Secret(peers), "bgppeersFile")
        else:
            b.set("bgppeers", peers)
    if bgp.peers_file is not None:
        b.set("bgppeersFile", str(bgp.peers_file))
        b.host_file("bgp-peers", bgp.peers_file)
    if bgp.peer_pass_file is not None:
        single = bgp.peers[-1]
        b.set("peerAddress", str(single.address))
        b.set("peerAS", str(single.asn))
        b.set("multihop", _bool(single.multihop))
        b.set("peerPassFile", str(bgp.peer_pass_file))
        b.host_file("bgp-peerpass", bgp.peer_pass_file)
    if bgp.source_ip is not None:
        b.set("sourceIP", str(bgp.source_ip))
    if bgp.source_if is not None:
        b.set("sourceIF", bgp.source_if)
    b.set_unless_default("bgpHoldTimer", str(bgp.hold_time))
    b.set_unless_default("bgpKeepAliveInterval", str(bgp.keepalive))
    if bgp.annotations:
        b.set("annotations", bgp.annotations)


def _metal_environment(b: _PodBuilder) -> None:
    metal = b.config.metal
    b.set("metal", "true")
    if metal.project:
        b.set("metalProject", metal.project)
    if metal.project_id:
        b.set("metalProjectID", metal.project_id)
    if metal.device_id:
        b.set("metalDeviceID", metal.device_id)
    b.set_unless_default("metalAPIURL", metal.api_url)
    b.set_unless_default("metalMetadataURL", metal.metadata_url)
    if metal.api_key is not None:
        b.secret("metalKey", metal.api_key, "metalKeyFile")
    if metal.api_key_file is not None:
        b.set("metalKeyFile", str(metal.api_key_file))
        b.host_file("metal-key", metal.api_key_file)
    if metal.provider_config is not None:
        path = metal.provider_config
        b.set("provider-config", str(path))
        if b.static:
            b.host_file("provider-config", path)
        else:
            b.volumes.append({"name": "cloud-sa-volume", "secret": {
                "secretName": CCM_SECRET_NAME, "items": [{"key": CCM_SECRET_KEY, "path": path.name}]}})
            b.mounts.append({"name": "cloud-sa-volume", "mountPath": str(path.parent), "readOnly": True})


def _kubeconfig(b: _PodBuilder, spec: dict[str, Any], in_cluster: bool) -> None:
    """Static pods read the host kubeconfig; `kubernetes` resolves to 127.0.0.1 so the pod talks to its local
    API server, not to the VIP it provides.

    kubeadm >= 1.29 (kube-vip #684): during `kubeadm init`, admin.conf has no rights yet and super-admin.conf
    must be used. Both live in /etc/kubernetes, so the directory is mounted read-only (type Directory: nothing
    is created on the host when a file is missing, as a file hostPath would), and the manager uses
    admin.conf, falling back to super-admin.conf only while admin.conf is refused and super-admin.conf exists.
    Joining nodes, which never have super-admin.conf, need no other manifest.
    """
    if in_cluster:
        spec["serviceAccountName"] = "kube-vip"
        return
    kube = b.config.kubernetes
    b.set("k8sConfigPath", str(kube.config_path))
    b.set("k8sBootstrapConfigPath", str(kube.bootstrap_config_path))
    b.host_dir("kubeconfig", posixpath.dirname(str(kube.config_path)))
    b.host_dir("kubeconfig-bootstrap", posixpath.dirname(str(kube.bootstrap_config_path)))
    spec["hostAliases"] = [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}]
    if kube.api_url:
        b.set("kubernetesAddr", kube.api_url)


def _pod_spec(config: Config, static: bool) -> tuple[dict[str, Any], dict[str, str]]:
    (pod,) = templates.load("pod")
    spec: dict[str, Any] = pod["spec"]
    in_cluster = config.manifest.in_cluster if config.manifest.in_cluster is not None else not static
    if static and in_cluster:
        raise ConfigError("--inCluster", "true", "a static pod cannot use a ServiceAccount; generate a DaemonSet")
    builder = _PodBuilder(config, static)
    _environment(builder)
    _kubeconfig(builder, spec, in_cluster)
    ca = config.local_health.ca_path if config.local_health is not None else None
    if ca is not None and not any(str(ca).startswith(m["mountPath"].rstrip("/") + "/") for m in builder.mounts):
        builder.host_file("health-check-ca", ca)  # (under a mounted /etc/kubernetes it is already there)
    container = spec["containers"][0]
    container["image"] = _image(config.manifest.image)
    container["env"] = builder.env
    port = config.observability.health_port
    if port:  # probes only on an endpoint the manager serves (--healthCheckPort); none would restart it forever
        container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": port}, "initialDelaySeconds": 10,
                                      "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
        container["readinessProbe"] = {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 5,
                                       "timeoutSeconds": 3, "failureThreshold": 2}
    if builder.mounts:
        container["volumeMounts"] = builder.mounts
    else:
        del container["volumeMounts"]
    if builder.volumes:
        spec["volumes"] = builder.volumes
    else:
        del spec["volumes"]
    return spec, builder.secret_data


def _image(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in image) else f"{image}:v{__version__}"


def _namespaced(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc["metadata"]["namespace"] = namespace
    return doc


def _secret_doc(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "kube-vip"}},
            "type": "Opaque", "stringData": dict(sorted(data.items()))}


def build_documents(config: Config) -> list[dict[str, Any]]:
    """The manifest as Kubernetes objects, in apply order."""
    namespace = config.election.namespace
    if config.command is Command.RBAC:
        docs = templates.load("rbac")
        _namespaced(docs[0], namespace)
        if config.node_labeling:  # least privilege: only a daemon that labels Nodes may patch them
            docs[1]["rules"].append(dict(_NODE_LABELS_RULE))
        docs[2]["subjects"][0]["namespace"] = namespace
        return docs
    if config.command is Command.POD:
        (pod,) = templates.load("pod")
        pod["spec"], _ = _pod_spec(config, static=True)
        return [_namespaced(pod, namespace)]
    (daemonset,) = templates.load("daemonset")
    spec, secret_data = _pod_spec(config, static=False)
    if config.manifest.taint:
        spec["tolerations"] = _CONTROL_PLANE_TOLERATIONS
        spec["affinity"] = _CONTROL_PLANE_AFFINITY
    daemonset["metadata"]["labels"]["app.kubernetes.io/version"] = f"v{__version__}"
    daemonset["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = f"v{__version__}"
    daemonset["spec"]["template"]["spec"] = spec
    docs = [_namespaced(daemonset, namespace)]
    if secret_data:
        docs.insert(0, _secret_doc(namespace, secret_data))
    return docs


def render(config: Config) -> str:
    return yaml.safe_dump_all(build_documents(config), sort_keys=False, default_flow_style=False, explicit_start=True)
