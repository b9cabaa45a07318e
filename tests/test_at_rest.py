"""Cost at rest (#11 item 6): the ARP control plane imports only what it needs (not the official Kubernetes client,
ExaBGP, the Metal SDK or prometheus_client), the VIP reconciler is woken by the kernel's notifications rather than a
period, and the small REST client speaks to a real kube-apiserver with kubeadm's client-certificate kubeconfig."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from generic import kuberest
from generic.election import Elector, Timers
from generic.election.lease_lock import LeaseLock
from generic.election.lock import LeaderRecord, LockConflict
from kubevip_metal import kubeclient
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import build_config
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.rig import Rig
from kubevip_testbed.waiting import wait_for
from tests.lab_support import settled
from tests.rig_support import require_rig

NOT_FOR_THE_ARP_CONTROL_PLANE = ("kubernetes", "pydantic", "urllib3", "requests", "prometheus_client", "exabgp",
                                 "equinix", "oauthlib", "websocket")


def _imported(log: Path) -> set[str]:
    """Top-level packages of every module the process imported (`-X importtime` lines on its stderr)."""
    names = set()
    for line in log.read_text().splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "package":
                names.add(name.split(".")[0])
    return names


def test_the_arp_control_plane_imports_only_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    require_rig()
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the managers' stderr is their log file
    with LabCluster(nodes=2, timers=(2.0, 1.5, 0.4)) as lab:
        for node in lab.nodes:
            lab.start(node)
        leader = settled(lab, timeout=30)  # one read of the holders per look: two reads could see two states
        follower = next(node for node in lab.nodes if node != leader)
        # renewals, the follower's watch events and a reconciler pass have run by now
        wait_for(lambda: any(e["event"] == "election.new_leader" for e in lab.events(follower)), timeout=10)
        time.sleep(1.0)
        for node in lab.nodes:
            assert lab.terminate(node, timeout=10) == 0
        for node in lab.nodes:
            imported = _imported(lab.log_path(node))
            assert "pyroute2" in imported and "generic" in imported  # the log does list the imports
            assert not imported & set(NOT_FOR_THE_ARP_CONTROL_PLANE), (node, imported & set(
                NOT_FOR_THE_ARP_CONTROL_PLANE))


_RECONCILER = textwrap.dedent("""
    import ipaddress, json, subprocess, sys, time
    from generic.addresses import Addresses, Vip
    from kubevip_metal.daemon.vips import VipController

    leader = Vip(ipaddress.ip_address("198.51.100.77"), 32, "eth0")
    follower = Vip(ipaddress.ip_address("198.51.100.78"), 32, "eth0")
    addresses = Addresses()
    vips = VipController(addresses, [], period=3600)  # no safety pass during this test: only notifications
    vips.claim("leader", [leader], active=True)
    vips.claim("follower", [follower], active=False)
    vips.start()
    passes_before = vips.repairs
    subprocess.run(["ip", "addr", "del", "198.51.100.77/32", "dev", "eth0"], check=True)
    subprocess.run(["ip", "addr", "add", "198.51.100.78/32", "dev", "eth0"], check=True)
    deadline = time.monotonic() + 30
    def done():  # both repairs made and counted (the count is added at the end of the pass)
        with vips._lock:
            return addresses.present(leader) and not addresses.present(follower) and vips.repairs >= 2

    while time.monotonic() < deadline and not done():
        time.sleep(0.05)
    with vips._lock:  # one netlink handle: never read it while a pass is using it
        print(json.dumps({"healed": addresses.present(leader), "stray_gone": not addresses.present(follower),
                          "repairs": vips.repairs - passes_before, "period": vips.period}))
    vips.stop()
    sys.exit(0)
