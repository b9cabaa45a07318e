"""Build the Kubernetes API client the daemon uses, the way a static pod or a DaemonSet needs it.

Order: the kubeconfig at `--k8sConfigPath` (static pods; kubeadm's admin.conf), else the in-cluster
ServiceAccount (DaemonSets). A kubeconfig whose server is the VIP we provide is pointed at
`kubernetes:<port>` instead, which the manifest's hostAliases resolve to 127.0.0.1: the pod talks to its
own node's API server and never needs the VIP to elect the VIP's owner. `--kubernetesAddr` overrides all.
urllib3's own retries are off: the callers retry on their own schedule (the elector's deadline must not
be stretched by hidden retries), and every request carries an explicit timeout.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from generic.logfmt import get_logger
from kubevip_metal.config import Config

log = get_logger("kubevip_metal.kubeclient")


class KubeClientError(Exception):
    """No usable way to reach the API server; the message says what was tried."""


def _points_at_vip(server: str, config: Config) -> bool:
    host = urlsplit(server).hostname or ""
    targets = {str(address) for address in config.vip.addresses}
    if config.vip.dns_name:
        targets.add(config.vip.dns_name)
    return config.control_plane and host in targets


def build_api_client(config: Config) -> Any:
    """A `kubernetes.client.ApiClient` for this node's identity, with retries disabled."""
    from kubernetes import client
    from kubernetes import config as kube_config_module

    kube_config: Any = kube_config_module  # untyped in the client

    configuration = client.Configuration()
    path = config.kubernetes.config_path
    source = ""
    if path.is_file():
        try:
            kube_config.load_kube_config(config_file=str(path), client_configuration=configuration)
        except Exception as exc:
            raise KubeClientError(f"cannot load kubeconfig {path}: {exc}") from None
        source = str(path)
        if _points_at_vip(configuration.host, config):
            parts = urlsplit(configuration.host)
            configuration.host = urlunsplit((parts.scheme, f"kubernetes:{parts.port or config.vip.port}", "", "", ""))
            log.info("kubeclient.vip_bypassed", kubeconfig=str(path), server=configuration.host)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
        source = "in-cluster"
    elif config.kubernetes.api_url is None:
        raise KubeClientError(f"no kubeconfig at {path} and not running in a pod (no KUBERNETES_SERVICE_HOST)")
    if config.kubernetes.api_url:
        configuration.host = config.kubernetes.api_url
        source = source or "--kubernetesAddr"
    configuration.retries = False
    log.info("kubeclient.configured", source=source, server=configuration.host)
    return client.ApiClient(configuration)
