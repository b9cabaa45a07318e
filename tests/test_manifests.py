"""Generated manifests: valid for Kubernetes 1.29 and the newest schema, stable (golden files), secret-free Pod
specs, and read back by the manager as the very configuration they were generated from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import Command, Config, ConfigError, build_config, given_from_env
from kubevip_metal.manifests import build_documents, render

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = ["1.29.0", kubernetes_validate.latest_version()]

CASES: dict[str, list[str]] = {
    "pod-arp-controlplane": ["manifest", "pod", "--interface", "eth0", "--address", "192.0.2.10", "--controlplane",
                             "--arp", "--leaderElection"],
    "pod-bgp-controlplane-services": [
        "manifest", "pod", "--controlplane", "--services", "--bgp", "--address", "192.0.2.10", "--interface", "lo",
        "--bgpRouterID", "198.51.100.11", "--localAS", "65000",
        "--bgppeers", "198.51.100.1:65001::false,[2001:db8:100::1]:65001::false",
        "--peerAddress", "198.51.100.2", "--peerAS", "65002", "--peerPassFile", "/etc/kube-vip/peer-password"],
    "daemonset-arp-services": ["manifest", "daemonset", "--services", "--arp", "--interface", "eth0",
                               "--servicesElection", "--taint"],
    "daemonset-metal-bgp-provider-config": [
        "manifest", "daemonset", "--controlplane", "--services", "--bgp", "--metal", "--address", "192.0.2.10",
        "--provider-config", "/etc/cloud-sa/cloud-sa.json", "--annotations", "metal.equinix.com", "--taint"],
    "daemonset-bgp-literal-passwords": [
        "manifest", "daemonset", "--services", "--bgp", "--bgppeers",
        "198.51.100.1:65001:s3cr3t:true,[2001:db8::1]:65002::false", "--sourceIF", "eth0"],
    "pod-metal-eip-keyfile": ["manifest", "pod", "--controlplane", "--metal", "--address", "192.0.2.10",
                              "--metalKeyFile", "/etc/kube-vip/metal-token", "--metalProjectID",
                              "7c1b2f3a-0000-4000-8000-000000000001", "--healthCheckPort", "8080"],
    "pod-etcd-election": ["manifest", "pod", "--controlplane", "--arp", "--address", "192.0.2.10",
                          "--leaderElectionType", "etcd", "--etcdEndpoints", "127.0.0.1:2379",
                          "--etcdCACert", "/etc/kubernetes/pki/etcd/ca.crt",
                          "--etcdCert", "/etc/kubernetes/pki/apiserver-etcd-client.crt",
                          "--etcdKey", "/etc/kubernetes/pki/apiserver-etcd-client.key"],
    "pod-arp-local-health": ["manifest", "pod", "--interface", "eth0", "--address", "192.0.2.10", "--controlplane",
                             "--arp", "--controlPlaneHealthCheckAddress", "6443",
                             "--controlPlaneHealthCheckCAPath", "/etc/kubernetes/pki/ca.crt"],
    "daemonset-bgp-local-health": [
        "manifest", "daemonset", "--controlplane", "--bgp", "--address", "192.0.2.10", "--interface", "lo",
        "--bgppeers", "198.51.100.1:65001::false", "--controlPlaneHealthCheckAddress", "https://127.0.0.1:6443",
        "--controlPlaneHealthCheckPeriodSeconds", "2", "--controlPlaneHealthCheckSuccessThreshold", "4",
        "--controlPlaneHealthCheckCAPath", "/var/lib/rancher/ca.crt"],
    "rbac": ["manifest", "rbac"],
    "rbac-node-labeling": ["manifest", "rbac", "--enableNodeLabeling"],
    "pod-arp-node-labeling": ["manifest", "pod", "--interface", "eth0", "--address", "192.0.2.10", "--controlplane",
                              "--arp", "--enableNodeLabeling"],
}


def _config(argv: list[str]) -> Config:
    command, given = parse_command_line(argv)
    assert command is not None
    return build_config(given, command)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    text = render(_config(CASES[name]))
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"regenerate with UPDATE_GOLDEN=1 and review {path}"


@pytest.mark.parametrize("version", SCHEMAS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_kubernetes_validate_accepts(name: str, version: str) -> None:
    for doc in build_documents(_config(CASES[name])):
        kubernetes_validate.validate(doc, version, strict=True)


def _pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    workload = docs[-1]
    spec: dict[str, Any] = workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]
    return spec


def _manager_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the manager would see: literal values, Secret references resolved, fieldRefs dropped."""
    secrets = {doc["metadata"]["name"]: doc["stringData"] for doc in docs if doc["kind"] == "Secret"}
    env: dict[str, str] = {}
    for item in _pod_spec(docs)["containers"][0]["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if not n.startswith("rbac")])
def test_manager_reads_back_the_generated_configuration(name: str) -> None:
    source = _config(CASES[name])
    env = _manager_env(build_documents(source))
    assert all(key in {e for o in __import__("kubevip_metal.options").options.OPTIONS for e in o.env} for key in env)
    back = build_config(given_from_env(env), Command.MANAGER, read_files=False, hostname=lambda: "n1",
                        refuse_unavailable=False)
    for section in ("control_plane", "mode", "vip", "election", "bgp", "metal", "services", "observability",
                    "local_health"):
        assert getattr(back, section) == getattr(source, section), section
    if name.startswith("pod"):
        assert back.kubernetes == source.kubernetes
    # a manifest for a feature still to come renders (with a warning), and the manager refuses it by name
    if any("not available yet" in warning for warning in source.warnings):
        with pytest.raises(ConfigError, match="not available yet"):
            build_config(given_from_env(env), Command.MANAGER, read_files=False, hostname=lambda: "n1")
    else:
        build_config(given_from_env(env), Command.MANAGER, read_files=False, hostname=lambda: "n1")


def test_static_pod_shape() -> None:
    spec = _pod_spec(build_documents(_config(CASES["pod-arp-controlplane"])))
    container = spec["containers"][0]
    assert spec["hostNetwork"] is True
    assert container["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}
    assert "privileged" not in yaml.safe_dump(spec)
    assert spec["hostAliases"] == [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}]
    env = {e["name"]: e for e in container["env"]}
    assert env["vip_nodename"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["k8s_config_file"]["value"] == "/etc/kubernetes/admin.conf"
    assert env["k8s_bootstrap_config_file"]["value"] == "/etc/kubernetes/super-admin.conf"
    # kubeadm >= 1.29: both kubeconfigs visible, and no hostPath that would create a missing file or directory
    for volume in spec["volumes"]:
        assert volume["hostPath"]["type"] in ("Directory", "File")
    assert [v["hostPath"]["path"] for v in spec["volumes"]] == ["/etc/kubernetes"]
    assert "serviceAccountName" not in spec


def test_daemonset_shape_with_taint() -> None:
    docs = build_documents(_config(CASES["daemonset-arp-services"]))
    (daemonset,) = docs
    assert daemonset["metadata"]["name"] == "kube-vip-ds"
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "kube-vip"
    assert {"operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {t["matchExpressions"][0]["key"] for t in terms} == {"node-role.kubernetes.io/master",
                                                                "node-role.kubernetes.io/control-plane"}
    assert "hostAliases" not in spec


def test_provider_config_mounts_the_ccm_secret() -> None:
    spec = _pod_spec(build_documents(_config(CASES["daemonset-metal-bgp-provider-config"])))
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "metal-cloud-config"
    assert volume["secret"]["items"] == [{"key": "cloud-sa.json", "path": "cloud-sa.json"}]


def test_rbac_least_privilege() -> None:
    sa, role, binding = build_documents(_config(["manifest", "rbac", "--namespace", "kube-vip"]))
    assert sa["metadata"] == {"name": "kube-vip", "namespace": "kube-vip"}
    assert binding["subjects"][0]["namespace"] == "kube-vip"
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert verbs[("coordination.k8s.io", "leases")] == {"get", "list", "watch", "create", "update"}
    assert "delete" not in {v for vs in verbs.values() for v in vs}
    assert not any(r in ("secrets", "pods", "*") for _, r in verbs)
    assert verbs[("", "nodes")] == {"get", "list", "watch"}


def test_rbac_for_node_labels_adds_exactly_patch_on_nodes() -> None:
    """--enableNodeLabeling merge-patches Nodes' labels and lists them by label (a crashed leader's stale label):
    `patch` is added, `list` is there already; nothing else changes, and nothing without the option."""
    def rules(argv: list[str]) -> list[tuple[str, str, str]]:
        _, role, _ = build_documents(_config(argv))
        return sorted((g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                      for v in rule["verbs"])

    plain, labelling = rules(["manifest", "rbac"]), rules(["manifest", "rbac", "--enableNodeLabeling"])
    assert sorted(set(labelling) - set(plain)) == [("", "nodes", "patch")]
    assert set(plain) <= set(labelling) and ("", "nodes", "list") in plain


def test_node_labeling_reaches_the_pod_environment() -> None:
    env = {e["name"]: e.get("value") for e in _pod_spec(build_documents(_config(CASES["pod-arp-node-labeling"])))[
        "containers"][0]["env"]}
    assert env["enable_node_labeling"] == "true"
    plain = _pod_spec(build_documents(_config(CASES["pod-arp-controlplane"])))["containers"][0]["env"]
    assert "enable_node_labeling" not in {e["name"] for e in plain}


def test_manifest_does_not_import_heavy_libraries() -> None:
    code = ("import sys; from kubevip_metal.cli import main; import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['manifest', 'pod', '--interface', 'eth0', '--address', '192.0.2.10',\n"
            "          '--controlplane', '--arp'])\n"
            "heavy = [m for m in ('kubernetes', 'equinix', 'exabgp', 'pyroute2', 'requests', 'tenacity') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_apiserver_accepts_every_manifest_in_a_server_side_dry_run(name: str, real_api: Any) -> None:
    """Beyond the schema: defaulting, validation and admission of kube-apiserver itself; nothing is stored."""
    from kubernetes import client

    from kubevip_testbed.peers.objects import apply

    docs = build_documents(_config(CASES[name]))
    apply(real_api, docs, dry_run=True)
    with real_api.client() as api:  # a dry run leaves nothing behind
        pods = client.CoreV1Api(api).list_namespaced_pod("kube-system").items
        daemonsets = client.AppsV1Api(api).list_namespaced_daemon_set("kube-system").items
    assert not pods and not daemonsets


def test_real_apiserver_rejects_a_broken_manifest_in_the_dry_run(real_api: Any) -> None:
    """The dry run is a real check: the same pod with an invalid container name is refused (422)."""
    from kubernetes import utils

    from kubevip_testbed.peers.objects import apply

    docs = build_documents(_config(CASES["pod-arp-controlplane"]))
    docs[0]["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    with pytest.raises(utils.FailToCreateError) as failure:
        apply(real_api, docs, dry_run=True)
    assert [error.status for error in failure.value.api_exceptions] == [422]
