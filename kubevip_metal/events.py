"""Kubernetes Events, recorded the way client-go's recorder does: never blocking the caller, aggregated, rate-limited.

**Why core/v1 Events** (not events.k8s.io/v1, client-go's newer `tools/events` recorder): `kubectl get events` and
`kubectl describe <object>` read core/v1, where `count` and `lastTimestamp` show as `(x5 over 10m)` with no
conversion; every Kubernetes release serves it; and its legacy validation needs no `eventTime` / `action` /
6-minute `series` heartbeat, which buy nothing for a handful of state changes per hour. It is what kube-vip and
most controllers (client-go's `tools/record`) write. Both groups read the same storage, so an operator filtering
with `kubectl events` sees them either way.

**What a caller gets**: `record(ref, reason, message)` returns at once. It takes a token from the object's bucket
(client-go's spam filter: per reporting node and involved object, 25 burst, then one per 5 minutes), then puts the
event on a bounded queue (1,000, as client-go's broadcaster); a full queue or an empty bucket drops the event and
counts it. One writer thread empties the queue.

**Aggregation** (client-go's `EventLogger`): the same object, type, reason and message seen again within
`window` (10 minutes, client-go's aggregation interval) bumps `count` and `lastTimestamp` of the Event already
written, by a strategic merge PATCH, instead of creating a new object; what is queued together is written as one
request (`count` += n). After the window, or when the PATCH finds the Event gone (the API server's 1 h TTL), a new
Event is created. The cache of written Events is an LRU of 4,096 keys (client-go's size).

**Writes**: every request has a timeout (`request_timeout`); transient failures (no client yet, connection, 429,
5xx) are retried with exponential backoff by tenacity (12 attempts as client-go's, up to 10 s apart, so the
SteppedDown of a leader cut off from its API server lands once it answers again; the one writer waits meanwhile,
as client-go's does), others (403: RBAC, 422) are dropped at once.
Writes are paced by one more token bucket (burst 100, 10 per second), so a burst of 10,000 Services coming up never
turns into 10,000 requests in a second. Failures are logged at most once a minute per kind, with the count since,
and never raised into the daemon. `close(timeout)` (SIGTERM) writes what is queued until the timeout, then drops the
rest and counts it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import tenacity

from generic.logfmt import get_logger

log = get_logger("kubevip_metal.events")

COMPONENT = "kube-vip-metal"
NORMAL, WARNING = "Normal", "Warning"
CLUSTER_SCOPED_NAMESPACE = "default"  # where Events on cluster-scoped objects (Nodes) go, as the kubelet's
QUEUE_SIZE = 1000
BURST, REFILL_SECONDS = 25, 300.0  # per object: client-go's spam filter
WRITE_BURST, WRITES_PER_SECOND = 100, 10.0
WINDOW_SECONDS = 600.0
CACHE_SIZE = 4096
REQUEST_TIMEOUT = 5.0
ATTEMPTS = 12  # client-go's maxTriesPerEvent: a SteppedDown during an API outage lands once it is back
MESSAGE_LIMIT = 1024
LOG_EVERY = 60.0


@dataclass(frozen=True)
class ObjectRef:
    """The involved object of an Event. `uid` lets `kubectl describe` find it (a Node's is its name, as the kubelet
    does)."""

    kind: str
    api_version: str
    name: str
    namespace: str = ""
    uid: str = ""

    @staticmethod
    def lease(namespace: str, name: str, uid: str = "") -> ObjectRef:
        return ObjectRef("Lease", "coordination.k8s.io/v1", name, namespace, uid)

    @staticmethod
    def service(namespace: str, name: str, uid: str = "") -> ObjectRef:
        return ObjectRef("Service", "v1", name, namespace, uid)

    @staticmethod
    def node(name: str) -> ObjectRef:
        return ObjectRef("Node", "v1", name, "", name)

    @property
    def event_namespace(self) -> str:
        return self.namespace or CLUSTER_SCOPED_NAMESPACE

    def body(self) -> dict[str, str]:
        doc = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            doc["namespace"] = self.namespace
        if self.uid:
            doc["uid"] = self.uid
        return doc

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace + '/' if self.namespace else ''}{self.name}"


class Recorder(Protocol):
    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = NORMAL) -> None:
        """Queue one Event; returns at once, never raises."""
        ...


class NullRecorder:
    """Records nothing (tests of other parts, or a process without an API)."""

    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = NORMAL) -> None:
        return None

    def start(self) -> None:
        return None

    def close(self, timeout: float = 0.5) -> None:
        return None


class TokenBucket:
    """`burst` tokens, one more every `refill` seconds; `take()` False when empty."""

    def __init__(self, burst: int, refill: float, now: float) -> None:
        self.burst, self.refill = burst, refill
        self.tokens, self.at = float(burst), now

    def _fill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) / self.refill)
        self.at = now

    def take(self, now: float) -> bool:
        self._fill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._fill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * self.refill


class ModestLog:
    """A warning per kind at most every `every` seconds, with how many were left unsaid since."""

    def __init__(self, clock: Callable[[], float], every: float = LOG_EVERY, logger: Any = None) -> None:
        self._clock, self._every = clock, every
        self._log = logger if logger is not None else log  # the caller's module logs under its own name
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, **fields: Any) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._every:
                self._quiet[kind] = self._quiet.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._quiet.pop(kind, 0)
        self._log.warning(kind, **fields, **({"suppressed": suppressed} if suppressed else {}))


@dataclass(frozen=True)
class _Item:
    ref: ObjectRef
    type: str
    reason: str
    message: str
    at: datetime

    @property
    def key(self) -> tuple[ObjectRef, str, str, str]:
        return self.ref, self.type, self.reason, self.message


@dataclass
class _Written:
    namespace: str
    name: str
    count: int
    last: float  # monotonic: when it was last written


class _Transient(Exception):
    """Worth another attempt: no client yet, no connection, 429, 5xx."""


class _Gone(Exception):
    """The Event to bump is not there any more (expired): create a new one."""


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventRecorder:
    """core/v1 Events from `host` (the node) through the daemon's Kubernetes API client."""

    def __init__(self, api_client: Callable[[], Any], host: str, *, component: str = COMPONENT,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = _utcnow,
                 queue_size: int = QUEUE_SIZE, burst: int = BURST, refill: float = REFILL_SECONDS,
                 write_burst: int = WRITE_BURST, writes_per_second: float = WRITES_PER_SECOND,
                 window: float = WINDOW_SECONDS, request_timeout: float = REQUEST_TIMEOUT,
                 attempts: int = ATTEMPTS, backoff: float = 0.5) -> None:
        """`api_client()` gives the client to use now (None: not made yet), a `kubernetes.client.ApiClient` or a
        callable returning one (kubevip_metal.kubeclient.ApiClientSelector)."""
        self._api_client, self.host, self.component = api_client, host, component
        self._clock, self._now = clock, now
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=queue_size)
        self._burst, self._refill = burst, refill
        self._buckets: OrderedDict[ObjectRef, TokenBucket] = OrderedDict()
        self._pace = TokenBucket(write_burst, 1.0 / writes_per_second, clock())
        self._window, self._timeout, self._attempts, self._backoff = window, request_timeout, attempts, backoff
        self._written: OrderedDict[tuple[ObjectRef, str, str, str], _Written] = OrderedDict()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._modest = ModestLog(clock)
        self._serial = 0
        self.created = 0  # Events created
        self.patched = 0  # Events whose count was bumped
        self.dropped: dict[str, int] = {}  # why: rate_limited, queue_full, failed, refused, shutdown

    # -- the callers' side ----------------------------------------------------------------------------------

    def record(self, ref: ObjectRef, reason: str, message: str, kind: str = NORMAL) -> None:
        if self._closing.is_set():
            self._drop("shutdown")
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(ref)
            if bucket is None:
                bucket = self._buckets[ref] = TokenBucket(self._burst, self._refill, now)
                if len(self._buckets) > CACHE_SIZE:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(ref)
            allowed = bucket.take(now)
        if not allowed:
            self._drop("rate_limited")
            self._modest.warning("event.rate_limited", object=str(ref), reason=reason)
            return
        item = _Item(ref, kind, reason, message[:MESSAGE_LIMIT], self._now())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drop("queue_full")
            self._modest.warning("event.queue_full", object=str(ref), reason=reason, size=self._queue.maxsize)

    def _drop(self, why: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[why] = self.dropped.get(why, 0) + n

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 0.5) -> None:
        """Write what is queued for at most `timeout` seconds, then drop the rest (counted); idempotent."""
        self._deadline = self._clock() + timeout
        self._closing.set()
        with contextlib.suppress(queue.Full):  # else the writer is busy and checks the deadline after every write
            self._queue.put_nowait(None)
        if self._thread is not None:
            self._thread.join(max(0.0, timeout + 0.05))
            if self._thread.is_alive():  # a request in flight past the deadline: the writer drops the rest after it
                log.warning("event.flush_incomplete", queued=self._queue.qsize(), seconds=timeout)

    def counts(self) -> dict[str, int]:
        """Outcomes so far (created, patched, and each reason to drop), for the metrics."""
        with self._lock:
            return {"created": self.created, "patched": self.patched, **self.dropped}

    def idle(self) -> bool:
        """Nothing queued (for tests)."""
        return self._queue.unfinished_tasks == 0

    # -- the writer -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            items = [item for item in batch if item is not None]
            grouped: OrderedDict[tuple[ObjectRef, str, str, str], tuple[int, _Item]] = OrderedDict()
            for item in items:
                n, _ = grouped.get(item.key, (0, item))
                grouped[item.key] = (n + 1, item)  # the last one's timestamp
            left = list(grouped.values())
            while left:
                if self._past_deadline():
                    self._drop("shutdown", sum(n for n, _ in left))
                    break
                n, item = left.pop(0)
                self._write(item, n)
            for _ in batch:
                self._queue.task_done()
            if stop or self._past_deadline():
                self._drain_dropped()
                return

    def _past_deadline(self) -> bool:
        return self._deadline is not None and self._clock() >= self._deadline

    def _drain_dropped(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._drop("shutdown")
            self._queue.task_done()

    def _write(self, item: _Item, n: int) -> None:
        if not self._paced():
            self._drop("shutdown", n)
            return
        try:
            self._retrying(self._write_once, item, n)
        except _Refused as exc:
            self._drop("refused", n)
            self._modest.warning("event.refused", object=str(item.ref), reason=item.reason, error=str(exc))
        except Exception as exc:  # never into the daemon
            self._drop("failed", n)
            self._modest.warning("event.write_failed", object=str(item.ref), reason=item.reason,
                                 error=f"{type(exc).__name__}: {exc}")

    def _paced(self) -> bool:
        """Wait for a write token; False when closing and none is left before the deadline."""
        while True:
            wait = self._pace.wait_time(self._clock())
            if wait <= 0:
                self._pace.take(self._clock())
                return True
            if self._closing.is_set():
                return False
            self._closing.wait(wait)

    def _retrying(self, fn: Callable[[_Item, int], None], item: _Item, n: int) -> None:
        tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=tenacity.wait_exponential(multiplier=self._backoff, max=10.0),
            stop=tenacity.stop_after_attempt(self._attempts) | tenacity.stop_when_event_set(self._closing),
            sleep=self._pause,
            reraise=True,
        )(fn, item, n)

    def _pause(self, seconds: float) -> None:
        self._closing.wait(seconds)  # a backoff that SIGTERM cuts short

    def _write_once(self, item: _Item, n: int) -> None:
        now = self._clock()
        written = self._written.get(item.key)
        if written is not None and now - written.last < self._window:
            try:
                self._patch(written, item, n)
                written.count += n
                written.last = now
                self._written.move_to_end(item.key)
                self.patched += 1
                return
            except _Gone:
                del self._written[item.key]
        name = self._create(item, n)
        self._written[item.key] = _Written(item.ref.event_namespace, name, n, now)
        if len(self._written) > CACHE_SIZE:
            self._written.popitem(last=False)
        self.created += 1

    def _api(self) -> Any:
        api = self._api_client()
        if callable(api):  # an ApiClientSelector
            api = api()
        if api is None:
            raise _Transient("no Kubernetes API client yet")
        return api

    def _name(self, item: _Item) -> str:
        """client-go's `<object>.<hex nanoseconds>`, plus a serial so two in one tick never collide."""
        self._serial += 1
        stamp = f"{time.time_ns() + self._serial:x}"
        return f"{item.ref.name[:253 - len(stamp) - 1]}.{stamp}"

    def _create(self, item: _Item, n: int) -> str:
        stamp = _timestamp(item.at)
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": self._name(item), "namespace": item.ref.event_namespace},
                "involvedObject": item.ref.body(), "reason": item.reason, "message": item.message,
                "type": item.type, "source": {"component": self.component, "host": self.host},
                "reportingComponent": self.component, "reportingInstance": self.host,
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": n}
        self._send("POST", f"/api/v1/namespaces/{quote(item.ref.event_namespace)}/events", body,
                   "application/json")
        log.debug("event.created", object=str(item.ref), reason=item.reason, count=n)
        return str(body["metadata"]["name"])  # type: ignore[index]

    def _patch(self, written: _Written, item: _Item, n: int) -> None:
        patch = {"count": written.count + n, "lastTimestamp": _timestamp(item.at)}
        self._send("PATCH", f"/api/v1/namespaces/{quote(written.namespace)}/events/{quote(written.name)}", patch,
                   "application/strategic-merge-patch+json", gone_ok=True)
        log.debug("event.bumped", object=str(item.ref), reason=item.reason, count=written.count + n)

    def _send(self, method: str, path: str, body: dict[str, Any], content_type: str, gone_ok: bool = False) -> None:
        """One request through the daemon's client's transport (generic.kuberest: the small client of the Leases
        where the kubeconfig allows it, so Events do not bring the official client, 36 MB, into a daemon that
        needs nothing else of it), the body sent as given."""
        from http.client import HTTPException

        from generic.kuberest import transport_of

        api = self._api()
        try:
            response = transport_of(api).request(method, path, body=body, timeout=self._timeout,
                                                 content_type=content_type)
        except (HTTPException, OSError) as exc:
            raise _Transient(type(exc).__name__) from None
        status = response.status
        if 200 <= status < 300:
            return
        if status == 404 and gone_ok:
            raise _Gone()
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status} {response.reason}")
        raise _Refused(f"HTTP {status} {response.reason}")


class _Refused(Exception):
    """The API server refused the Event for good (403: the RBAC lacks it; 422: invalid)."""
