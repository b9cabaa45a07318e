"""Polling for a condition with a deadline: the one helper every timing-free test uses instead of sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, step: float = 0.01) -> float:
    """Return the seconds it took for `predicate()` to be true; fail the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start
