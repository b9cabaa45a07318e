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
from kubevip_metal.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig


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
    client = selector() if isinstance(selector, kubeclient.ApiClientSelector) else selector
    return str(client.configuration.api_key.get("BearerToken", ""))


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
        time.sleep(1.0)
        assert api.emulator.request_counts().get("admin", 0) > before  # renewals now go through admin.conf
        assert "tok-admin" in _identity_of(selector)
        assert elector.is_leader
    finally:
        elector.stop()


def test_joining_node_without_super_admin_uses_admin(api: EmulatorThread, tmp_path: Path) -> None:
    admin = write_kubeconfig(tmp_path / "admin.conf", api.urls[0], "tok-admin")
    client = kubeclient.build_api_client(_config(admin, tmp_path / "absent.conf"))
    assert not isinstance(client, kubeclient.ApiClientSelector)
    assert "tok-admin" in _identity_of(client)


def test_kubeconfig_pointing_at_the_vip_is_sent_to_the_local_api_server(tmp_path: Path) -> None:
    admin = write_kubeconfig(tmp_path / "admin.conf", "https://192.0.2.10:6443", "tok-admin")
    client = kubeclient.build_api_client(_config(admin, tmp_path / "absent.conf"))
    assert client.configuration.host == "https://kubernetes:6443"


def test_nothing_to_use_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kubeclient.KubeClientError, match="no kubeconfig"):
        kubeclient.build_api_client(_config(tmp_path / "a.conf", tmp_path / "b.conf"))
