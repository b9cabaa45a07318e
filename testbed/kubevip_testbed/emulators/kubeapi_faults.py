"""Per-client fault injection and request accounting for the Kubernetes API emulator.

A client is its bearer token's identity (one per node), so a test can cut one node off its API server while the
others keep working, the situation leader election exists for. Both tables are locked: tests and benchmarks
change faults from their own threads (or over HTTP) while the emulator's loop reads them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any


class Outage(Enum):
    HANG = "hang"  # requests are never answered and open watches go silent, as behind a black-holing firewall
    REFUSE = "refuse"  # connections are closed without an answer and open watches are cut


class FaultError(ValueError):
    """A fault description that cannot be honoured; the control endpoint answers it with 400."""


@dataclass(frozen=True)
class Fault:
    latency: float = 0.0
    outage: Outage | None = None
    fail_next: int = 0
    fail_status: int = 500
    retry_after: float | None = None

    def __post_init__(self) -> None:
        check_common(self.latency, self.fail_next, self.fail_status, self.retry_after)

    @classmethod
    def from_json(cls, doc: Any) -> Fault:
        """Parse the control endpoint's body: `{"latency": 0.2, "outage": "hang", "fail_next": 3, ...}`."""
        if not isinstance(doc, Mapping):
            raise FaultError("a fault must be a JSON object")
        unknown = set(doc) - {"latency", "outage", "fail_next", "fail_status", "retry_after"}
        if unknown:
            raise FaultError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        outage = doc.get("outage")
        try:
            return cls(
                latency=number_field(doc.get("latency", 0.0), "latency"),
                outage=Outage(outage) if outage is not None else None,
                fail_next=integer_field(doc.get("fail_next", 0), "fail_next"),
                fail_status=integer_field(doc.get("fail_status", 500), "fail_status"),
                retry_after=(number_field(doc["retry_after"], "retry_after")
                             if doc.get("retry_after") is not None else None),
            )
        except ValueError as exc:  # Outage("bogus")
            raise FaultError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["outage"] = self.outage.value if self.outage else None
        return doc


def check_common(latency: float, fail_next: int, fail_status: int, retry_after: float | None) -> None:
    """The fields both emulators' faults share: FaultError naming the first one out of range."""
    if not math.isfinite(latency) or latency < 0:
        raise FaultError(f"latency must be a non-negative number of seconds, got {latency!r}")
    if fail_next < 0:
        raise FaultError(f"fail_next must be >= 0, got {fail_next!r}")
    if fail_status != 429 and not 500 <= fail_status <= 599:
        raise FaultError(f"fail_status must be 429 or 5xx, got {fail_status!r}")
    if retry_after is not None and (not math.isfinite(retry_after) or retry_after < 0):
        raise FaultError(f"retry_after must be a non-negative number of seconds, got {retry_after!r}")


def number_field(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number, got {value!r}")
    return float(value)


def integer_field(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer, got {value!r}")
    return value


class FaultTable:
    """Faults by identity; `listener` hears every change (the emulator uses it to wake or cut open watches)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set(self, identity: str, fault: Fault) -> None:
        with self._lock:
            self._faults[identity] = fault
            listeners = list(self._listeners)
        for listener in listeners:
            listener(identity)

    def clear(self, identity: str) -> None:
        with self._lock:
            self._faults.pop(identity, None)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(identity)

    def get(self, identity: str) -> Fault | None:
        with self._lock:
            return self._faults.get(identity)

    def all(self) -> dict[str, Fault]:
        with self._lock:
            return dict(self._faults)

    def take_failure(self, identity: str) -> Fault | None:
        """Consume one of the identity's `fail_next` failures; the fault in force, or None if none is left."""
        with self._lock:
            fault = self._faults.get(identity)
            if fault is None or fault.fail_next <= 0:
                return None
            self._faults[identity] = replace(fault, fail_next=fault.fail_next - 1)
            return fault


class RequestLog:
    """Counts of requests by identity and by verb (`get`, `list`, `watch`, `create`, `update`, `patch`, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verbs: dict[str, dict[str, int]] = {}

    def record(self, identity: str, verb: str) -> None:
        with self._lock:
            verbs = self._verbs.setdefault(identity, {})
            verbs[verb] = verbs.get(verb, 0) + 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {identity: sum(verbs.values()) for identity, verbs in self._verbs.items()}

    def by_verb(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {identity: dict(verbs) for identity, verbs in self._verbs.items()}

    def reset(self) -> None:
        with self._lock:
            self._verbs.clear()
