"""Fault injection and request accounting for the Equinix Metal API emulator.

The Metal client's hard cases are not the happy path: a rate limit in the middle of an EIP move, a 5xx, a load
balancer that resets the connection, an API that is down while the leader changes. These are set from any thread
(tests) or over HTTP (the lab) while the emulator's event loop reads them, so both tables are locked. The 429
decision for `rate_429` comes from a seeded RNG, reseeded whenever a fault is set, so a run is reproducible.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from kubevip_testbed.emulators.kubeapi_faults import FaultError, check_common, integer_field, number_field

__all__ = ["Action", "FaultError", "FaultState", "MetalFault", "RequestLog", "RequestRecord"]

_FIELDS = ("latency", "fail_next", "fail_status", "retry_after", "rate_429", "reset", "down")



class Action(Enum):
    SERVE = "serve"
    DROP = "drop"  # close the connection with a reset, no answer
    FAIL = "fail"  # answer with the fault's status (429 or 5xx)


@dataclass(frozen=True)
class MetalFault:
    """`reset` drops the next `fail_next` requests (at least one) instead of answering them with `fail_status`."""

    latency: float = 0.0
    fail_next: int = 0
    fail_status: int = 429
    retry_after: float | None = 1.0
    rate_429: float = 0.0
    reset: bool = False
    down: bool = False

    def __post_init__(self) -> None:
        check_common(self.latency, self.fail_next, self.fail_status, self.retry_after)
        if not 0.0 <= self.rate_429 <= 1.0:
            raise FaultError(f"rate_429 must be a probability between 0 and 1, got {self.rate_429!r}")
        if self.reset and self.fail_next == 0:
            object.__setattr__(self, "fail_next", 1)

    @classmethod
    def from_json(cls, doc: Any) -> MetalFault:
        """The control endpoint's body: `{"fail_next": 2, "fail_status": 503}`; absent fields take their defaults."""
        if not isinstance(doc, Mapping):
            raise FaultError("a fault must be a JSON object")
        unknown = set(doc) - set(_FIELDS)
        if unknown:
            raise FaultError(f"unknown fault fields: {', '.join(sorted(unknown))} (known: {', '.join(_FIELDS)})")
        retry_after = doc.get("retry_after", 1.0)
        return cls(
            latency=number_field(doc.get("latency", 0.0), "latency"),
            fail_next=integer_field(doc.get("fail_next", 0), "fail_next"),
            fail_status=integer_field(doc.get("fail_status", 429), "fail_status"),
            retry_after=None if retry_after is None else number_field(retry_after, "retry_after"),
            rate_429=number_field(doc.get("rate_429", 0.0), "rate_429"),
            reset=_boolean(doc.get("reset", False), "reset"),
            down=_boolean(doc.get("down", False), "down"),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)






def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise FaultError(f"{name} must be true or false, got {value!r}")
    return value


class FaultState:
    """The fault in force and the RNG behind `rate_429`; `decide` is called once per API request."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._fault = MetalFault()
        self._rng = random.Random(seed)

    def set(self, fault: MetalFault) -> None:
        with self._lock:
            self._fault = fault
            self._rng = random.Random(self._seed)

    def get(self) -> MetalFault:
        with self._lock:
            return self._fault

    def decide(self) -> tuple[Action, MetalFault]:
        """What to do with the next request, consuming one `fail_next` when it is the one that fails."""
        with self._lock:
            fault = self._fault
            if fault.down:
                return Action.DROP, fault
            if fault.fail_next > 0:
                left = fault.fail_next - 1  # a spent reset must not renormalise itself to one more drop
                self._fault = replace(fault, fail_next=left, reset=fault.reset and left > 0)
                return (Action.DROP if fault.reset else Action.FAIL), fault
            if fault.rate_429 > 0 and self._rng.random() < fault.rate_429:
                return Action.FAIL, replace(fault, fail_status=429)
            return Action.SERVE, fault


@dataclass(frozen=True)
class RequestRecord:
    """One API request as answered; status 0 means the connection was dropped without an answer."""

    method: str
    path: str
    status: int
    time: float  # time.monotonic() when the request arrived
    operation: str  # the spec's operationId, "" when the request named none


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def counts(self) -> dict[str, int]:
        """Requests per operationId (faulted and refused ones included)."""
        with self._lock:
            return dict(Counter(r.operation or "unknown" for r in self._records))

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
