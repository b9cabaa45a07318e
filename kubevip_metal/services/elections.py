"""One election per Service (`--servicesElection`), thousands of them, on one thread and one watch.

kube-vip runs a client-go elector per Service: a goroutine, a timer and a GET per candidate per retry period each,
so N Services on M nodes cost about N*M/retry requests a second and hit client-side throttling (its #563, #1425).
Here one informer watches every Lease of the cluster (so followers learn of a renewal or a release the moment it
happens, without polling), and one scheduler thread keeps a heap of what is due: renewing the Leases we hold
(every retry period, like client-go) and trying the free or expired ones we want. At rest the only requests are
the holders' renewals: N/retry a second for the whole cluster, whatever the number of nodes.

The rules are client-go's, per Lease: a Lease is free when it has no holder, or when its record has not changed
for its whole `leaseDurationSeconds` as observed on *our* monotonic clock (never comparing the writer's wall clock
with ours); writes are compare-and-swap on the resourceVersion, so two candidates can never both win; a holder that
could not renew within the renew deadline stops serving before its Lease can expire (no split brain); stepping
down (the Service deleted, or this node no longer eligible: its last local endpoint gone) releases the Lease, so
another eligible node takes over at once instead of after the lease duration.

The Lease of a Service is kube-vip's: `kubevip-<service name>` in the Service's namespace, so a cluster moving
from kube-vip keeps its leases.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from generic.election.elector import Timers
from generic.logfmt import get_logger
from kubevip_metal.services.informer import Event, Informer, Obj
from kubevip_metal.services.model import ServiceKey

log = get_logger("kubevip_metal.services.elections")

REQUEST_TIMEOUT = 5.0


def lease_name(key: ServiceKey) -> str:
    return f"kubevip-{key.name}"


def _micro(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Lease:
    key: ServiceKey
    wanted: bool = False
    holder: str = ""
    duration: float = 0.0
    transitions: int = 0
    version: str | None = None  # None: no Lease object (yet)
    raw_spec: dict[str, Any] = field(default_factory=dict)
    observed_at: float = 0.0  # our clock when the record last changed
    leading: bool = False
    renewed_at: float = 0.0  # our clock when our last successful write was sent
    acquire_time: str | None = None


class ServiceElections:
    """`want(key)` / `unwant(key)` from the controller; `on_change(key, leading)` from the scheduler thread."""

    def __init__(self, api: Any, identity: str, timers: Timers, on_change: Callable[[ServiceKey, bool], None], *,
                 list_leases: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.identity, self.timers, self._on_change = identity, timers, on_change
        self._clock, self._now = clock, now
        self._api = api
        self._leases: dict[ServiceKey, _Lease] = {}
        self._due: list[tuple[float, int, ServiceKey]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self.requests = 0
        from kubernetes import client

        self._coordination: Any = client.CoordinationV1Api(api)
        self._informer = Informer("leases", list_leases or self._coordination.list_lease_for_all_namespaces,
                                  self._reset, self._events)
        self._thread = threading.Thread(target=self._run, name="service-elections", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._informer.start()
        self._thread.start()

    def stop(self) -> None:
        """Step down everywhere (callbacks first), release what we hold, stop."""
        with self._cond:
            self._stopped = True
            held = [lease for lease in self._leases.values() if lease.leading]
            for lease in held:
                lease.leading = False
            self._cond.notify_all()
        for lease in held:
            self._on_change(lease.key, False)
        for lease in held:
            self._release(lease)
        self._informer.close(timeout=0.5)
        self._thread.join(1.0)

    # -- the controller's side ------------------------------------------------------------------------------

    def want(self, key: ServiceKey) -> None:
        with self._cond:
            lease = self._leases.setdefault(key, _Lease(key))
            if not lease.wanted:
                lease.wanted = True
                self._schedule(key, 0.0)

    def unwant(self, key: ServiceKey) -> None:
        """No longer a candidate (Service gone, or no local endpoint): step down and release if we lead."""
        with self._cond:
            lease = self._leases.get(key)
            if lease is None or not lease.wanted:
                return
            lease.wanted = False
            was_leading, lease.leading = lease.leading, False
        if was_leading:
            self._on_change(key, False)
            self._release(lease)

    def leading(self, key: ServiceKey) -> bool:
        with self._cond:
            lease = self._leases.get(key)
            return bool(lease and lease.leading)

    def leading_count(self) -> int:
        with self._cond:
            return sum(1 for lease in self._leases.values() if lease.leading)

    # -- what the Leases say --------------------------------------------------------------------------------

    def _observe(self, obj: Obj, deleted: bool = False) -> None:
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name") or "")
        if not name.startswith("kubevip-"):
            return
        key = ServiceKey(str(metadata.get("namespace") or ""), name.removeprefix("kubevip-"))
        lease = self._leases.get(key)
        if lease is None:
            if deleted:
                return
            lease = self._leases[key] = _Lease(key)
        spec = obj.get("spec") or {}
        record = ("", 0.0, 0) if deleted else (str(spec.get("holderIdentity") or ""),
                                               float(spec.get("leaseDurationSeconds") or 0),
                                               int(spec.get("leaseTransitions") or 0))
        changed = (record != (lease.holder, lease.duration, lease.transitions)
                   or (not deleted and spec.get("renewTime") != lease.raw_spec.get("renewTime")))
        lease.holder, lease.duration, lease.transitions = record
        lease.version = None if deleted else str(metadata.get("resourceVersion") or "")
        lease.raw_spec = {} if deleted else dict(spec)
        if changed:
            lease.observed_at = self._clock()
        if lease.wanted and not lease.leading:
            self._schedule(key, 0.0 if not lease.holder else lease.duration + 0.01)

    def _reset(self, items: list[Obj]) -> None:
        with self._cond:
            seen = set()
            for obj in items:
                self._observe(obj)
                metadata = obj.get("metadata") or {}
                seen.add((metadata.get("namespace"), metadata.get("name")))
            for lease in self._leases.values():
                if (lease.key.namespace, lease_name(lease.key)) not in seen and lease.version is not None:
                    self._observe({"metadata": {"namespace": lease.key.namespace, "name": lease_name(lease.key)}},
                                  deleted=True)
            self._cond.notify_all()

    def _events(self, events: list[Event]) -> None:
        with self._cond:
            for kind, obj in events:
                self._observe(obj, deleted=kind == "DELETED")
            self._cond.notify_all()

    # -- the scheduler --------------------------------------------------------------------------------------

    def _schedule(self, key: ServiceKey, delay: float) -> None:
        heapq.heappush(self._due, (self._clock() + delay, next(self._order), key))
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else max(0.0, self._due[0][0] - self._clock()))
                if self._stopped:
                    return
                _at, _n, key = heapq.heappop(self._due)
                lease = self._leases.get(key)
                if lease is None or not lease.wanted:
                    continue
                action = self._next_action(lease)
            if action is not None:
                action()

    def _next_action(self, lease: _Lease) -> Callable[[], None] | None:
        """Called with the lock held: what this Lease needs now, or None (and when to look again)."""
        now = self._clock()
        if lease.leading:
            if now - lease.renewed_at > self.timers.renew_deadline:  # could not renew in time: stop serving
                lease.leading = False
                log.warning("service.lease_lost", service=str(lease.key), reason="renew deadline passed")
                return lambda: self._on_change(lease.key, False)
            return lambda: self._write(lease, renewing=True)
        expired = not lease.holder or lease.holder == self.identity or \
            now - lease.observed_at >= lease.duration
        if expired:
            return lambda: self._write(lease, renewing=False)
        self._schedule(lease.key, lease.observed_at + lease.duration - now + 0.01)
        return None

    def _body(self, lease: _Lease, renewing: bool) -> dict[str, Any]:
        now = _micro(self._now())
        spec = dict(lease.raw_spec)
        taking = lease.holder != self.identity
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.timers.lease_seconds, renewTime=now,
                    acquireTime=now if taking or not spec.get("acquireTime") else spec["acquireTime"],
                    leaseTransitions=lease.transitions + (1 if taking and lease.holder else 0))
        metadata: dict[str, Any] = {"name": lease_name(lease.key), "namespace": lease.key.namespace}
        if lease.version:
            metadata["resourceVersion"] = lease.version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _write(self, lease: _Lease, renewing: bool) -> None:
        from kubernetes.client.exceptions import ApiException

        with self._cond:
            body = self._body(lease, renewing)
            exists = lease.version is not None
        sent = self._clock()
        self.requests += 1
        try:
            if exists:
                answer = self._coordination.replace_namespaced_lease(
                    lease_name(lease.key), lease.key.namespace, body, _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False)
            else:
                answer = self._coordination.create_namespaced_lease(
                    lease.key.namespace, body, _request_timeout=REQUEST_TIMEOUT, _preload_content=False)
            import json

            written = json.loads(answer.data)
        except ApiException as exc:  # 409: someone else wrote first (the informer brings their record)
            with self._cond:
                if exc.status == 409 and not renewing:
                    self._schedule(lease.key, self.timers.retry_period)
                else:
                    self._schedule(lease.key, self.timers.retry_period)
            if exc.status not in (409, 404):
                log.warning("service.lease_write_failed", service=str(lease.key), status=exc.status)
            return
        except Exception as exc:
            log.warning("service.lease_write_failed", service=str(lease.key), error=type(exc).__name__)
            with self._cond:
                self._schedule(lease.key, self.timers.retry_period)
            return
        became = False
        with self._cond:
            self._observe(written)
            if not lease.wanted:  # let go while we wrote: give it back
                became = False
            elif not lease.leading:
                lease.leading = became = True
            lease.renewed_at = sent
            if lease.leading:
                self._schedule(lease.key, self.timers.retry_period)
        if became:
            log.info("service.lease_acquired", service=str(lease.key), node=self.identity,
                     mono=round(self._clock(), 6))
            self._on_change(lease.key, True)
        elif not lease.wanted:
            self._release(lease)

    def _release(self, lease: _Lease) -> None:
        """Give the Lease back (holder empty, as client-go's ReleaseOnCancel), if it still says we hold it."""
        from kubernetes.client.exceptions import ApiException

        with self._cond:
            if lease.holder != self.identity or lease.version is None:
                return
            body = self._body(lease, renewing=True)
            body["spec"].update(holderIdentity="", leaseDurationSeconds=1)
        self.requests += 1
        try:
            self._coordination.replace_namespaced_lease(lease_name(lease.key), lease.key.namespace, body,
                                                        _request_timeout=REQUEST_TIMEOUT, _preload_content=False)
            log.info("service.lease_released", service=str(lease.key), node=self.identity)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("service.lease_release_failed", service=str(lease.key), status=exc.status)
        except Exception as exc:
            log.warning("service.lease_release_failed", service=str(lease.key), error=type(exc).__name__)
