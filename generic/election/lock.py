"""The lock protocol an elector campaigns on, after client-go's `resourcelock.Interface`.

A lock stores one `LeaderRecord` and a version (Kubernetes `resourceVersion`, an etcd revision). Writes are
compare-and-swap on that version, so two candidates can never both succeed from the same observation:
the loser gets `LockConflict`. Everything else that can go wrong on the way (timeouts, 5xx, 429, refused
connections) is `LockUnavailable`, which the elector treats as "nothing is known".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class LeaderRecord:
    """What the Lease says, in client-go's terms. `holder == ""` means free (released).

    `offered` and `successor` are the hand-over (`generic/election/handover.py`), not client-go's: the holder
    offers the lock to a fit successor (its own health check fails), a fit candidate claims it by naming itself;
    the holder then steps down and releases. A client-go elector never sets them and leaves them alone."""

    holder: str
    lease_duration_s: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    offered: bool = False
    successor: str = ""


class LockConflict(Exception):
    """The lock changed since it was read (409 Conflict), or already exists on create."""


class LockUnavailable(Exception):
    """The lock's store could not be reached or answered with an error; nothing was learned."""


class Lock(Protocol):
    """Get / create / update / describe, plus an optional change feed so followers react at once."""

    def get(self, timeout: float) -> tuple[LeaderRecord, str] | None:
        """The record and its version, or None when the lock does not exist yet."""
        ...

    def create(self, record: LeaderRecord, timeout: float) -> str:
        """Create the lock holding `record`; returns the new version. Raises LockConflict if it exists."""
        ...

    def update(self, record: LeaderRecord, version: str, timeout: float) -> str:
        """Replace the record if the lock is still at `version`; returns the new version."""
        ...

    def describe(self) -> str:
        """A name for logs, e.g. `kube-system/plndr-cp-lock`."""
        ...

    def watch(self, on_change: Callable[[tuple[LeaderRecord, str] | None], None], stop: threading.Event) -> None:
        """Feed every new state of the lock (record, version) to `on_change` until `stop` is set (blocking;
        reconnects). `None` means "the feed was interrupted: what you know may be stale"."""
        ...
