"""Observing a lab cluster from the test process: which nodes hold the VIP, sampled every few milliseconds.

The nodes are read one after another, so one sweep is not one instant: a clean hand-over that falls between the
reads of the old and the new holder looks like two holders, and a real double can hide the same way. Every read
is therefore kept with its own window (monotonic time just before and just after it) and doubles are judged per
node from those windows (`holds`, `doubles`): a double is *certain* only when two nodes surely held at one
instant, and *possible* when their holding intervals might overlap given the read windows.
"""

from __future__ import annotations

import ipaddress
import socket
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for


@dataclass(frozen=True)
class Read:
    """One read of one node: monotonic time just before and just after it, and whether the node held the VIP."""

    node: str
    start: float
    end: float
    holding: bool


@dataclass(frozen=True)
class Hold:
    """One node's unbroken run of holding reads (a node is taken to hold between two consecutive holding reads).

    `first` and `last` are the windows of the run's first and last read. The node *surely* held from the end of
    the first to the start of the last (`sure`; None for a single read: it held at an unknown instant within that
    read). It *may* have held from the start of the last non-holding read before the run to the end of the first
    one after it (`maybe`; where sampling began or ended, the run's own outer edges: nothing is claimed outside
    the sampled span)."""

    node: str
    first: tuple[float, float]
    last: tuple[float, float]
    maybe: tuple[float, float]

    @property
    def sure(self) -> tuple[float, float] | None:
        return (self.first[1], self.last[0]) if self.last[0] >= self.first[1] else None


@dataclass(frozen=True)
class Double:
    """Two holds on different nodes that may overlap. `early` held first (the one late to let go), `late` came
    while `early` may still have held. `certain`: both surely held at one instant. `at_least` / `at_most`: the
    seconds both surely / possibly held (`at_least` is 0 when certain at one unknown instant only)."""

    early: Hold
    late: Hold
    certain: bool
    at_least: float
    at_most: float

    @property
    def since(self) -> float:
        """The earliest instant both may have held (monotonic)."""
        return max(self.early.maybe[0], self.late.maybe[0])

    def __str__(self) -> str:
        kind = "certain" if self.certain else "possible"
        return (f"{kind} double {self.early.node}->{self.late.node} at mono {self.since:.3f}: "
                f"{self.at_least * 1e3:.1f} to {self.at_most * 1e3:.1f} ms")


def holds(reads: Iterable[Read]) -> list[Hold]:
    """Every node's runs of holding reads, from reads in the order they were made (each node's in time order)."""
    by_node: dict[str, list[Read]] = {}
    for read in reads:
        by_node.setdefault(read.node, []).append(read)
    found = []
    for node, seq in by_node.items():
        i = 0
        while i < len(seq):
            if not seq[i].holding:
                i += 1
                continue
            j = i
            while j + 1 < len(seq) and seq[j + 1].holding:
                j += 1
            before = seq[i - 1].start if i > 0 else seq[i].start
            after = seq[j + 1].end if j + 1 < len(seq) else seq[j].end
            found.append(Hold(node, (seq[i].start, seq[i].end), (seq[j].start, seq[j].end), (before, after)))
            i = j + 1
    return sorted(found, key=lambda hold: hold.first[0])


def _surely_both(a: Hold, b: Hold) -> tuple[bool, float]:
    """Whether two holds surely share an instant, and for how long at least."""
    sa, sb = a.sure, b.sure
    if sa is not None and sb is not None and max(sa[0], sb[0]) <= min(sa[1], sb[1]):
        return True, min(sa[1], sb[1]) - max(sa[0], sb[0])
    # a read that saw one node holding, made entirely while the other surely held
    for sure, other in ((sa, b), (sb, a)):
        if sure is not None and any(sure[0] <= w[0] and w[1] <= sure[1] for w in (other.first, other.last)):
            return True, 0.0
    return False, 0.0


def doubles(reads: Iterable[Read]) -> list[Double]:
    """Every pair of holds on different nodes whose possible intervals overlap, certain ones flagged."""
    runs = holds(reads)
    found = []
    for index, early in enumerate(runs):
        for late in runs[index + 1:]:
            if late.node == early.node:
                continue
            at_most = min(early.maybe[1], late.maybe[1]) - max(early.maybe[0], late.maybe[0])
            certain, at_least = _surely_both(early, late)
            if at_most > 0 or certain:
                found.append(Double(early, late, certain, at_least, at_most))
    return found


