"""Which kubeconfig the manager uses: kubeadm >= 1.29's super-admin.conf only while admin.conf is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generic.election import Callbacks, Elector, Timers
from generic.election.lease_lock import LeaseLock
from kubevip_metal import kubeclient
from kubevip_metal.cli import parse_command_line
from kubevip_metal.config import Config, build_config
from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig
from kubevip_testbed.waiting import wait_for


@pytest.fixture
def api() -> Iterator[EmulatorThread]:
    emulator = KubeApiEmulator({"tok-admin": "admin", "tok-super": "super-admin"})
    with EmulatorThread(emulator, listen=[("127.0.0.1", 0)]) as thread:
        yield thread


def _config(admin: Path, bootstrap: Path, extra: list[str] | None = None) -> Config:
    command, given = parse_command_line(["manager", "--controlplane", "--arp", "--address", "192.0.2.10",
                                         "--k8sConfigPath", str(admin), "--k8sBootstrapConfigPath", str(bootstrap),
                                         *(extra or [])])
    assert command is not None
    return build_config(given, command, hostname=lambda: "n1")


def _identity_of(selector: Any) -> str:
    """The token the Leases go out with (the small REST client's), checked against the official client's."""
    client = selector() if isinstance(selector, kubeclient.ApiClientSelector) else selector
    token = client.rest.endpoint.token.reveal()
    assert token in str(client.official.configuration.api_key.get("BearerToken", ""))
    return str(token)


def test_super_admin_is_used_only_while_admin_is_refused(api: EmulatorThread, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeclient, "RECHECK_SECONDS", 0.2)
    admin = write_kubeconfig(tmp_path / "admin.conf", api.urls[0], "tok-admin")
    bootstrap = write_kubeconfig(tmp_path / "super-admin.conf", api.urls[0], "tok-super")
    api.emulator.forbid("admin")  # kubeadm init has not bound admin.conf's group yet
    selector = kubeclient.build_api_client(_config(admin, bootstrap))
    assert isinstance(selector, kubeclient.ApiClientSelector)
    assert "tok-super" in _identity_of(selector)

    leading = []
    elector = Elector(LeaseLock(selector, "kube-system", "plndr-cp-lock"), "n1", Timers(2, 1.5, 0.4),
                      Callbacks(on_started_leading=lambda: leading.append(time.monotonic())))
    elector.start()
    try:
        deadline = time.monotonic() + 10
        while not leading and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leading, "the elector could not lead through the bootstrap kubeconfig"
        api.emulator.allow("admin")  # kubeadm init finished
        time.sleep(0.6)
        before = api.emulator.request_counts().get("admin", 0)
        # renewals now go through admin.conf (a fixed 1 s window missed them when the renew thread ran late)
        wait_for(lambda: api.emulator.request_counts().get("admin", 0) > before, timeout=10)
        assert "tok-admin" in _identity_of(selector)
        assert elector.is_leader
    finally:
        elector.stop()


def test_the_selector_serves_the_generated_api_classes(api: EmulatorThread, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Services, node annotations and Events use `client.CoreV1Api(daemon.api)`: on kubeadm's first node the
    daemon's client is the selector, so it must answer as a client, through whichever kubeconfig it chose."""
    from kubernetes import client

    monkeypatch.setattr(kubeclient, "RECHECK_SECONDS", 0.2)
    admin = write_kubeconfig(tmp_path / "admin.conf", api.urls[0], "tok-admin")
    bootstrap = write_kubeconfig(tmp_path / "super-admin.conf", api.urls[0], "tok-super")
    api.emulator.forbid("admin")
    selector = kubeclient.build_api_client(_config(admin, bootstrap))
    assert isinstance(selector, kubeclient.ApiClientSelector)
    core: Any = client.CoreV1Api(selector)
    before = api.emulator.request_counts().get("super-admin", 0)
    assert core.list_service_for_all_namespaces().items == []
    assert api.emulator.request_counts().get("super-admin", 0) > before  # through super-admin.conf while refused
    api.emulator.allow("admin")
    time.sleep(0.3)
    selector()  # the next choice sees admin.conf allowed
    before = api.emulator.request_counts().get("admin", 0)
    assert core.list_service_for_all_namespaces().items == []
    assert api.emulator.request_counts().get("admin", 0) > before


def test_kubeadm_bootstrap_on_a_real_api_server(real_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `kubeadm init` >= 1.29 really does: admin.conf's group has no binding (403 from RBAC) until kubeadm creates
    the `kubeadm:cluster-admins` ClusterRoleBinding; the manager leads through super-admin.conf meanwhile and
    moves to admin.conf once the binding exists."""
    from kubernetes import client

    from kubevip_testbed.peers.apiserver import ADMIN_TOKEN, KUBEADM_ADMIN_TOKEN

    monkeypatch.setattr(kubeclient, "RECHECK_SECONDS", 0.2)
    admin = real_api.write_kubeconfig(tmp_path / "admin.conf", KUBEADM_ADMIN_TOKEN)
    bootstrap = real_api.write_kubeconfig(tmp_path / "super-admin.conf", ADMIN_TOKEN)
    selector = kubeclient.build_api_client(_config(admin, bootstrap, ["--leaseName", "kubeadm-bootstrap-lease"]))
    assert isinstance(selector, kubeclient.ApiClientSelector)
    assert ADMIN_TOKEN in _identity_of(selector)
    leading: list[float] = []
    elector = Elector(LeaseLock(selector, "kube-system", "kubeadm-bootstrap-lease"), "n1", Timers(2, 1.5, 0.4),
                      Callbacks(on_started_leading=lambda: leading.append(time.monotonic())))
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name="kubeadm:cluster-admins"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
        subjects=[client.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="Group",
                                       name="kubeadm:cluster-admins")])
    elector.start()
    with real_api.client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        try:
            deadline = time.monotonic() + 10
            while not leading and time.monotonic() < deadline:
                time.sleep(0.05)
            assert leading, "the elector could not lead through super-admin.conf"
            rbac.create_cluster_role_binding(binding)  # the last step of kubeadm init
            deadline = time.monotonic() + 10
            while KUBEADM_ADMIN_TOKEN not in _identity_of(selector) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert KUBEADM_ADMIN_TOKEN in _identity_of(selector)
            time.sleep(1.0)
            assert elector.is_leader and len(leading) == 1  # renewals go through admin.conf, without a break
        finally:
            elector.stop()
            rbac.delete_cluster_role_binding("kubeadm:cluster-admins")


def test_joining_node_without_super_admin_uses_admin(api: EmulatorThread, tmp_path: Path) -> None:
    admin = write_kubeconfig(tmp_path / "admin.conf", api.urls[0], "tok-admin")
    client = kubeclient.build_api_client(_config(admin, tmp_path / "absent.conf"))
    assert not isinstance(client, kubeclient.ApiClientSelector)
    assert "tok-admin" in _identity_of(client)


def test_kubeconfig_pointing_at_the_vip_is_sent_to_the_local_api_server(tmp_path: Path) -> None:
    admin = write_kubeconfig(tmp_path / "admin.conf", "https://192.0.2.10:6443", "tok-admin")
    client = kubeclient.build_api_client(_config(admin, tmp_path / "absent.conf"))
    assert client.rest.endpoint.server == "https://kubernetes:6443"
    assert client.configuration.host == "https://kubernetes:6443"  # the official client's, built on first use


def test_nothing_to_use_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kubeclient.KubeClientError, match="no kubeconfig"):
        kubeclient.build_api_client(_config(tmp_path / "a.conf", tmp_path / "b.conf"))
