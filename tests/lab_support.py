"""Observing a lab cluster from the test process: which nodes hold the VIP, sampled every few milliseconds."""

from __future__ import annotations

import threading
import time

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for


class Sampler:
    """Samples which live nodes hold the VIP every few milliseconds, for the whole test."""

    def __init__(self, lab: LabCluster, vip: str | None = None) -> None:
        self.lab, self.vip = lab, vip
        self.dead: set[str] = set()  # crashed or unplugged: their stale address reaches nobody
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            holders = [n for n in self.lab.holders(self.vip) if n not in self.dead]
            self.samples.append((time.monotonic(), holders))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def double_holders(self) -> list[tuple[float, list[str]]]:
        return [sample for sample in self.samples if len(sample[1]) > 1]


def settled(lab: LabCluster) -> str:
    """Wait until exactly one node holds the VIP and it is the Lease holder; return it."""
    wait_for(lambda: len(lab.holders()) == 1 and lab.holders() == [lab.lease_holder()])
    return lab.holders()[0]
