"""`--enableNodeLabeling`: the Node of the control-plane leader carries `kube-vip.io/has-ip=<VIP>`, and only it.

kube-vip sets the label when a node starts leading and removes it when it stops or exits; a node that crashed keeps
it forever, so a selector on it (a NetworkPolicy, a monitoring rule, `kubectl get nodes -l`) then matches two nodes.
Here the new leader also removes `kube-vip.io/has-ip=<our VIP>` from every other Node (a list with that label
selector, then a merge patch each), so after any failover exactly one Node carries it.

**The value** is `kubevip_metal.node_requests.label_value`'s: an IPv4 address as is (`192.0.2.10`), an IPv6 address
in 32 hex digits, two addresses (dual stack) joined by `_`.

**Never blocking the elector.** The control plane's claim changes (`claimed`) only record the wish; one writer
thread makes it true: a JSON merge patch `{"metadata":{"labels":{"kube-vip.io/has-ip": value or null}}}` on this
Node, then, when leading, the clean-up of the other Nodes (the requests and the reading of their answers are
`kubevip_metal.node_requests`'s). Each request has a timeout; a transient failure (no
connection, 404 while the Node is not registered yet, 409, 429, 5xx) is retried by tenacity with exponential
backoff for as long as that wish stands; a newer wish cuts the retries short, a refusal (403: the RBAC lacks
`patch` on nodes; 422) is logged and dropped. Failures are logged as one line each, at most once a minute per kind,
and never raised into the daemon.

**SIGTERM.** The step-down flips the claim first, so the removal is already being written while the daemon stops
the rest; `close(timeout)` waits for it at most `timeout` (the daemon gives it part of its 2 s), and a removal
still failing then is abandoned (the next leader's clean-up removes the label).

BGP without leader election has no leader: every node whose API server is healthy holds the VIP, so each labels
its own Node while it serves, and no node removes another's (they are all legitimate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import tenacity

from generic.addresses import Vip
from generic.logfmt import get_logger
from kubevip_metal.events import ModestLog
from kubevip_metal.node_requests import REQUEST_TIMEOUT, Gone, NodeRequests, Refused, Transient, label_value

log = get_logger("kubevip_metal.nodelabels")

HAS_IP = "kube-vip.io/has-ip"
BACKOFF, BACKOFF_MAX = 0.5, 10.0

_UNSET = object()  # nothing wished yet: a follower that never led writes nothing
_UNKNOWN = object()  # a write failed: what the Node carries is not known


class NodeLabels:
    """Keeps `kube-vip.io/has-ip` on this Node exactly while the control plane's claim is active, from one thread.

    `api_client()` gives the daemon's client now (None: not made yet); `clean_others`: also remove the label with our
    value from every other Node when we start holding it (an elected leader; not BGP without election)."""

    def __init__(self, api_client: Callable[[], Any], node: str, *, clean_others: bool = True,
                 request_timeout: float = REQUEST_TIMEOUT, backoff: float = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node, self.clean_others = node, clean_others
        self._requests = NodeRequests(api_client, node, request_timeout)
        self._backoff = backoff
        self._changed = threading.Condition()
        self._wanted: Any = _UNSET  # str: the value to carry; None: carry no label
        self._serial = 0  # bumped by every wish: retries of an older one stop
        self._done = 0  # the last wish handled (written, or given up)
        self._applied: Any = _UNSET  # what this Node carries as far as we know (written by the writer only)
        self._closing = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._modest = ModestLog(clock, logger=log)

    # -- the callers' side (the control plane's claim; never blocks) ------------------------------------------

    def claimed(self, active: bool, vips: Iterable[Vip]) -> None:
        """The control plane now holds (`active`) `vips`, or holds nothing."""
        value = label_value(v.address for v in vips) if active else ""
        with self._changed:
            wanted = value or None
            if wanted == self._wanted or (wanted is None and self._wanted is _UNSET):
                return
            self._wanted = wanted
            self._serial += 1
            self._idle.clear()
            self._changed.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="node-labels", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 0.5) -> None:
        """Wait at most `timeout` for the last wish (at shutdown: the removal) to be written, then stop."""
        done = self._idle.wait(timeout)
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
        if not done:
            log.warning("nodelabel.removal_incomplete", node=self.node, label=HAS_IP, seconds=timeout)

    def idle(self) -> bool:
        """The last wish is written (or given up); for tests."""
        return self._idle.is_set()

    @property
    def writes(self) -> int:
        """Requests that succeeded (patches and lists), for tests and metrics."""
        return self._requests.succeeded

    # -- the writer -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closing.is_set() and self._serial == self._done:
                    self._idle.set()
                    self._changed.wait()
                if self._closing.is_set():
                    return
                wanted, serial = self._wanted, self._serial
            self._apply(wanted, serial)

    def _superseded(self, serial: int) -> bool:
        return self._closing.is_set() or self._serial != serial

    def _apply(self, wanted: str | None, serial: int) -> None:
        try:
            if wanted != self._applied:
                self._retrying(serial, self._patch, self.node, wanted)
            self._applied = wanted
            log.info("nodelabel.set" if wanted else "nodelabel.removed", node=self.node, label=HAS_IP,
                     value=wanted or "")
            if wanted is not None and self.clean_others:
                self._retrying(serial, self._clean_others, wanted, serial)
        except _Superseded:
            return
        except Refused as exc:  # nothing more to try for this wish; the next one is written again
            self._applied = _UNKNOWN
            self._modest.warning("nodelabel.refused", node=self.node, label=HAS_IP, error=str(exc))
        except Exception as exc:  # never into the daemon
            self._applied = _UNKNOWN
            self._modest.warning("nodelabel.write_failed", node=self.node, label=HAS_IP,
                                 error=f"{type(exc).__name__}: {exc}")
        with self._changed:
            self._done = serial

    def _retrying(self, serial: int, fn: Callable[..., None], *args: Any) -> None:
        def superseded(_state: tenacity.RetryCallState) -> bool:
            return self._superseded(serial)

        def logged(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self._modest.warning("nodelabel.retrying", node=self.node, label=HAS_IP, attempt=state.attempt_number,
                                 error=str(error))

        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(Transient),
                wait=tenacity.wait_exponential(multiplier=self._backoff, max=BACKOFF_MAX),
                stop=superseded,
                before_sleep=logged,
                sleep=self._pause,
                reraise=True,
            )(fn, *args)
        except Transient:
            raise _Superseded() from None
        if self._superseded(serial):
            raise _Superseded()

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)  # a backoff that SIGTERM cuts short

    def _patch(self, node: str, value: str | None) -> None:
        self._requests.patch_labels(node, {HAS_IP: value})

    def _clean_others(self, value: str, serial: int) -> None:
        """Remove `HAS_IP=value` from every other Node (what a crashed leader left)."""
        listed = self._requests.send("GET", "/api/v1/nodes", query={"labelSelector": f"{HAS_IP}={value}"})
        for item in listed.get("items") or []:
            name = str((item.get("metadata") or {}).get("name") or "")
            if not name or name == self.node:
                continue
            if self._superseded(serial):
                raise _Superseded()
            try:
                self._patch(name, None)
            except Gone:
                continue
            log.info("nodelabel.stale_removed", node=name, label=HAS_IP, value=value, by=self.node)


class _Superseded(Exception):
    """A newer wish (or the shutdown) replaced the one being written."""

