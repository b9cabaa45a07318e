"""One election per Service (`--servicesElection`), thousands of them, on one thread and one watch.

kube-vip runs a client-go elector per Service: a goroutine, a timer and a GET per candidate per retry period each,
so N Services on M nodes cost about N*M/retry requests a second and hit client-side throttling (its #563, #1425).
Here one informer watches every Lease of the cluster (so followers learn of a renewal or a release the moment it
happens, without polling), and one scheduler thread keeps a heap of what is due: renewing the Leases we hold
(every `renew_interval`: up to half the renew deadline, where client-go renews every retry period) and trying
the free or expired ones we want. At rest the only requests are the holders' renewals: N/interval a second for
the whole cluster, whatever the number of nodes (1,000 Leases with kube-vip's 15/10/2 s timers: 200 writes a
second, where client-go's cadence would need 500).

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

import concurrent.futures
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from generic.election.elector import Timers
from generic.informer import Event, Informer, Obj
from generic.logfmt import get_logger
from kubevip_metal.services.model import ServiceKey

log = get_logger("kubevip_metal.services.elections")

REQUEST_TIMEOUT = 5.0
WRITERS = 8  # Lease writes in flight at once: a crashed node's 400 Leases are taken in a round trip or two, not
# 400 one after the other, and renewing 1,000 Leases a second fits; a fixed pool, never a thread per Service
RELEASE_BUDGET = 1.5  # seconds stop() spends giving Leases back (SIGTERM's 2 s)


def renew_interval(timers: Timers) -> float:
    """How long after a successful renewal a held Lease is renewed again: half the renew deadline, but always
    leaving two retry periods before the deadline, and never more often than the retry period (client-go renews
    every retry period).

    Safety does not depend on it: a holder stops serving `renew_deadline` after its last successful write, before
    any candidate may take the Lease (`lease_duration` after it saw that write), whatever the cadence. Only
    availability does: a renewal that fails or waits in the writers' queue is retried every retry period until the
    deadline. With kube-vip's 15/10/2 s timers this renews every 5 s instead of 2 s (2.5 times fewer writes); with
    tight timers such as 5/3/1 s it stays at 1 s: `benchmarks/services.py --case arp-election` renewing 1,000 Leases
    every 1.5 s there (one retry period of slack) saw renewals queued past the deadline on a loaded machine, and
    Leases move at rest."""
    return max(timers.retry_period, min(timers.renew_deadline / 2, timers.renew_deadline - 2 * timers.retry_period))


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
    busy: bool = False  # a write (or the step-down callback) of this Lease is in flight on the pool
    deferred: bool = False  # it came due while busy: looked at again as soon as the write is done
    due: float | None = None  # when the scheduler looks at it next: one entry per Lease (the earliest wins)


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
        self._pool = concurrent.futures.ThreadPoolExecutor(WRITERS, thread_name_prefix="service-lease")

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
        releases = [self._pool.submit(self._release, lease) for lease in held]
        done, left = concurrent.futures.wait(releases, timeout=RELEASE_BUDGET)
        if left:
            log.warning("service.leases_not_released", released=len(done), left=len(left),
                        seconds=RELEASE_BUDGET, effect="they expire after their lease duration")
        self._pool.shutdown(wait=False, cancel_futures=True)
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
        elif lease.leading and lease.holder != self.identity:
            self._schedule(key, 0.0)  # taken over (or deleted): step down, or take it back if it is free

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
        """Look at `key` again after `delay`, unless it is already due sooner: one live entry per Lease, so that
        the paths that each ask for a look (a write's answer, the watch's copy of it, a retry) can never grow
        into parallel renewal chains. Whatever runs at the earlier time decides again when it is needed next."""
        lease = self._leases.get(key)
        at = self._clock() + delay
        if lease is not None:
            if lease.due is not None and lease.due <= at:
                return
            lease.due = at
        heapq.heappush(self._due, (at, next(self._order), key))
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            step_down: ServiceKey | None = None
            action: Callable[[], None] | None = None
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else max(0.0, self._due[0][0] - self._clock()))
                if self._stopped:
                    return
                at, _n, key = heapq.heappop(self._due)
                lease = self._leases.get(key)
                if lease is None or lease.due != at:
                    continue  # superseded by an earlier entry
                lease.due = None
                if not lease.wanted:
                    continue
                if not lease.busy:
                    action = self._next_action(lease)
                    if action is not None:
                        lease.busy = True
                else:
                    lease.deferred = True  # looked at again when its write is done
                    if lease.leading and self._clock() - lease.renewed_at > self.timers.renew_deadline:
                        # the renewal is still queued or in flight at the deadline: stop serving now, since a
                        # candidate elsewhere may take the Lease a lease duration after our last write
                        lease.leading = False
                        log.warning("service.lease_lost", service=str(lease.key),
                                    reason="renew deadline passed with the renewal in flight")
                        step_down = lease.key
            if step_down is not None:
                self._on_change(step_down, False)
            if action is not None:
                try:
                    self._pool.submit(self._perform, lease, action)
                except RuntimeError:  # the pool is shut down: stopping
                    return

    def _perform(self, lease: _Lease, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # never lose the Lease's schedule to a surprise
            log.error("service.lease_action_failed", service=str(lease.key), error=f"{type(exc).__name__}: {exc}")
            with self._cond:
                self._schedule(lease.key, self.timers.retry_period)
        finally:
            with self._cond:
                lease.busy = False
                if lease.deferred:
                    lease.deferred = False
                    self._schedule(lease.key, 0.0)

    def _next_action(self, lease: _Lease) -> Callable[[], None] | None:
        """Called with the lock held: what this Lease needs now, or None (and when to look again)."""
        now = self._clock()
        if lease.leading:
            if lease.holder and lease.holder != self.identity:
                # someone else's write is the newest record: ours was superseded (we were too slow, or it expired
                # on their clock). Never renew over it: our copy of its resourceVersion would let the write
                # through, and each of us would take the Lease back from the other at every retry
                lease.leading = False
                log.warning("service.lease_lost", service=str(lease.key), reason=f"taken by {lease.holder}")
                return lambda: self._on_change(lease.key, False)
            if now - lease.renewed_at > self.timers.renew_deadline:  # could not renew in time: stop serving
                lease.leading = False
                log.warning("service.lease_lost", service=str(lease.key), reason="renew deadline passed")
                return lambda: self._on_change(lease.key, False)
            return lambda: self._write(lease, renewing=True)
        if self._takeable(lease, now):
            return lambda: self._write(lease, renewing=False)
        self._schedule(lease.key, lease.observed_at + lease.duration - now + 0.01)
        return None

    def _takeable(self, lease: _Lease, now: float) -> bool:
        """Free, ours, or unchanged for its whole duration on our clock (client-go's rule)."""
        return not lease.holder or lease.holder == self.identity or now - lease.observed_at >= lease.duration

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
            # decided on an older record than the one the write would carry: a write is only as right as the
            # record it was decided on, since the resourceVersion it sends is the newest one seen
            if renewing and lease.holder and lease.holder != self.identity:
                self._schedule(lease.key, 0.0)  # superseded since the scheduler looked: it steps down
                return
            if not renewing and not self._takeable(lease, self._clock()):
                self._schedule(lease.key, 0.0)  # someone took it since the scheduler looked
                return
            body = self._body(lease, renewing)
            exists = lease.version is not None
            if renewing:  # a look at the deadline, however long this request takes
                self._schedule(lease.key, lease.renewed_at + self.timers.renew_deadline - self._clock() + 0.01)
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
            if not lease.wanted or self._stopped:  # let go (or stopped) while we wrote: give it back
                lease.leading = became = False
            elif not lease.leading:
                lease.leading = became = True
            lease.renewed_at = sent
            if lease.leading:
                self._schedule(lease.key, renew_interval(self.timers))
        if became:
            log.info("service.lease_acquired", service=str(lease.key), node=self.identity,
                     mono=round(self._clock(), 6))
            self._on_change(lease.key, True)
        elif not lease.wanted or self._stopped:
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
