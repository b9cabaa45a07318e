"""Following `--address NAME`: the control-plane VIP(s) move when the name's answer changes.

Every node re-resolves, the followers too: a new leader then takes the name's current address at once, with no
lookup in the failover path, and a follower polices the current address (the VIP controller keeps a stray copy
of it away). Only the leader's claim is active, so only the leader's change reaches the wire; the move itself is
the control plane's claim changing (`ControlPlane.retarget`), which the VIP controller applies with the same
announcers as any change: the old address withdrawn (BGP withdraw, address removed), the new one added and
announced (GARP burst, BGP update), in one batch.

When: after an answer, at max(`--dnsInterval`, its TTL), the TTL honoured up to `MAX_TTL`; after a failure,
at the interval. A failed or timed-out lookup keeps the current address and says so: the first failure at once,
then at most once every `WARN_EVERY` seconds while it lasts (with the count), and once when it recovers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from generic.dns import Answer, Lookup, LookupFailed
from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.errors import DaemonError

log = get_logger("kubevip_metal.dns")

MAX_TTL = 300.0  # seconds: a longer TTL is not waited out (a record changed ahead of its TTL is still followed)
WARN_EVERY = 60.0  # seconds between two warnings about the same run of failures

Moved = Callable[[tuple[IPAddress, ...]], None]  # the new address(es); may raise DaemonError (cannot place them)


class NameFollower:
    """Re-resolves `name` on its own thread and calls `moved` with the new address(es) when the answer changes."""

    def __init__(self, name: str, mode: str, lookup: Lookup, first: Answer, moved: Moved, *, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.mode, self.interval = name, mode, interval
        self._lookup, self._moved, self._clock = lookup, moved, clock
        self.current = first.addresses
        self._next_wait = self.wait_after(first)
        self.failures = 0  # in a row, since the last answer
        self._warned_at: float | None = None
        self.lookups = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_after(self, answer: Answer | None) -> float:
        """Seconds until the next lookup: the interval, or a longer TTL (up to MAX_TTL); a failure: the interval."""
        if answer is None or answer.ttl is None:
            return self.interval
        return max(self.interval, min(answer.ttl, MAX_TTL))

    def poll(self) -> float:
        """One lookup; a changed answer is handed to `moved`. Returns the seconds to wait before the next one."""
        self.lookups += 1
        try:
            answer = self._lookup(self.name, self.mode)
        except LookupFailed as exc:
            self._failed(str(exc))
            return self.interval
        if self.failures:
            log.info("dns.lookup_recovered", name=self.name, failures=self.failures, addresses=str(answer))
            self.failures, self._warned_at = 0, None
        if answer.addresses != self.current:
            self._move(answer)
        return self.wait_after(answer)

    def _move(self, answer: Answer) -> None:
        if self._stop.is_set():
            return  # a lookup that was in flight at stop: nothing changes after stop
        old = self.current
        try:
            self._moved(answer.addresses)
        except DaemonError as exc:
            log.error("dns.move_failed", name=self.name, old=_text(old), new=str(answer), error=str(exc),
                      kept=_text(old))
            return
        self.current = answer.addresses
        log.info("dns.moved", name=self.name, old=_text(old), new=str(answer), ttl=answer.ttl,
                 mono=round(self._clock(), 6))

    def _failed(self, error: str) -> None:
        self.failures += 1
        now = self._clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("dns.lookup_failed", name=self.name, error=error, kept=_text(self.current),
                        failures=self.failures, next_in=self.interval)

    # -- the thread

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dns-follower", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        wait = self._next_wait
        while not self._stop.wait(wait):
            try:
                wait = self.poll()
            except Exception as exc:  # a bug must not end the following silently
                log.error("dns.follow_failed", name=self.name, error=f"{type(exc).__name__}: {exc}")
                wait = self.interval

    def stop(self, timeout: float = 0.5) -> None:
        """Stops at once; a lookup in flight (bounded by the resolver's timeout) is left to finish and ignored."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _text(addresses: tuple[IPAddress, ...]) -> str:
    return ",".join(str(ip) for ip in addresses)
