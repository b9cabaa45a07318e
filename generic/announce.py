"""Announcers: how the network learns where a VIP lives. Holding the address on an interface is not their job
(`generic.addresses.Addresses` does that, driven by the VIP controller); an announcer only tells others.

The controller decides *what* is wanted; an announcer decides *how* it is announced. Implementations:
`GarpAnnouncer` (gratuitous ARP / unsolicited NA, here), the Equinix Metal Elastic IP assignment
(`kubevip_metal.metal.announcer`), and the BGP speaker as it lands. A mode is an address placement plus a list of
announcers (`kubevip_metal.daemon.modes`).

`GarpAnnouncer`: a burst at takeover whose first packet leaves at once (in the caller's thread, before `announce`
returns), then one announcement every `rate` seconds for as long as the VIP is announced. Each VIP has its own
schedule. `refresh` notices an interface that came back up (a pulled cable plugged in again: the switch forgot us)
and starts a new burst.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from generic.addresses import Addresses, Vip
from generic.garp import GarpSender, send_unsolicited_na
from generic.logfmt import get_logger

log = get_logger("generic.announce")

REPEAT_GRID = 0.1  # seconds: the periodic repeats of every VIP fall on its multiples
BURST = (0.0, 0.05, 0.2, 0.5, 1.0)  # seconds after takeover; keepalived-like, first packet at once


@runtime_checkable
class Batching(Protocol):
    """An announcer that can collect a burst of changes and send them at once (BGP: one UPDATE burst)."""

    def hold(self) -> None: ...

    def flush(self) -> None: ...


class Announcer(Protocol):
    """Every method is idempotent. The VIP controller calls them in one thread at a time."""

    name: str

    def announce(self, vip: Vip) -> None:
        """Start announcing the VIP (again: a repeated call starts afresh, e.g. after the address was re-added)."""
        ...

    def withdraw(self, vip: Vip) -> None:
        """Stop announcing the VIP."""
        ...

    def refresh(self, vip: Vip) -> bool:
        """The reconciler's check of an announced VIP; True if something had drifted and was repaired."""
        ...

    def close(self) -> None:
        """Withdraw whatever this announcer still announces and free its resources."""
        ...


@dataclass(frozen=True)
class _Link:
    """What a frame needs of the interface, read in the caller's thread so the schedule never touches netlink."""

    mac: bytes
    index: int


class GarpAnnouncer:
    """Layer 2: gratuitous ARP (IPv4) or unsolicited NA (IPv6) for VIPs held on a LAN interface.

    `addresses` is only read (MAC, index, link state), and only from `announce` / `refresh`, which the caller
    serializes with its own use of the same netlink handle; the schedule thread uses what those calls cached.
    """

    name = "garp"

    def __init__(self, rate: float, addresses: Addresses, clock: Callable[[], float] = time.monotonic,
                 follow_up: float | None = None) -> None:
        """`follow_up`: one more announcement that long after each takeover (the daemon passes the renew deadline
        + 0.5 s): a previous holder that lost its renewal may go on announcing until its own deadline (client-go,
        hence kube-vip, releases before it deletes the VIP), and this wins the clients back at once after it."""
        self.rate = rate
        self.burst = tuple(sorted({*BURST, *([follow_up] if follow_up else [])}))
        self._addresses = addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._schedule: list[tuple[float, int, int, Vip]] = []  # due, tie-breaker, generation, vip
        self._tie = itertools.count()
        self._generation: dict[Vip, int] = {}  # a withdrawn or re-announced VIP invalidates older entries
        self._queued: dict[Vip, int] = {}  # entries of the current generation still in the schedule
        self._links: dict[Vip, _Link] = {}
        self._link_was_up: dict[str, bool] = {}
        self._garp = GarpSender()
        self._closed = False
        self.sent = 0  # announcements (GARP pairs or NAs) put on the wire
        self._thread = threading.Thread(target=self._run, name="garp-announcer", daemon=True)
        self._thread.start()

    def announce(self, vip: Vip) -> None:
        try:
            link = _Link(self._addresses.mac(vip.interface), self._addresses.index(vip.interface))
        except Exception as exc:  # the interface is gone: the reconciler announces again once it is back
            log.warning("vip.announce_failed", vip=str(vip), error=str(exc))
            return
        with self._lock:
            repeat = vip in self._generation
            self._links[vip] = link
            self._start_burst(vip)
        log.info("vip.repaired" if repeat else "vip.announced", vip=str(vip), mono=round(self._clock(), 6))

    def withdraw(self, vip: Vip) -> None:
        with self._lock:
            self._generation.pop(vip, None)
            self._queued.pop(vip, None)
            self._links.pop(vip, None)

    def refresh(self, vip: Vip) -> bool:
        up = self._addresses.link_up(vip.interface)
        came_up = up and not self._link_was_up.get(vip.interface, True)
        self._link_was_up[vip.interface] = up
        with self._lock:
            announced = vip in self._generation
        if announced and came_up:
            log.warning("vip.link_up_reannounce", vip=str(vip))
            self.announce(vip)
            return True
        if up and not announced:  # announce() failed earlier (interface missing): try again
            self.announce(vip)
            return vip in self._generation
        return False

    def close(self) -> None:
        with self._lock:
            self._generation.clear()
            self._closed = True
            self._wake.notify_all()
        self._thread.join(2)
        self._garp.close()

    # -- schedule -----------------------------------------------------------------------------------------

    def _start_burst(self, vip: Vip) -> None:
        """Called with the lock held: send now, then queue the rest of the burst and the periodic repeats."""
        generation = self._generation.get(vip, 0) + 1
        self._generation[vip] = generation
        self._send(vip)
        now = self._clock()
        for offset in self.burst[1:]:
            heapq.heappush(self._schedule, (now + offset, next(self._tie), generation, vip))
        self._queued[vip] = len(self.burst) - 1
        if not self._queued[vip]:  # a burst of one: the periodic repeats start now
            repeat = math.ceil((now + self.rate) / REPEAT_GRID) * REPEAT_GRID
            heapq.heappush(self._schedule, (repeat, next(self._tie), generation, vip))
            self._queued[vip] = 1
        self._wake.notify_all()

    def _send(self, vip: Vip) -> None:
        link = self._links.get(vip)
        if link is None:
            return
        try:
            if vip.address.version == 4:
                self._garp.send(vip.interface, link.mac, vip.address)
            else:
                send_unsolicited_na(vip.interface, link.index, link.mac, vip.address)
            self.sent += 1
        except Exception as exc:  # a down interface: the reconciler re-announces when it is back
            log.debug("vip.announce_failed", vip=str(vip), error=str(exc))

    def _run(self) -> None:
        with self._lock:
            while not self._closed:
                if not self._schedule:
                    self._wake.wait()
                    continue
                due, _, generation, vip = self._schedule[0]
                wait = due - self._clock()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._schedule)
                if self._generation.get(vip) != generation:
                    continue  # withdrawn or restarted since
                self._send(vip)
                self._queued[vip] -= 1
                if not self._queued[vip]:
                    # the burst is over (or this was a periodic repeat): the next one is a rate away; counting
                    # the queued entries keeps this O(log n) where scanning the schedule made 1,000 VIPs O(n^2)
                    # the repeats are put on a 100 ms grid, so 1,000 VIPs wake this thread ten times a second
                    # at most instead of 333 times
                    repeat = math.ceil((due + self.rate) / REPEAT_GRID) * REPEAT_GRID
                    heapq.heappush(self._schedule, (repeat, next(self._tie), generation, vip))
                    self._queued[vip] = 1
