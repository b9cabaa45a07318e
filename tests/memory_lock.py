"""An in-memory lock store with per-client faults, for fast, deterministic elector tests.

Each client (one per candidate) sees the same record through its own `MemoryLock`, whose faults (refuse,
hang) apply to it alone, like a node cut off from the API server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from generic.election.lock import LeaderRecord, LockConflict, LockUnavailable


class MemoryStore:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.record: LeaderRecord | None = None
        self.version = 0
        self.writes: list[tuple[float, LeaderRecord]] = []

    def client(self, name: str) -> MemoryLock:
        return MemoryLock(self, name)


class MemoryLock:
    def __init__(self, store: MemoryStore, name: str) -> None:
        self.store, self.name = store, name
        self.fault: str | None = None  # None, "refuse" or "hang"
        self.commit_then_fail = False  # the write lands but the answer is lost

    def describe(self) -> str:
        return f"memory/{self.name}"

    def _gate(self, timeout: float) -> None:
        if self.fault == "refuse":
            raise LockUnavailable("refused")
        if self.fault == "hang":
            time.sleep(timeout)
            raise LockUnavailable("timed out")

    def get(self, timeout: float) -> tuple[LeaderRecord, str] | None:
        self._gate(timeout)
        with self.store.cond:
            if self.store.record is None:
                return None
            return self.store.record, str(self.store.version)

    def create(self, record: LeaderRecord, timeout: float) -> str:
        self._gate(timeout)
        with self.store.cond:
            if self.store.record is not None:
                raise LockConflict("exists")
            return self._write(record)

    def update(self, record: LeaderRecord, version: str, timeout: float) -> str:
        self._gate(timeout)
        with self.store.cond:
            if self.store.record is None or str(self.store.version) != version:
                raise LockConflict("stale")
            new = self._write(record)
        if self.commit_then_fail:
            raise LockUnavailable("answer lost")
        return new

    def _write(self, record: LeaderRecord) -> str:
        self.store.version += 1
        self.store.record = record
        self.store.writes.append((time.monotonic(), record))
        self.store.cond.notify_all()
        return str(self.store.version)

    def watch(self, on_change: Callable[[tuple[LeaderRecord, str] | None], None], stop: threading.Event) -> None:
        seen = [-1]
        while not stop.is_set():
            with self.store.cond:
                self.store.cond.wait_for(lambda: self.store.version != seen[0] or stop.is_set(), timeout=0.2)
                changed = self.store.version != seen[0]
                seen[0] = self.store.version
                found = (self.store.record, str(self.store.version)) if self.store.record is not None else None
            if changed and self.fault is None:
                on_change(found)
