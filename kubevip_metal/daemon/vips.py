"""The VIP controller: the one place that holds the desired state of this node's VIPs, and keeps the kernel and
the announcers true to it.

Desired state is a map from *owner* (the control plane; later each Service) to a claim: the VIPs the owner is
responsible for, and whether it wants them here now (it leads). A VIP is wanted while at least one owner wants
it, and given up only when the last one lets go, so two owners sharing an address (the control plane and a
Service on the same IP, kube-vip's common case) never take it from each other. A VIP that owners are responsible
for but nobody wants is kept *absent*: that is what removes the leftover of a crash, or an address someone added
by hand on a follower.

Changes apply at once, in the caller's thread (an election callback: the first gratuitous ARP leaves before
`claim` returns). A reconciler thread compares the kernel with the desired state and repairs drift both ways,
logging every repair. It is event-driven: it blocks on the kernel's address and link notifications
(`generic.addresses.AddressEvents`) and runs a pass as soon as one arrives (a deleted VIP is back within
milliseconds, a cable plugged in again is re-announced at once), plus a slow safety pass every `SAFETY_SECONDS`
(10 s) for what no notification reports (an announcer's own drift, a lost notification). At rest it does not
wake up at all between safety passes. Without a change feed (the in-process fakes) it polls every
`POLL_SECONDS`. The order is fixed: hold the address, then announce; stop announcing, then drop the address.
All netlink use happens under one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from generic.addresses import AddressError, Addresses, AddressEvents, Vip
from generic.announce import Announcer, Batching
from generic.logfmt import get_logger

log = get_logger("kubevip_metal.vips")

SAFETY_SECONDS = 10.0  # between two passes when the kernel reports no change
POLL_SECONDS = 1.0  # between two passes without a change feed
BUSY_SHARE = 0.1  # the reconciler never keeps more than this share of the time busy


@dataclass(frozen=True)
class Claim:
    vips: frozenset[Vip]
    active: bool


class VipController:
    def __init__(self, addresses: Addresses, announcers: Sequence[Announcer], *,
                 period: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`period`: the longest time between two passes (default: `SAFETY_SECONDS` with the kernel's change feed,
        `POLL_SECONDS` without one)."""
        self.addresses, self.announcers = addresses, list(announcers)
        self._period = period
        self.period = POLL_SECONDS if period is None else period  # settled in start(), once the feed is known
        self._events: AddressEvents | None = None
        self._clock = clock
        self._claims: dict[str, Claim] = {}
        self._announced: set[Vip] = set()  # what the announcers have been told to announce
        self._released: set[Vip] = set()  # let go of by every owner: removed once, then no longer policed
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.repairs = 0
        # told of every drift repair: (vip, the owners it was repaired for, what was done); the daemon's Events
        self.on_repaired: Callable[[Vip, list[str], str], None] | None = None
        self.last_pass = time.monotonic()  # when the reconciler last finished a pass

    def attach(self, announcers: Sequence[Announcer]) -> None:
        """Add announcers (the mode's, once they could be built); VIPs already announced are announced to them."""
        with self._lock:
            for announcer in announcers:
                self.announcers.append(announcer)
                for vip in sorted(self._announced, key=str):
                    announcer.announce(vip)

    # -- desired state ------------------------------------------------------------------------------------

    def claim(self, owner: str, vips: Iterable[Vip], active: bool) -> None:
        """`owner` is responsible for `vips` and wants them here now if `active`; applied at once."""
        with self._lock:
            before = self._claims.get(owner)
            claim = Claim(frozenset(vips), active)
            self._claims[owner] = claim
            if before is not None:
                self._released |= before.vips - self._policed()
            self._apply()

    def claim_many(self, claims: Mapping[str, tuple[Iterable[Vip], bool] | None]) -> None:
        """Many owners' claims (None: release) applied in one pass: a burst of 10,000 Services costs one diff and,
        by BGP, one advertisement, not one per Service."""
        with self._lock:
            before = self._policed()
            for owner, claim in claims.items():
                if claim is None:
                    self._claims.pop(owner, None)
                else:
                    vips, active = claim
                    self._claims[owner] = Claim(frozenset(vips), active)
            self._released |= before - self._policed()
            self._apply()

    def release(self, owner: str) -> None:
        """`owner` lets go of all its VIPs (each is withdrawn unless another owner still wants it)."""
        with self._lock:
            claim = self._claims.pop(owner, None)
            if claim is None:
                return
            self._released |= claim.vips - self._policed()
            self._apply()

    def wanted(self) -> frozenset[Vip]:
        with self._lock:
            return frozenset().union(*(c.vips for c in self._claims.values() if c.active))

    def owners_of(self, vip: Vip) -> list[str]:
        with self._lock:
            return sorted(owner for owner, claim in self._claims.items() if claim.active and vip in claim.vips)

    def _policed(self) -> frozenset[Vip]:
        return frozenset().union(*(c.vips for c in self._claims.values()))

    # -- applying it --------------------------------------------------------------------------------------

    def _apply(self) -> None:
        """Called with the lock held: announcers and kernel follow the desired state."""
        batching = [a for a in self.announcers if isinstance(a, Batching)]
        for announcer in batching:
            announcer.hold()
        try:
            with self.addresses.batch():
                self._apply_held()
        finally:
            for announcer in batching:
                announcer.flush()

    def _owners_index(self) -> dict[Vip, list[str]]:
        index: dict[Vip, list[str]] = {}
        for owner, claim in sorted(self._claims.items()):
            if claim.active:
                for vip in claim.vips:
                    index.setdefault(vip, []).append(owner)
        return index

    def _apply_held(self) -> None:
        wanted = self.wanted()
        for vip in sorted(self._announced - wanted, key=str):
            self._give_up(vip)
        for vip in sorted(self._released - wanted, key=str):
            self._remove(vip)
        self._released.clear()
        taking = sorted(wanted - self._announced, key=str)
        owners = self._owners_index() if taking else {}
        for vip in taking:
            self._take(vip, owners.get(vip))

    def _take(self, vip: Vip, owners: list[str] | None = None) -> bool:
        try:
            added = self.addresses.add(vip)
        except AddressError as exc:
            log.error("vip.add_failed", vip=str(vip), error=str(exc))  # the reconciler tries again
            return False
        if added:
            log.info("vip.added", vip=str(vip), owners=owners if owners is not None else self.owners_of(vip),
                     mono=round(self._clock(), 6))
        for announcer in self.announcers:
            announcer.announce(vip)
        self._announced.add(vip)
        return True

    def _give_up(self, vip: Vip) -> None:
        for announcer in reversed(self.announcers):
            announcer.withdraw(vip)
        self._announced.discard(vip)
        self._remove(vip)

    def _remove(self, vip: Vip) -> bool:
        try:
            removed = self.addresses.remove(vip)
        except AddressError as exc:
            log.error("vip.remove_failed", vip=str(vip), error=str(exc))  # the reconciler tries again
            return False
        if removed:
            log.info("vip.withdrawn", vip=str(vip), removed=True, mono=round(self._clock(), 6))
        return removed

    # -- reconciling --------------------------------------------------------------------------------------

    def reconcile(self) -> int:
        """One pass: every wanted VIP present and announced, every policed but unwanted VIP absent. Returns the
        number of repairs."""
        repairs = 0
        with self._lock, self.addresses.batch():
            wanted = self.wanted()
            for vip in sorted(wanted, key=str):
                try:
                    if vip not in self._announced:
                        repairs += self._take(vip)
                    elif self.addresses.add(vip):
                        log.warning("reconcile.repaired", vip=str(vip), leading=True, what="address re-added")
                        self._repaired(vip, self.owners_of(vip), "the address was missing; re-added and announced")
                        for announcer in self.announcers:
                            announcer.announce(vip)
                        repairs += 1
                    else:
                        repairs += sum(announcer.refresh(vip) for announcer in self.announcers)
                except Exception as exc:
                    log.error("reconcile.failed", vip=str(vip), error=str(exc))
            for vip in sorted(self._policed() - wanted, key=str):
                try:
                    if self.addresses.remove(vip):
                        log.warning("vip.stray_removed", vip=str(vip))
                        log.warning("reconcile.repaired", vip=str(vip), leading=False, what="stray address removed")
                        self._repaired(vip, sorted(o for o, c in self._claims.items() if vip in c.vips),
                                       "present while not wanted here; removed")
                        repairs += 1
                except Exception as exc:
                    log.error("reconcile.failed", vip=str(vip), error=str(exc))
            self.repairs += repairs
        return repairs

    def _repaired(self, vip: Vip, owners: list[str], what: str) -> None:
        hook = self.on_repaired
        if hook is not None:
            try:
                hook(vip, owners, what)
            except Exception as exc:  # telling about a repair never stops the next one
                log.error("reconcile.hook_failed", vip=str(vip), error=f"{type(exc).__name__}: {exc}")

    def start(self) -> None:
        """First pass now (it clears what a crash left behind), then one on every change the kernel reports and
        at least one every period."""
        with self._lock:
            for vip in sorted(self._policed() - self.wanted(), key=str):
                if self.addresses.remove(vip):  # AddressError goes to the caller: it cannot start like this
                    log.warning("vip.leftover_removed", vip=str(vip))
        if self._thread is None:
            try:
                self._events = self.addresses.events()
            except OSError as exc:  # no netlink notifications here: poll instead
                log.warning("reconcile.polling", reason=f"no address change feed: {exc}")
                self._events = None
            if self._period is None:
                self.period = SAFETY_SECONDS if self._events is not None else POLL_SECONDS
            self.last_pass = time.monotonic()
            self._thread = threading.Thread(target=self._loop, name="vip-reconciler", daemon=True)
            self._thread.start()

    def _wait(self, timeout: float) -> bool:
        """Until the kernel reports a change (True), `timeout` passes or stop() (False)."""
        if self._events is None:
            self._stop.wait(max(0.0, timeout))
            return False
        return self._events.wait(max(0.0, timeout))

    def _loop(self) -> None:
        """A pass on every reported change and at least one every `period`, but never more than a tenth of the
        time busy: one pass over 10,000 VIPs (a dump of every address) takes about 1.5 s here, so then the passes
        space out to keep the CPU for the rest. Our own adds and removes are changes too: each costs one more
        pass, which finds nothing to do."""
        pause = 0.0  # the least time before the next pass, after a long one
        while not self._stop.is_set():
            changed = self._wait(max(self.period, pause) - (time.monotonic() - self.last_pass))
            if self._stop.is_set():
                break
            if changed and pause:
                self._stop.wait(max(0.0, self.last_pass + pause - time.monotonic()))
                if self._events is not None:
                    self._events.drain()  # what came meanwhile is seen by this pass
            elif not changed and time.monotonic() - self.last_pass < self.period:
                continue  # interrupted early
            started = time.monotonic()
            self.reconcile()
            self.last_pass = time.monotonic()
            took = self.last_pass - started
            pause = took * (1 - BUSY_SHARE) / BUSY_SHARE if took > 0.01 else 0.0

    def alive(self, now: float | None = None) -> bool:
        """The reconciler thread runs and finished a pass recently (a liveness probe fails a wedged one)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        now = time.monotonic() if now is None else now
        return now - self.last_pass < max(30.0, 3 * self.period)

    def stop(self) -> None:
        """Every owner lets go (nothing is left on the interface), then the announcers close."""
        self._stop.set()
        if self._events is not None:
            self._events.interrupt()
        if self._thread is not None:
            self._thread.join(2)
        if self._events is not None:
            self._events.close()
            self._events = None
        with self._lock:
            for owner in list(self._claims):
                self.release(owner)
        for announcer in self.announcers:
            announcer.close()
