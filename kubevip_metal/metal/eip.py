"""The control-plane Elastic IP: assigned to the leader's device, and to nothing else, kept so.

Idempotent where kube-vip was not: when the EIP is already assigned here there is no write at all (kube-vip
unassigned and reassigned it on every leadership gain, an outage each time). Otherwise it is assigned here
first, then every other assignment is removed (kube-vip removed only `assignments[0]`); where the API refuses a
second assignment of the address (422, as Metal does for a /32), the others are removed first. A failed move is
retried with backoff until it works; while leading, the assignment is re-checked every `period` seconds and
moved back if someone moved it away. A follower never writes. Leadership is never given up because the API
is down: the EIP stays wanted and the state is logged.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable

from generic.logfmt import get_logger
from kubevip_metal.metal.client import Device, MetalClient
from kubevip_metal.metal.retry import MetalApiError

log = get_logger("kubevip_metal.metal.eip")

PERIOD = 5.0
MAX_BACKOFF = 30.0


class ElasticIp:
    def __init__(self, client: MetalClient, project_id: str, device: Device,
                 address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.project_id, self.device, self.address = client, project_id, device, address
        self.period, self._clock = period, clock
        self._leading = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.writes = 0
        self.moves = 0  # times this node took the EIP (assigned here, or removed from the others)
        self.converged_at: float | None = None
        # told of every move here: (address, this device, the devices it was removed from); the daemon's Events
        self.on_moved: Callable[[str, str, list[str]], None] | None = None
        self._thread = threading.Thread(target=self._run, name="metal-eip", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def set_leading(self, leading: bool) -> None:
        with self._lock:
            self._leading = leading
            self.converged_at = None
        self._wake.set()

    @property
    def leading(self) -> bool:
        with self._lock:
            return self._leading

    def ensure(self) -> bool:
        """One pass while leading; True when the EIP is assigned here only. Raises MetalApiError."""
        reservation = self.client.reservation(self.project_id, self.address)
        mine = [a for a in reservation.assignments if a[1] == self.device.id]
        others = [a for a in reservation.assignments if a[1] != self.device.id]
        if mine and not others:
            return True
        removed_from = [device for _, device in others]  # also when the 422 path below removes them first
        if not mine:
            if not self.leading:
                return False  # lost leadership meanwhile: a follower never writes
            try:
                self.client.assign(self.device.id, self.address, reservation.cidr)
                self.writes += 1
            except MetalApiError as exc:
                if exc.status != 422 or not others:
                    raise
                # Metal refuses a second assignment of a /32 ("already assigned"): make room, then take it
                self._unassign(others)
                others = []
                self.client.assign(self.device.id, self.address, reservation.cidr)
                self.writes += 1
        if not self._unassign(others):
            return False
        self.moves += 1
        log.info("eip.moved", address=str(self.address), to=self.device.id, removed_from=removed_from,
                 mono=round(self._clock(), 6))
        if self.on_moved is not None:
            self.on_moved(str(self.address), self.device.id, removed_from)
        return True

    def _unassign(self, assignments: list[tuple[str, str]]) -> bool:
        for assignment_id, _device in assignments:
            if not self.leading:
                return False
            self.client.unassign(assignment_id)
            self.writes += 1
        return True

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            wait = self.period
            if self.leading:
                try:
                    if self.ensure() and self.leading:
                        with self._lock:
                            if self.converged_at is None:
                                self.converged_at = self._clock()
                                log.info("eip.held", address=str(self.address), device=self.device.id,
                                         writes=self.writes, mono=round(self.converged_at, 6))
                    backoff = 1.0
                except MetalApiError as exc:
                    wait = backoff
                    log.error("eip.move_failed", address=str(self.address), error=str(exc), retry_in=round(wait, 1))
                    backoff = min(backoff * 2, MAX_BACKOFF)
            self._wake.wait(wait)
            self._wake.clear()
