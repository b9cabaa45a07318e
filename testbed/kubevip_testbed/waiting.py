"""Polling for a condition with a deadline: the one helper every timing-free test uses instead of sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, step: float = 0.01) -> float:
    """Return the seconds it took for `predicate()` to be true; fail the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def wait_for_value(probe: Callable[[], T | None], timeout: float = 20.0, step: float = 0.01) -> T:
    """Return the first truthy value `probe()` gives; fail the test after `timeout`.

    For a wait whose result the test goes on with (the new leader, the holder): reading it again after the wait
    may see a later state than the one that ended it (another holder, or none), so the value is the one seen."""
    found: list[T] = []

    def seen() -> bool:
        value = probe()
        if value:
            found.append(value)
        return bool(value)

    wait_for(seen, timeout=timeout, step=step)
    return found[-1]
