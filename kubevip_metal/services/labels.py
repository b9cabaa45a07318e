"""`--enableNodeLabeling` with `--services`: the Node serving a Service carries
`service-provided.kube-vip.io/<name>.<namespace>=<address(es)>` (kube-vip HEAD's label), removed when it stops
serving it, when the Service goes, and at exit.

**Keys that do not fit.** A label key's name part is at most 63 characters; a Service name and a namespace are up to
63 each, so `<name>.<namespace>` may not fit. Such a Service is skipped for labelling, with one log line naming it
(`nodelabel.service_skipped`), and served as usual; the others go on.

**Values** are `kubevip_metal.node_requests.label_value`'s: IPv4 as is, IPv6 in 32 hex digits, several joined
by `_` (what does not fit in 63 characters is left out).

**Coalesced.** The Services worker hands over each pass's decisions (`served`, which only records them); one writer
thread sends what changed since its last write as **one** JSON merge patch on this Node (a label to set or to
remove, `null`, per changed Service), at most one patch per `interval` (1 s). So 1,000 Services coming up cost one
patch, not 1,000 a second. The first write reads this Node once and also removes the Service labels that a crash of
this node left and that no Service wants any more. Requests have a timeout; transient failures (no connection, 404
while the Node is not registered yet, 409, 429, 5xx) are retried by tenacity with backoff, a refusal (403: the RBAC
lacks `patch` on nodes; 422) is logged once a minute and the changes wait for the next one. Nothing is raised into
the Services worker.

**Exit.** `begin_close()` (first thing in the daemon's stop) starts removing every label this node set, in one
patch; `close(timeout)` waits for it at most `timeout` (best effort, part of SIGTERM's 2 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tenacity

from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.events import ModestLog
from kubevip_metal.node_requests import REQUEST_TIMEOUT, NodeRequests, Refused, Transient, label_value, node_path

log = get_logger("kubevip_metal.services.labels")

PREFIX = "service-provided.kube-vip.io/"
NAME_LIMIT = 63  # a label key's name part
INTERVAL = 1.0  # seconds between two patches of this Node
BACKOFF, BACKOFF_MAX = 0.5, 10.0

ServiceName = tuple[str, str]  # (namespace, name)


def service_label_key(namespace: str, name: str) -> str | None:
    """`service-provided.kube-vip.io/<name>.<namespace>`, or None when the name part would exceed 63 characters."""
    part = f"{name}.{namespace}"
    return PREFIX + part if len(part) <= NAME_LIMIT else None


class ServiceLabels:
    """This Node's `service-provided.kube-vip.io/*` labels, kept equal to the Services it serves, from one thread."""

    def __init__(self, api_client: Callable[[], Any], node: str, *, interval: float = INTERVAL,
                 request_timeout: float = REQUEST_TIMEOUT, backoff: float = BACKOFF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self._requests = NodeRequests(api_client, node, request_timeout)
        self._interval, self._backoff, self._clock = interval, backoff, clock
        self._changed = threading.Condition()
        self._wanted: dict[str, str] = {}  # label key -> value
        self._dirty = False
        self._applied: dict[str, str] | None = None  # what this Node carries (None: not read yet)
        self._skipped: set[ServiceName] = set()
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._last_write = float("-inf")
        self._thread: threading.Thread | None = None
        self._modest = ModestLog(clock, logger=log)
        self.patches = 0  # patches written, for tests and benchmarks

    # -- the Services worker's side (never blocks on the API) -------------------------------------------------

    def served(self, changes: Mapping[ServiceName, Iterable[IPAddress] | None]) -> None:
        """Each changed Service: the addresses this node now serves it with, or None (not served here, or gone).
        Ignored once closing: the shutdown's removal stands."""
        with self._changed:
            if self._closing.is_set():
                return
            for (namespace, name), addresses in changes.items():
                key = service_label_key(namespace, name)
                if key is None:
                    if addresses is not None and (namespace, name) not in self._skipped:
                        self._skipped.add((namespace, name))
                        log.warning("nodelabel.service_skipped", service=f"{namespace}/{name}",
                                    reason=f"the label key's name part {name}.{namespace} is longer than "
                                           f"{NAME_LIMIT} characters")
                    if addresses is None:
                        self._skipped.discard((namespace, name))
                    continue
                value = label_value(addresses) if addresses is not None else ""
                if value:
                    if self._wanted.get(key) != value:
                        self._wanted[key] = value
                        self._dirty = True
                elif self._wanted.pop(key, None) is not None:
                    self._dirty = True
            if self._dirty:
                self._idle.clear()
                self._changed.notify_all()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="service-labels", daemon=True)
            self._thread.start()

    def begin_close(self) -> None:
        """Start removing every label set here (one patch), without waiting: first thing at shutdown, so the removal
        runs while the rest of the daemon stops. Idempotent."""
        with self._changed:
            self._closing.set()
            if self._wanted:
                self._wanted = {}
                self._dirty = True
            if self._dirty or (self._applied and any(self._applied.values())):
                self._dirty = True
                self._idle.clear()
            self._changed.notify_all()

    def close(self, timeout: float = 0.5) -> None:
        """Remove every label set here (one patch) within `timeout`, then stop."""
        self.begin_close()
        done = self._idle.wait(timeout) if self._thread is not None and self._thread.is_alive() else True
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()
        if not done:
            log.warning("nodelabel.service_removal_incomplete", node=self.node, seconds=timeout)

    def idle(self) -> bool:
        return self._idle.is_set()

    # -- the writer -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopped.is_set() and not self._dirty:
                    self._idle.set()
                    self._changed.wait()
                if self._stopped.is_set():
                    return
            pause = self._last_write + self._interval - self._clock()
            if pause > 0 and not self._closing.is_set():
                self._closing.wait(pause)  # more changes gather meanwhile; a shutdown does not wait
            with self._changed:
                self._dirty = False
                wanted = dict(self._wanted)
            self._write(wanted)

    def _write(self, wanted: dict[str, str]) -> None:
        try:
            self._retrying(self._patch, wanted)
        except Refused as exc:
            self._modest.warning("nodelabel.refused", node=self.node, labels=PREFIX + "*", error=str(exc))
            self._redo()
        except Exception as exc:  # never into the Services worker
            self._modest.warning("nodelabel.write_failed", node=self.node, labels=PREFIX + "*",
                                 error=f"{type(exc).__name__}: {exc}")
            self._redo()

    def _redo(self) -> None:
        """A failed write: try again at the next change (or the shutdown), never in a loop of its own."""
        self._applied = None  # read the Node again first

    def _retrying(self, fn: Callable[..., None], *args: Any) -> None:
        def logged(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self._modest.warning("nodelabel.retrying", node=self.node, labels=PREFIX + "*",
                                 attempt=state.attempt_number, error=str(error))

        tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Transient),
            wait=tenacity.wait_exponential(multiplier=self._backoff, max=BACKOFF_MAX),
            stop=lambda _state: self._stopped.is_set() or (self._closing.is_set() and _state.attempt_number >= 3),
            before_sleep=logged,
            sleep=self._pause,
            reraise=True,
        )(fn, *args)

    def _pause(self, seconds: float) -> None:
        (self._stopped if self._closing.is_set() else self._closing).wait(seconds)

    def _patch(self, wanted: dict[str, str]) -> None:
        if self._applied is None:  # what a crash of ours left, and what the last failed write may have written
            node = self._requests.send("GET", node_path(self.node))
            labels = (node.get("metadata") or {}).get("labels") or {}
            self._applied = {k: str(v) for k, v in labels.items() if k.startswith(PREFIX)}
        changes: dict[str, str | None] = {k: v for k, v in wanted.items() if self._applied.get(k) != v}
        changes.update({k: None for k in self._applied if k not in wanted})
        if not changes:
            return
        self._requests.patch_labels(self.node, changes)
        self._applied = dict(wanted)
        self._last_write = self._clock()
        self.patches += 1
        log.info("nodelabel.services_patched", node=self.node, set=sum(v is not None for v in changes.values()),
                 removed=sum(v is None for v in changes.values()), carried=len(wanted))
