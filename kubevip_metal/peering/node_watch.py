"""This node's annotations, read by name and then watched: the CCM writes its BGP annotations late (when the first
LoadBalancer Service is reconciled) and may rewrite them (a rotated password, a peer added), so a one-shot read at
start (kube-vip's) would need a pod restart for every change.

The Node is read by its name (`metadata.name`, `--nodeName` / `vip_nodename`), never found by a label: kube-vip
looks for `kubernetes.io/hostname=<name>`, which panics when the label differs from the node name.

A watch (not a poll) with a field selector on the name. Each watch starts without a resourceVersion, so the
server first sends the Node as it is now (a synthetic ADDED event), then its changes; a broken or expired watch
is simply started again, with jittered backoff, so a change made while it was down is seen when it comes back
and a 410 Gone can never strand it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import tenacity

from generic.logfmt import get_logger

log = get_logger("kubevip_metal.peering.node")

READ_TIMEOUT = 10.0  # seconds for one GET of the Node
WATCH_SECONDS = 300  # server-side timeout of one watch; the loop starts the next one
MIN_GAP = 0.2  # seconds between two watches that ended normally

Annotations = Mapping[str, str]


def read_annotations(api: Any, node: str) -> Annotations:
    """The Node's annotations now. ApiException (404: no such node yet) and connection errors go to the caller."""
    from kubernetes import client

    found = client.CoreV1Api(api).read_node(node, _request_timeout=READ_TIMEOUT)
    metadata = found.metadata
    return dict((metadata.annotations if metadata is not None else None) or {})


class NodeWatch:
    """Calls `on_change(annotations)` from its own thread with the Node's annotations each time the server reports
    the Node (first its current state, then every change); `on_change(None)` when the Node was deleted."""

    def __init__(self, api: Any, node: str, on_change: Callable[[Annotations | None], None]) -> None:
        self._api, self.node, self._on_change = api, node, on_change
        self._stop = threading.Event()
        self._watcher: Any = None
        self._thread = threading.Thread(target=self._run, name=f"node-watch-{node}", daemon=True)

    def start(self) -> NodeWatch:
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=10.0, jitter=0.2),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._pause,
            retry=tenacity.retry_if_exception_type(Exception),
            reraise=False,
            before_sleep=lambda state: log.warning("node.watch_broken", node=self.node,
                                                   attempt=state.attempt_number,
                                                   error=_describe(state.outcome.exception() if state.outcome
                                                                   else None)),
        )
        while not self._stop.is_set():
            try:
                retrying(self._stream)
            except tenacity.RetryError:
                return
            self._stop.wait(MIN_GAP)  # a server that ends every watch at once must not make this spin

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _stream(self) -> None:
        from kubernetes import client, watch

        watch_class: Any = watch.Watch  # untyped in the client
        self._watcher = watch_class()
        core = client.CoreV1Api(self._api)
        for event in self._watcher.stream(core.list_node, field_selector=f"metadata.name={self.node}",
                                          timeout_seconds=WATCH_SECONDS, _request_timeout=WATCH_SECONDS + 10):
            if self._stop.is_set():
                return
            kind = event.get("type") if isinstance(event, dict) else None
            raw = event.get("raw_object") if isinstance(event, dict) else None
            if kind in ("ADDED", "MODIFIED") and isinstance(raw, dict):
                metadata = raw.get("metadata") or {}
                self._on_change(dict(metadata.get("annotations") or {}))
            elif kind == "DELETED":
                self._on_change(None)
            elif kind == "ERROR":
                raise RuntimeError(f"watch error: {(raw or {}).get('message', raw) if isinstance(raw, dict) else raw}")


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    status = getattr(exc, "status", None)
    return f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"[:200]
