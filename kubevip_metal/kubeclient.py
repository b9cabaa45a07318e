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

What is built is a `KubeApi`: the small REST client of `generic.kuberest` (Leases and `/readyz`: all the
control plane needs, so an ARP or Elastic IP control plane never imports the official client and its 36 MB), and
the official `kubernetes` client, built from the same kubeconfig on first use by whatever needs it (Services,
EndpointSlices, Nodes, Events): any attribute of a `KubeApi` other than its own goes to the official client, so
`client.CoreV1Api(api)` works on it as on an `ApiClient`. A kubeconfig the small client does not understand (an
`exec` plugin, say) makes the official client serve the Leases too.

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
from urllib.parse import quote, urlsplit, urlunsplit

from generic import kuberest
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


class KubeApi:
    """The process's Kubernetes API client: `rest` (None when the kubeconfig needs the official client) and
    `official`, made on first use; every other attribute is the official client's."""

    def __init__(self, rest: kuberest.RestClient | None, official: Callable[[], Any], source: str) -> None:
        self.rest, self.source = rest, source
        self._make_official = official
        self._official: Any = None
        self._official_lock = threading.Lock()

    @property
    def official(self) -> Any:
        with self._official_lock:
            if self._official is None:
                self._official = self._make_official()
            return self._official

    _OWN = frozenset({"rest", "source", "_make_official", "_official", "_official_lock"})

    def __getattr__(self, name: str) -> Any:
        """Called only for what a `KubeApi` lacks: the official client's attributes, private ones too (the
        generated API classes call `_call_with_legacy_options`). Never our own (a half-built or copied object
        would recurse) nor the protocol probes of copy and pickle."""
        if name in self._OWN or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self.official, name)

    def __repr__(self) -> str:
        return f"KubeApi({self.source})"


def _rest(endpoint: kuberest.Endpoint, config: Config, source: str) -> kuberest.RestClient:
    if _points_at_vip(endpoint.server, config):
        parts = urlsplit(endpoint.server)
        endpoint = endpoint.with_server(urlunsplit((parts.scheme, f"kubernetes:{parts.port or config.vip.port}",
                                                    "", "", "")))
        log.info("kubeclient.vip_bypassed", kubeconfig=source, server=endpoint.server)
    if config.kubernetes.api_url:
        endpoint = endpoint.with_server(config.kubernetes.api_url.rstrip("/"))
    try:
        rest = kuberest.RestClient(endpoint)
    except kuberest.KubeConfigError as exc:
        raise KubeClientError(f"cannot use {source}: {exc}") from None
    log.info("kubeclient.configured", source=source, server=endpoint.server)
    return rest


def _from_kubeconfig(path: Path, config: Config) -> KubeApi:
    try:
        rest: kuberest.RestClient | None = _rest(kuberest.load_kubeconfig(path), config, str(path))
    except kuberest.Unsupported as exc:
        log.info("kubeclient.official", kubeconfig=str(path), reason=str(exc))
        rest = None
    except kuberest.KubeConfigError as exc:
        raise KubeClientError(f"cannot load kubeconfig {path}: {exc}") from None
    api = KubeApi(rest, lambda: _official_from_kubeconfig(path, config), str(path))
    if rest is None:
        api.official  # noqa: B018 - built now: its errors belong to the start, and it serves the Leases
    return api


def _official_from_kubeconfig(path: Path, config: Config) -> Any:
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
    return _finish(configuration, config)


def _finish(configuration: Any, config: Config) -> Any:
    from kubernetes import client

    if config.kubernetes.api_url:
        configuration.host = config.kubernetes.api_url
    configuration.retries = False
    return client.ApiClient(configuration)


def _official_in_cluster(config: Config) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config_module

    kube_config: Any = kube_config_module
    configuration = client.Configuration()
    try:
        kube_config.load_incluster_config(client_configuration=configuration)
    except Exception as exc:  # the token or CA file not mounted yet
        raise KubeClientError(f"cannot load the in-cluster configuration: {exc}") from None
    return _finish(configuration, config)


def _official_plain(config: Config) -> Any:
    from kubernetes import client

    return _finish(client.Configuration(), config)


def build_api_client(config: Config) -> Any:
    """A `KubeApi`, or an `ApiClientSelector` of two when a bootstrap kubeconfig is present."""
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
        try:
            endpoint = kuberest.in_cluster()
        except kuberest.KubeConfigError as exc:  # the token or CA file not mounted yet
            raise KubeClientError(f"cannot load the in-cluster configuration: {exc}") from None
        return KubeApi(_rest(endpoint, config, "in-cluster"), lambda: _official_in_cluster(config), "in-cluster")
    if config.kubernetes.api_url:
        return KubeApi(_rest(kuberest.Endpoint(config.kubernetes.api_url), config, "--kubernetesAddr"),
                       lambda: _official_plain(config), "--kubernetesAddr")
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

    _OWN = frozenset({"_primary", "_make_bootstrap", "_bootstrap", "_namespace", "_clock", "_lock", "_primary_ok",
                      "_next_check"})

    def __getattr__(self, name: str) -> Any:
        """The selector stands in for a client wherever one is expected (`client.CoreV1Api(selector)` for the
        Services, the node annotations, Events): every attribute it lacks is the current client's, so each call
        goes to admin.conf or super-admin.conf as chosen at that moment. Without this, `--services` on kubeadm's
        first node (both files present) handed the generated API classes an object with none of their methods."""
        if name in self._OWN or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self(), name)

    def _allowed(self, api_client: Any) -> bool | None:
        """True if the API answers, False on 403, None when it cannot be told (unreachable, 5xx)."""
        from http.client import HTTPException

        path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(self._namespace)}/leases"
        try:
            response = kuberest.transport_of(api_client).request("GET", path, query={"limit": 1}, timeout=2)
        except (OSError, HTTPException):
            return None
        if response.status == 403:
            return False
        return True if response.ok or response.status in (404, 409, 422) else None
