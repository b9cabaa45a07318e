"""Node objects for tests: the Nodes a kubelet would register, with the annotations a CCM would write.

There is no kubelet or CCM in the rig, so a test plays both: it creates the Node by name and writes (or removes)
its annotations through the API, as the Equinix Metal CCM does with a JSON merge patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TIMEOUT = 10


def set_node_annotations(api: Any, node: str, annotations: Mapping[str, str | None]) -> None:
    """Create Node `node` if it does not exist, then merge `annotations` into it (None removes a key)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    try:
        core.read_node(node, _request_timeout=TIMEOUT)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node)), _request_timeout=TIMEOUT)
    core.patch_node(node, {"metadata": {"annotations": dict(annotations)}}, _request_timeout=TIMEOUT)


def replace_node_annotations(api: Any, node: str, prefix: str, annotations: Mapping[str, str]) -> None:
    """Make the annotations under `prefix/` exactly `annotations` (others under the prefix removed)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    current: dict[str, str] = {}
    try:
        found = core.read_node(node, _request_timeout=TIMEOUT)
        current = dict((found.metadata.annotations if found.metadata else None) or {})
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    stale: dict[str, str | None] = {key: None for key in current
                                    if key.startswith(prefix + "/") and key not in annotations}
    set_node_annotations(api, node, {**stale, **annotations})


def delete_node(api: Any, node: str) -> None:
    from kubernetes import client

    try:
        client.CoreV1Api(api).delete_node(node, _request_timeout=TIMEOUT)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
