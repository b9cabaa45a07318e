"""Build the Kubernetes API client the daemon uses, the way a static pod or a DaemonSet needs it.

Order: the kubeconfig at `--k8sConfigPath` (static pods; kubeadm's admin.conf), else the in-cluster
ServiceAccount (DaemonSets). A kubeconfig whose server is the VIP we provide is pointed at
`kubernetes:<port>` instead, which the manifest's hostAliases resolve to 127.0.0.1: the pod talks to its
own node's API server and never needs the VIP to elect the VIP's owner. `--kubernetesAddr` overrides all.

kubeadm >= 1.29 (kube-vip #684): during `kubeadm init`, admin.conf is refused (403) until kubeadm binds its
group, and kubeadm itself waits for the VIP. `ApiClientSelector` then uses `--k8sBootstrapConfigPath`
(super-admin.conf) while, and only while, admin.conf is refused and super-admin.conf exists, and re-checks
admin.conf every few seconds so it moves back as soon as kubeadm is done. Joining nodes, which have no
super-admin.conf, just use admin.conf: one manifest serves every node, with no edit after `kubeadm init`.

urllib3's own retries are off: the callers retry on their own schedule (the elector's deadline must not be
stretched by hidden retries), and every request carries an explicit timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from generic.logfmt import get_logger
from kubevip_metal.config import Config
from kubevip_metal.errors import NotReady

log = get_logger("kubevip_metal.kubeclient")

RECHECK_SECONDS = 5.0


class KubeClientError(NotReady):
    """No usable way to reach the API server yet; the message says what was tried."""


def _points_at_vip(server: str, config: Config) -> bool:
    host = urlsplit(server).hostname or ""
    targets = {str(address) for address in config.vip.addresses}
    if config.vip.dns_name:
        targets.add(config.vip.dns_name)
    return config.control_plane and host in targets


def _from_kubeconfig(path: Path, config: Config) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config_module

    kube_config: Any = kube_config_module  # untyped in the client
    configuration = client.Configuration()
    try:
        kube_config.load_kube_config(config_file=str(path), client_configuration=configuration)
    except Exception as exc:
        raise KubeClientError(f"cannot load kubeconfig {path}: {exc}") from None
    if _points_at_vip(configuration.host, config):
        parts = urlsplit(configuration.host)
        configuration.host = urlunsplit((parts.scheme, f"kubernetes:{parts.port or config.vip.port}", "", "", ""))
        log.info("kubeclient.vip_bypassed", kubeconfig=str(path), server=configuration.host)
    return _finish(configuration, config, str(path))


def _finish(configuration: Any, config: Config, source: str) -> Any:
    from kubernetes import client

    if config.kubernetes.api_url:
        configuration.host = config.kubernetes.api_url
    configuration.retries = False
    log.info("kubeclient.configured", source=source, server=configuration.host)
    return client.ApiClient(configuration)


def build_api_client(config: Config) -> Any:
    """A `kubernetes.client.ApiClient`, or an `ApiClientSelector` when a bootstrap kubeconfig is present."""
    primary, bootstrap = config.kubernetes.config_path, config.kubernetes.bootstrap_config_path
    if primary.is_file() and bootstrap.is_file() and bootstrap != primary:
        return ApiClientSelector(_from_kubeconfig(primary, config), lambda: _from_kubeconfig(bootstrap, config),
                                 config.election.namespace)
    if primary.is_file():
        return _from_kubeconfig(primary, config)
    if bootstrap.is_file():
        log.warning("kubeclient.bootstrap_only", kubeconfig=str(bootstrap), missing=str(primary))
        return _from_kubeconfig(bootstrap, config)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        from kubernetes import client
        from kubernetes import config as kube_config_module

        kube_config: Any = kube_config_module
        configuration = client.Configuration()
        try:
            kube_config.load_incluster_config(client_configuration=configuration)
        except Exception as exc:  # the token or CA file not mounted yet
            raise KubeClientError(f"cannot load the in-cluster configuration: {exc}") from None
        return _finish(configuration, config, "in-cluster")
    if config.kubernetes.api_url:
        from kubernetes import client

        return _finish(client.Configuration(), config, "--kubernetesAddr")
    raise KubeClientError(f"no kubeconfig at {primary} or {bootstrap}, and not running in a pod "
                          "(no KUBERNETES_SERVICE_HOST)")


class ApiClientSelector:
    """Calling it gives the client to use now: admin.conf, or super-admin.conf while admin.conf is refused."""

    def __init__(self, primary: Any, bootstrap: Callable[[], Any], namespace: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._primary, self._make_bootstrap = primary, bootstrap
        self._bootstrap: Any = None
        self._namespace = namespace
        self._clock = clock
        self._lock = threading.Lock()
        self._primary_ok = False
        self._next_check = 0.0

    def __call__(self) -> Any:
        with self._lock:
            if self._primary_ok:
                return self._primary
            if self._clock() >= self._next_check:
                self._next_check = self._clock() + RECHECK_SECONDS
                allowed = self._allowed(self._primary)
                if allowed:
                    self._primary_ok = True
                    if self._bootstrap is not None:
                        log.info("kubeclient.bootstrap_done", using="k8sConfigPath")
                    return self._primary
                if allowed is False and self._bootstrap is None:
                    log.warning("kubeclient.bootstrap", reason="k8sConfigPath is refused (403); using the "
                                "bootstrap kubeconfig until it is not")
                    self._bootstrap = self._make_bootstrap()
            return self._bootstrap if self._bootstrap is not None else self._primary

    def _allowed(self, api_client: Any) -> bool | None:
        """True if the API answers, False on 403, None when it cannot be told (unreachable, 5xx)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            client.CoordinationV1Api(api_client).list_namespaced_lease(self._namespace, limit=1,
                                                                       _request_timeout=2, _preload_content=False)
        except ApiException as exc:
            if exc.status == 403:
                return False
            return True if exc.status in (404, 409, 422) else None
        except Exception:
            return None
        return True
