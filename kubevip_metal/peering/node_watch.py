"""This node's annotations, read by name and then watched: the CCM writes its BGP annotations late (when the first
LoadBalancer Service is reconciled) and may rewrite them (a rotated password, a peer added), so a one-shot read at
start (kube-vip's) would need a pod restart for every change.

The Node is read by its name (`metadata.name`, `--nodeName` / `vip_nodename`), never found by a label: kube-vip
looks for `kubernetes.io/hostname=<name>`, which panics when the label differs from the node name.

A list, then a watch (not a poll) with a field selector on the name (generic.informer): a broken
watch resumes from the last version seen, with jittered backoff, so a change made while it was down is seen when
it comes back, and a 410 Gone lists the Node again instead of stranding the watch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from generic.informer import Event, Informer, Obj

READ_TIMEOUT = 10.0  # seconds for one GET of the Node

Annotations = Mapping[str, str]


def read_annotations(api: Any, node: str) -> Annotations:
    """The Node's annotations now. ApiException (404: no such node yet) and connection errors go to the caller."""
    from kubernetes import client

    found = client.CoreV1Api(api).read_node(node, _request_timeout=READ_TIMEOUT)
    metadata = found.metadata
    return dict((metadata.annotations if metadata is not None else None) or {})


class NodeWatch:
    """Calls `on_change(annotations)` from the informer's thread with the Node's annotations each time the server
    reports the Node (first its current state, then every change); `on_change(None)` when the Node is gone.

    The list and watch (resumed after breaks, listed again after a 410) are the Services' informer's, narrowed to
    this one Node by a field selector on its name."""

    def __init__(self, api: Any, node: str, on_change: Callable[[Annotations | None], None]) -> None:
        from kubernetes import client

        self.node, self._on_change = node, on_change
        core = client.CoreV1Api(api)
        self._informer = Informer(f"node-{node}",
                                  functools.partial(core.list_node, field_selector=f"metadata.name={node}"),
                                  self._listed, self._events)

    def start(self) -> NodeWatch:
        self._informer.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        self._informer.close(timeout)

    def _listed(self, items: list[Obj]) -> None:
        self._on_change(_annotations(items[0]) if items else None)

    def _events(self, events: list[Event]) -> None:
        for kind, obj in events:
            self._on_change(None if kind == "DELETED" else _annotations(obj))


def _annotations(obj: Obj) -> Annotations:
    return dict((obj.get("metadata") or {}).get("annotations") or {})
