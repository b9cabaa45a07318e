"""Election timings with real processes on the Kubernetes API emulator.

- hand-over after a release (SIGTERM of the leader): time until the successor leads (target p99 <= 100 ms,
  counted from the old leader's own `stopped_leading`);
- take-over after a crash (SIGKILL of the leader): time until the successor leads (target <= lease + 0.2 s),
  at the default 5/3/1 timers and at 1/0.75/0.2;
- leadership changes while every client has 200 ms of added API latency, default timers (target 0).

`--quick` runs 3 repetitions and 20 s of latency; the full run 20 repetitions and 10 minutes.
Prints a table, then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

PREREQUISITES = "bash benchmarks/prerequisites.sh"  # installs everything any benchmark needs

try:
    from kubevip_testbed.election import Candidate, leaders, ours, overlaps
    from kubevip_testbed.emulators.kubeapi import EmulatorThread, KubeApiEmulator, write_kubeconfig
    from kubevip_testbed.waiting import wait_for
except ModuleNotFoundError as exc:  # not the virtualenv's Python, or the test bed is not installed
    raise SystemExit(f"election.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

NODES = ["n1", "n2", "n3"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _last(candidate: Candidate, event: str) -> float:
    return float([e["mono"] for e in candidate.snapshot() if e["event"] == event][-1])


class Bench:
    def __init__(self, configs: dict[str, Path]) -> None:
        self.configs = configs
        self.all: list[Candidate] = []

    def cluster(self, lease: str, timers: str) -> dict[str, Candidate]:
        pool = {n: ours(n, self.configs[n], lease, timers).start() for n in NODES}
        self.all.extend(pool.values())
        wait_for(lambda: len(leaders(list(pool.values()))) == 1, timeout=30)
        return pool

    def replace(self, pool: dict[str, Candidate], old: Candidate, lease: str, timers: str) -> None:
        new = ours(old.name, self.configs[old.name], lease, timers)
        new.deaths, new.events = old.deaths, old.snapshot()
        self.all.append(new)
        pool[old.name] = new.start()

    def handover(self, runs: int) -> tuple[list[float], list[float]]:
        lease, timers = "bench-handover", "5,3,1"
        pool = self.cluster(lease, timers)
        from_stop, from_signal = [], []
        for _ in range(runs):
            time.sleep(1.5)  # followers watching again
            leader = pool[leaders(list(pool.values()))[0]]
            sent = time.monotonic()
            leader.terminate()
            wait_for(lambda: len(leaders(list(pool.values()))) == 1, timeout=10)
            successor = pool[leaders(list(pool.values()))[0]]
            started = _last(successor, "started_leading")
            from_stop.append(started - _last(leader, "stopped_leading"))
            from_signal.append(started - sent)
            self.replace(pool, leader, lease, timers)
            print(f"  handover run {len(from_stop)}: {from_stop[-1] * 1000:.1f} ms", file=sys.stderr)
        for candidate in pool.values():
            candidate.kill()
        return from_stop, from_signal

    def crash(self, runs: int, timers: str) -> list[float]:
        lease = f"bench-crash-{timers.replace(',', '-').replace('.', '_')}"
        pool = self.cluster(lease, timers)
        outages = []
        for _ in range(runs):
            time.sleep(float(timers.split(",")[0]) + 0.5)  # followers have observed the current record
            leader = pool[leaders(list(pool.values()))[0]]
            leader.kill()
            killed = leader.deaths[-1]
            wait_for(lambda leader=leader: any(c.is_leading() for c in pool.values() if c is not leader),
                       timeout=30)
            successor = next(c for c in pool.values() if c.is_leading())
            outages.append(_last(successor, "started_leading") - killed)
            self.replace(pool, leader, lease, timers)
            print(f"  crash {timers} run {len(outages)}: {outages[-1]:.3f} s", file=sys.stderr)
        for candidate in pool.values():
            candidate.kill()
        return outages

    def latency(self, emulator: KubeApiEmulator, seconds: float) -> int:
        lease, timers = "bench-latency", "5,3,1"
        pool = self.cluster(lease, timers)
        for node in NODES:
            emulator.set_fault(node, latency=0.2)
        before = sum(len(c.intervals()) for c in pool.values())
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(15.0, max(0.0, end - time.monotonic())))
            print(f"  latency: {seconds - max(0.0, end - time.monotonic()):.0f}/{seconds:.0f} s", file=sys.stderr)
        changes = sum(len(c.intervals()) for c in pool.values()) - before
        for node in NODES:
            emulator.clear_fault(node)
        for candidate in pool.values():
            candidate.kill()
        return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick
    runs, latency_seconds = (3, 20.0) if quick else (20, 600.0)
    emulator = KubeApiEmulator({f"tok-{n}": n for n in NODES})
    with tempfile.TemporaryDirectory() as tmp, EmulatorThread(emulator, listen=[("127.0.0.1", 0)]) as thread:
        configs = {n: write_kubeconfig(Path(tmp) / f"{n}.yaml", thread.urls[0], f"tok-{n}") for n in NODES}
        bench = Bench(configs)
        try:
            from_stop, from_signal = bench.handover(runs)
            crash_default = bench.crash(runs, "5,3,1")
            crash_fast = bench.crash(runs, "1,0.75,0.2")
            changes = bench.latency(emulator, latency_seconds)
        finally:
            for candidate in bench.all:
                candidate.kill()
        split_brain = len(overlaps(bench.all))

    rows = [
        ("hand-over after release, from stopped_leading", from_stop, "p99 <= 0.100 s"),
        ("hand-over after release, from SIGTERM", from_signal, ""),
        ("take-over after crash, 5/3/1", crash_default, "<= 5.2 s"),
        ("take-over after crash, 1/0.75/0.2", crash_fast, "<= 1.2 s"),
    ]
    print(f"{'measurement':<48} {'runs':>4} {'p50 s':>8} {'p99 s':>8} {'max s':>8}  target")
    for name, values, target in rows:
        print(f"{name:<48} {len(values):>4} {statistics.median(values):>8.3f} {_pct(values, 0.99):>8.3f} "
              f"{max(values):>8.3f}  {target}")
    print(f"{'leadership changes, 200 ms API latency, 5/3/1':<48} {latency_seconds:>4.0f}s {changes:>8d}"
          f" {'':>8} {'':>8}  0")
    print(f"{'overlapping leadership intervals (all runs)':<48} {'':>4} {split_brain:>8d} {'':>8} {'':>8}  0")
    print(json.dumps({
        "handover_p99_s": round(_pct(from_stop, 0.99), 4),
        "crash_takeover_5_3_1_p99_s": round(_pct(crash_default, 0.99), 3),
        "crash_takeover_1_075_02_p99_s": round(_pct(crash_fast, 0.99), 3),
        "leadership_changes_under_latency": changes,
        "latency_seconds": latency_seconds,
        "overlaps": split_brain,
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