""")


def test_the_reconciler_repairs_on_the_kernels_notification_not_on_a_period(rig: Rig) -> None:
    """With the period at an hour, only the netlink notification can bring the deleted VIP back and remove the
    one added by hand."""
    result = rig.run("n1", [sys.executable, "-c", _RECONCILER], timeout=60)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"healed": True, "stray_gone": True, "repairs": 2, "period": 3600}
    assert "198.51.100.77" not in rig.addresses("n1")  # stop() let go of it


def test_the_default_period_is_the_slow_safety_pass_when_the_kernel_reports_changes(rig: Rig) -> None:
    script = textwrap.dedent("""
        from generic.addresses import Addresses
        from kubevip_metal.daemon.vips import SAFETY_SECONDS, VipController
        vips = VipController(Addresses(), [])
        vips.start()
        print(vips.period == SAFETY_SECONDS, vips.alive())
        vips.stop()
    """)
    assert rig.run("n1", [sys.executable, "-c", script], timeout=60).stdout.split() == ["True", "True"]


# -- the small REST client --------------------------------------------------------------------------------------


def _kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


def test_kubeconfig_fields_are_read_and_an_exec_plugin_is_left_to_the_official_client(tmp_path: Path) -> None:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    endpoint = kuberest.load_kubeconfig(_kubeconfig(tmp_path / "a.conf", {
        "server": "https://192.0.2.10:6443/", "certificate-authority-data": ca, "tls-server-name": "kubernetes"},
        {"token": "t0ken"}))
    assert (endpoint.server, endpoint.ca_pem, endpoint.server_name) == ("https://192.0.2.10:6443",
                                                                       b"-----BEGIN CERTIFICATE-----\n", "kubernetes")
    assert endpoint.token is not None and endpoint.token.reveal() == "t0ken" and "t0ken" not in repr(endpoint)
    with pytest.raises(kuberest.Unsupported, match="exec"):
        kuberest.load_kubeconfig(_kubeconfig(tmp_path / "b.conf", {"server": "https://x:6443"},
                                             {"exec": {"command": "aws"}}))
    with pytest.raises(kuberest.KubeConfigError, match="needs its key"):
        kuberest.load_kubeconfig(_kubeconfig(tmp_path / "c.conf", {"server": "https://x:6443"},
                                             {"client-certificate-data": ca}))


def _client_cert(real_api: Any, directory: Path) -> tuple[bytes, bytes]:
    """A client certificate in system:masters signed by the API server's client CA: kubeadm's super-admin.conf."""
    pki = real_api.pki
    run = {"cwd": directory, "check": True, "capture_output": True, "timeout": 60}
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
                    "-subj", "/O=system:masters/CN=kubernetes-super-admin"], **run)  # type: ignore[call-overload]
    subprocess.run(["openssl", "x509", "-req", "-in", "client.csr", "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
                    "-CAcreateserial", "-out", "client.crt", "-days", "1"], **run)  # type: ignore[call-overload]
    return (directory / "client.crt").read_bytes(), (directory / "client.key").read_bytes()


def test_a_lease_over_tls_with_a_kubeadm_client_certificate(real_api: Any, tmp_path: Path) -> None:
    """kubeadm's admin.conf form (CA, client certificate and key inlined) against the real kube-apiserver: create,
    update with a stale version (409), watch; the official client is never built."""
    cert, key = _client_cert(real_api, tmp_path)
    conf = _kubeconfig(tmp_path / "super-admin.conf", {
        "server": real_api.url, "certificate-authority-data": base64.b64encode(real_api.pki.ca_cert.read_bytes())
        .decode()}, {"client-certificate-data": base64.b64encode(cert).decode(),
                     "client-key-data": base64.b64encode(key).decode()})
    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", "192.0.2.10",
                                         "--k8sConfigPath", str(conf), "--k8sBootstrapConfigPath",
                                         str(tmp_path / "absent.conf")])
    assert command is not None
    api = kubeclient.build_api_client(build_config(given, command, hostname=lambda: "n1"))
    assert isinstance(api, kubeclient.KubeApi) and api.rest is not None
    lock = LeaseLock(api, "kube-system", "rest-client-lease")
    seen: list[str] = []
    stop = threading.Event()

    def changed(found: tuple[LeaderRecord, str] | None) -> None:
        if found is not None:
            seen.append(found[0].holder)

    watcher = threading.Thread(target=lock.watch, args=(changed, stop), daemon=True)
    try:
        elector = Elector(lock, "n1", Timers(2, 1.5, 0.4))
        elector.start()
        watcher.start()
        wait_for(lambda: elector.is_leader, timeout=15)
        wait_for(lambda: seen.count("n1") >= 3, timeout=15)  # the renewals, seen through the watch
        elector.stop()
        found = lock.get(5)
        assert found is not None and found[0].holder == ""  # released
        with pytest.raises(LockConflict):
            lock.update(found[0], "1", 5)
    finally:
        stop.set()
    assert api._official is None  # the Leases never needed the official client


def test_what_needs_the_official_client_gets_it_from_the_same_kubeconfig(tmp_path: Path) -> None:
    """Services, Nodes and Events use `client.CoreV1Api(api)` on the `KubeApi` as on an `ApiClient`: it is built on
    first use, from the kubeconfig the Leases use (the generated classes reach its private methods too)."""
    from kubernetes import client

    from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig

    with EmulatorThread(KubeApiEmulator({"tok-admin": "admin"}), listen=[("127.0.0.1", 0)]) as api_server:
        conf = write_kubeconfig(tmp_path / "admin.conf", api_server.urls[0], "tok-admin")
        command, given = parse_command_line(["manager", "--services", "--arp", "--k8sConfigPath", str(conf),
                                             "--k8sBootstrapConfigPath", str(tmp_path / "absent.conf")])
        assert command is not None
        api = kubeclient.build_api_client(build_config(given, command, hostname=lambda: "n1"))
        assert api._official is None
        names = {ns.metadata.name for ns in client.CoreV1Api(api).list_namespace(_request_timeout=5).items
                 if ns.metadata is not None}
        assert "kube-system" in names and api._official is not None
        assert api.configuration.api_key["BearerToken"].endswith("tok-admin")


def test_in_cluster_token_is_read_again_after_a_minute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kubelet rotates a ServiceAccount's projected token: the client reads the file again every minute."""
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes(b"")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    endpoint = kuberest.in_cluster(tmp_path)
    assert endpoint.server == "https://[fd00::1]:6443" and endpoint.token_file == tmp_path / "token"
    now = [100.0]
    rest = kuberest.RestClient(kuberest.Endpoint("http://127.0.0.1:9", token_file=endpoint.token_file),
                               clock=lambda: now[0])
    assert rest._bearer() == "first"
    (tmp_path / "token").write_text("second\n")
    now[0] += kuberest.TOKEN_REREAD_SECONDS - 1
    assert rest._bearer() == "first"
    now[0] += 1
    assert rest._bearer() == "second"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(kuberest.KubeConfigError, match="not running in a pod"):
        kuberest.in_cluster(tmp_path)
