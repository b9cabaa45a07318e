"""Announcers: how a VIP reaches the network. The controller decides *what* is announced, these decide *how*.

`ArpAnnouncer` holds the VIP on an interface and announces it with gratuitous ARP / unsolicited NA: a burst at
takeover whose first packet leaves at once (in the caller's thread, before `announce` returns), then one
announcement every `rate` seconds for as long as the VIP is wanted. Each VIP has its own schedule.
`ensure` re-checks the kernel and repairs drift (address deleted by hand, interface flapped), so the
controller's reconciler can call it every period.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Protocol

from generic.addresses import Addresses, Vip
from generic.garp import GarpSender, send_unsolicited_na
from generic.logfmt import get_logger

log = get_logger("generic.announce")

BURST = (0.0, 0.05, 0.2, 0.5, 1.0)  # seconds after takeover; keepalived-like, first packet at once


class Announcer(Protocol):
    def announce(self, vip: Vip) -> bool:
        """Make the VIP reachable here; True if anything had to change."""
        ...

    def withdraw(self, vip: Vip) -> bool:
        """Stop announcing and give the VIP up; True if anything had to change."""
        ...

    def ensure(self, vip: Vip, wanted: bool) -> bool:
        """Reconcile one VIP with the kernel; True if a repair was needed."""
        ...

    def close(self) -> None: ...


class LocalAddressAnnouncer:
    """Only holds the address (e.g. on `lo`), announces nothing: for networks that route the VIP to us
    themselves (an Equinix Metal Elastic IP, a BGP-announced prefix)."""

    def __init__(self, addresses: Addresses | None = None) -> None:
        self._addresses = addresses or Addresses()
        self._lock = threading.Lock()
        self._wanted: set[Vip] = set()

    def announce(self, vip: Vip) -> bool:
        with self._lock:
            self._wanted.add(vip)
            added = self._addresses.add(vip)
        if added:
            log.info("vip.added", vip=str(vip), mono=round(time.monotonic(), 6))
        return added

    def withdraw(self, vip: Vip) -> bool:
        with self._lock:
            self._wanted.discard(vip)
            removed = self._addresses.remove(vip)
        if removed:
            log.info("vip.withdrawn", vip=str(vip), removed=True, mono=round(time.monotonic(), 6))
        return removed

    def ensure(self, vip: Vip, wanted: bool) -> bool:
        return self.announce(vip) if wanted else self.withdraw(vip)

    def close(self) -> None:
        for vip in list(self._wanted):
            self.withdraw(vip)
        self._addresses.close()


class ArpAnnouncer:
    """Layer 2: the address on the interface plus gratuitous ARP (IPv4) or unsolicited NA (IPv6)."""

    def __init__(self, rate: float, addresses: Addresses | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._addresses = addresses or Addresses()
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._schedule: list[tuple[float, int, int, Vip]] = []  # due, tie-breaker, generation, vip
        self._tie = itertools.count()
        self._generation: dict[Vip, int] = {}  # a withdrawn or re-announced VIP invalidates older entries
        self._link_was_up: dict[str, bool] = {}
        self._garp = GarpSender()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="arp-announcer", daemon=True)
        self._thread.start()

    # -- Announcer ----------------------------------------------------------------------------------------

    def announce(self, vip: Vip) -> bool:
        with self._lock:
            wanted = vip in self._generation
            added = self._addresses.add(vip)
            if wanted and not added:
                return False
            self._start_burst(vip)
        log.info("vip.announced" if not wanted else "vip.repaired", vip=str(vip), added=added,
                 mono=round(self._clock(), 6))
        return True

    def withdraw(self, vip: Vip) -> bool:
        with self._lock:
            wanted = self._generation.pop(vip, None) is not None
            removed = self._addresses.remove(vip)
        if wanted or removed:
            log.info("vip.withdrawn", vip=str(vip), removed=removed, mono=round(self._clock(), 6))
        return wanted or removed

    def ensure(self, vip: Vip, wanted: bool) -> bool:
        """Reconcile one VIP with the kernel; True if a repair was needed."""
        if not wanted:
            with self._lock:
                stray = vip not in self._generation and self._addresses.present(vip)
            if stray:
                log.warning("vip.stray_removed", vip=str(vip))
            return self.withdraw(vip) and stray
        with self._lock:
            up = self._addresses.link_up(vip.interface)
            came_up = up and not self._link_was_up.get(vip.interface, True)
            self._link_was_up[vip.interface] = up
        if came_up and vip in self._generation:
            log.warning("vip.link_up_reannounce", vip=str(vip))
            with self._lock:
                self._addresses.add(vip)
                self._start_burst(vip)
            return True
        return self.announce(vip) if up or vip not in self._generation else False

    def close(self) -> None:
        with self._lock:
            vips = list(self._generation)
        for vip in vips:
            self.withdraw(vip)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(2)
        self._garp.close()
        self._addresses.close()

    # -- schedule -----------------------------------------------------------------------------------------

    def _start_burst(self, vip: Vip) -> None:
        """Called with the lock held: send now, then queue the rest of the burst and the periodic repeats."""
        generation = self._generation.get(vip, 0) + 1
        self._generation[vip] = generation
        self._send(vip)
        now = self._clock()
        for offset in BURST[1:]:
            heapq.heappush(self._schedule, (now + offset, next(self._tie), generation, vip))
        self._wake.notify_all()

    def _send(self, vip: Vip) -> None:
        try:
            mac = self._addresses.mac(vip.interface)
            if vip.address.version == 4:
                self._garp.send(vip.interface, mac, vip.address)
            else:
                send_unsolicited_na(vip.interface, self._addresses.index(vip.interface), mac, vip.address)
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
                if not any(v == vip and g == generation for _, _, g, v in self._schedule):
                    # the burst is over (or this was a periodic repeat): the next one is a rate away
                    heapq.heappush(self._schedule, (due + self.rate, next(self._tie), generation, vip))