def within_stop(double: Double, stops: Iterable[tuple[str, float, float]]) -> bool:
    """Whether the double may lie within a stop of its early node (`stops`: node, monotonic time the stop began,
    time it was over): the newcomer may have added the VIP after the stop began, and the early node may have let
    go before it was over."""
    return any(node == double.early.node and double.late.first[1] >= began and double.early.last[0] <= over
               for node, began, over in stops)


class Sampler:
    """Reads which live nodes hold the VIP every few milliseconds, for the whole test, each read timed.

    `double_holders()` is the proof's list: doubles that surely happened. `possible_doubles()` and `report()`
    tell how close it came. Nodes in `dead` (crashed or unplugged: their stale address reaches nobody) count as
    not holding from the moment they are added."""

    def __init__(self, lab: LabCluster, vip: str | None = None, period: float = 0.005) -> None:
        self.lab, self.vip, self.period = lab, vip or lab.vip, period
        self.dead: set[str] = set()
        self.reads: list[Read] = []
        self.sweeps = 0
        self._error: BaseException | None = None
        self._handles: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        family = socket.AF_INET6 if ipaddress.ip_address(self.vip).version == 6 else socket.AF_INET
        try:
            while not self._stop.wait(self.period):
                for node, handle in self._handles.items():
                    start = time.monotonic()
                    if node in self.dead:
                        self.reads.append(Read(node, start, start, False))
                        continue
                    holding = any(entry.get_attr("IFA_ADDRESS") == self.vip for entry in handle.get_addr(family=family))
                    self.reads.append(Read(node, start, time.monotonic(), holding))
                self.sweeps += 1
        except BaseException as exc:  # reported by __exit__: a sampler that died proves nothing
            self._error = exc

    def __enter__(self) -> Sampler:
        from pyroute2 import NetNS

        for node in self.lab.nodes:  # handles of our own: the lab's are shared with the test thread under a lock
            self._handles[node] = NetNS(self.lab.rig.ns(node), groups=0)
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        for handle in self._handles.values():
            handle.close()
        if self._error is not None and exc_type is None:
            raise RuntimeError(f"the sampler stopped early: {self._error!r}") from self._error

    def holds(self, node: str | None = None) -> list[Hold]:
        return [hold for hold in holds(list(self.reads)) if node is None or hold.node == node]

    def doubles(self) -> list[Double]:
        return doubles(list(self.reads))

    def double_holders(self) -> list[Double]:
        """Doubles that surely happened: two nodes held the VIP at one instant."""
        return [double for double in self.doubles() if double.certain]

    def possible_doubles(self) -> list[Double]:
        """Overlaps the read windows cannot rule out (a hand-over faster than the sampling, or a stalled read)."""
        return [double for double in self.doubles() if not double.certain]

    def report(self) -> str:
        """One paragraph for the log: the sampling's resolution, then every double, certain and possible."""
        reads = list(self.reads)
        windows = [read.end - read.start for read in reads if read.end > read.start] or [0.0]
        last: dict[str, float] = {}
        gaps = []
        for read in reads:
            if read.node in last:
                gaps.append(read.start - last[read.node])
            last[read.node] = read.end
        lines = [f"sampler: {self.sweeps} sweeps, {len(reads)} reads; read ms p50 "
                 f"{statistics.median(windows) * 1e3:.2f} max {max(windows) * 1e3:.2f}; "
                 f"gap between a node's reads ms max {max(gaps or [0.0]) * 1e3:.1f}"]
        all_doubles = self.doubles()
        for certain in (True, False):
            chosen = [str(double) for double in all_doubles if double.certain is certain]
            lines.append(f"{'certain' if certain else 'possible'} doubles: {len(chosen)}" +
                         "".join(f"\n  {line}" for line in chosen))
        return "\n".join(lines)


def settled(lab: LabCluster, timeout: float = 20.0) -> str:
    """Wait until exactly one node holds the VIP and it is the Lease holder; return it."""
    seen: list[str] = []

    def one_holder_named_by_the_lease() -> bool:
        holders = lab.holders()  # read once: a second read may see the VIP move on
        seen[:] = holders
        return len(holders) == 1 and holders == [lab.lease_holder()]

    wait_for(one_holder_named_by_the_lease, timeout=timeout)
    return seen[0]
