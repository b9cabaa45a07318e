"""A `Lock` on a coordination.k8s.io/v1 Lease, in the exact format client-go writes.

The spec fields are Kubernetes' own (holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
leaseTransitions), so `kubectl get lease` tells the truth and a client-go elector (kube-vip) on the same
Lease interoperates during a migration. Bodies are plain JSON (no generated models), so fields we do not
know (strategy, preferredHolder, labels) survive our writes. The hand-over (`handover.py`) rides in two
annotations of ours, `OFFERED` and `SUCCESSOR`, which a client-go elector keeps as it found them and ignores.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any
from urllib.parse import quote

import tenacity

from generic.election.lock import LeaderRecord, LockConflict, LockUnavailable
from generic.kuberest import transport_of
from generic.logfmt import get_logger

log = get_logger("generic.election.lease")

WATCH_SECONDS = 60  # server-side timeout of one watch; the loop reconnects
OFFERED = "kube-vip-metal.io/handover-offered"  # "true": the holder hands over to a fit successor
SUCCESSOR = "kube-vip-metal.io/handover-successor"  # the candidate that claimed the offer


def _micro_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def record_from_lease(lease: dict[str, Any]) -> LeaderRecord:
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    return LeaderRecord(
        holder=spec.get("holderIdentity") or "",
        lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        offered=annotations.get(OFFERED) == "true",
        successor=str(annotations.get(SUCCESSOR) or ""),
    )


def _metadata(record: LeaderRecord, previous: dict[str, Any]) -> dict[str, Any]:
    """`previous` with our two annotations set from `record` (absent when unset: a plain Lease stays plain)."""
    metadata = dict(previous)
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k not in (OFFERED, SUCCESSOR)}
    if record.offered:
        annotations[OFFERED] = "true"
    if record.successor:
        annotations[SUCCESSOR] = record.successor
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return metadata


def _spec(record: LeaderRecord, previous: dict[str, Any]) -> dict[str, Any]:
    spec = dict(previous)
    spec.update(holderIdentity=record.holder, leaseDurationSeconds=record.lease_duration_s,
                acquireTime=_micro_time(record.acquire_time), renewTime=_micro_time(record.renew_time),
                leaseTransitions=record.transitions)
    return spec


class LeaseLock:
    """Lease `namespace/name` over `generic.kuberest` (its small `RestClient`, or an official `ApiClient`)."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        """`api_client` is a client, or a callable returning the one to use now (kubeconfigs can change)."""
        self._client_for: Callable[[], Any] = api_client if callable(api_client) else lambda: api_client
        self.namespace, self.name = namespace, name
        self._last: dict[str, Any] = {}

    @property
    def _path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{quote(self.namespace)}/leases"

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def uid(self) -> str:
        """The Lease's metadata.uid as last read or written ("" before), for Events about it."""
        return str((self._last.get("metadata") or {}).get("uid") or "")

    def _request(self, method: str, path: str, timeout: float, body: Any = None) -> tuple[int, dict[str, Any]]:
        """(status, document) of one request; a missing answer or one that is not JSON is `LockUnavailable`. Bodies
        are sent exactly as given: a generated V1Lease model would serialise a MicroTime without its six fractional
        digits whenever the microsecond is 0, which the real API server answers with 400, once in a million."""
        try:
            response = transport_of(self._client_for()).request(method, path, body=body, timeout=timeout)
            doc = json.loads(response.data) if response.ok else {}
        except (OSError, ValueError, HTTPException) as exc:
            raise LockUnavailable(f"{self.describe()}: {type(exc).__name__}") from None
        if response.status == 409:
            raise LockConflict(f"{self.describe()}: {response.reason}")
        if not response.ok and response.status != 404:
            raise LockUnavailable(f"{self.describe()}: HTTP {response.status} {response.reason}")
        return response.status, doc

    def get(self, timeout: float) -> tuple[LeaderRecord, str] | None:
        status, lease = self._request("GET", f"{self._path}/{quote(self.name)}", timeout)
        if status == 404:
            return None  # not created yet
        self._last = lease
        return record_from_lease(lease), str(lease["metadata"]["resourceVersion"])

    def create(self, record: LeaderRecord, timeout: float) -> str:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": _metadata(record, {"name": self.name, "namespace": self.namespace}),
                "spec": _spec(record, {})}
        status, lease = self._request("POST", self._path, timeout, body)
        if status == 404:  # pragma: no cover - 404 on create means the namespace is missing
            raise LockUnavailable(f"{self.describe()}: HTTP 404")
        self._last = lease
        return str(lease["metadata"]["resourceVersion"])

    def update(self, record: LeaderRecord, version: str, timeout: float) -> str:
        metadata = _metadata(record, self._last.get("metadata") or {"name": self.name, "namespace": self.namespace})
        metadata["resourceVersion"] = version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": _spec(record, self._last.get("spec") or {})}
        status, lease = self._request("PUT", f"{self._path}/{quote(self.name)}", timeout, body)
        if status == 404:  # deleted under us; the next get() recreates it
            raise LockConflict(f"{self.describe()}: HTTP 404")
        self._last = lease
        return str(lease["metadata"]["resourceVersion"])

    def watch(self, on_change: Callable[[tuple[LeaderRecord, str] | None], None], stop: threading.Event) -> None:
        """Stream changes of this one Lease; reconnect with jittered exponential backoff on errors."""
        def pause(seconds: float) -> None:
            stop.wait(seconds)

        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
            stop=lambda _state: stop.is_set(),
            sleep=pause,
            retry=tenacity.retry_if_exception_type(Exception),
            reraise=False,
            before_sleep=lambda state: log.debug("lease.watch_retry", lease=self.describe(),
                                                 attempt=state.attempt_number),
        )
        while not stop.is_set():
            try:
                retrying(self._stream, on_change, stop)
            except tenacity.RetryError:
                return
            finally:
                on_change(None)  # between two streams, changes may be missed

    def _stream(self, on_change: Callable[[tuple[LeaderRecord, str] | None], None], stop: threading.Event) -> None:
        """One watch; it starts with the current object (ADDED), then every change, until its timeout. The events
        are read as raw JSON lines: building a model of every renewal (once a retry period, on every follower)
        would cost more CPU at rest than everything else a follower does."""
        query = {"fieldSelector": f"metadata.name={self.name}", "watch": "true", "timeoutSeconds": WATCH_SECONDS}
        with transport_of(self._client_for()).stream(self._path, query=query, timeout=WATCH_SECONDS + 10) as lines:
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                raw = event.get("object") if isinstance(event, dict) else None
                if event.get("type") in ("ADDED", "MODIFIED") and isinstance(raw, dict):
                    on_change((record_from_lease(raw), str(raw["metadata"]["resourceVersion"])))
                else:
                    on_change(None)  # DELETED, BOOKMARK or an error: re-read
                if stop.is_set():
                    return
