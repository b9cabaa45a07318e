"""The control-plane VIP by BGP: ours (Lease + ExaBGP, term-ordered MED) against kube-vip v1.0.0 (Lease + GoBGP),
seen at a real router and by a client behind it; and a burst of prefixes from one speaker to the router's FIB.

One rig and one run for everyone: three node namespaces, BIRD 2 in the router namespace (AS 65000, one passive
session per node, every node in AS 65001), and a client that reaches the VIP 203.0.113.10 (outside the LAN)
only through the router: what the client sees follows the router's kernel FIB. One real kube-apiserver (etcd
behind it) serves the Lease through the fault proxy, each node with its own ServiceAccount token (kube-vip v1.0.0
speaks protobuf, which the emulator does not).

- ours: `kube-vip-metal manager --controlplane --bgp --leaderElection --bgppeers ROUTER:65000 --localAS 65001`
  per node, at kube-vip's defaults (Lease 5/3/1, hold 30 s) and at short timers (3/2/1, hold 9 s);
- kube-vip v1.0.0, control plane in BGP mode with Lease election (`bgp_enable`, `bgp_routerid`, `bgp_as`,
  `bgp_peers` in its environment, VIP on `lo`: see kubevip_testbed/peers/kubevip.py), the same timers.

The router: by default BIRD breaks a tie between equal routes from two nodes by preferring the **older** one
(`prefer older on`: FRR's tie-break; BIRD's own is the lower router ID) and installs one best path in the kernel
(`merge paths off`), so after a crash the dead leader's lingering route would win every time unless the new
leader's route is better on its own merits (ours: a lower MED for a newer term). `--tiebreak router-id` runs
BIRD's default instead (then it depends on which node crashed). BIRD's hold time matches the speakers'.

Scenarios: **crash** = the leader's cable pulled first (nothing more leaves it: its TCP session lingers at the
router) and then its process SIGKILLed, a power loss; **graceful** = SIGTERM to the leader. After each run the node
comes back as after a reboot, and the next run waits until the cluster is settled: one leader holding the VIP,
every node's session Established at the router, the router's only route the leader's, every follower up for a
lease duration. Measured per run: the client's outage (ICMP echo through the router every 2 ms), when the router's
FIB switched to the new leader (rtnetlink notifications in the router namespace: `kubevip_testbed.bird.FibMonitor`),
whether the dead leader's session was still Established at that moment, and leadership (ours:
`election.started_leading`, CLOCK_MONOTONIC `mono`; kube-vip: its klog "successfully acquired lease") to the
route in the FIB.

Then one `generic.bgp.exabgp.ExaBgpSpeaker` in a node namespace, peered with a fresh BIRD, advertises 1,000 and
10,000 /32s (198.18.0.0/15) at once and withdraws them, timed to the last prefix in (out of) the router's kernel
FIB, at ExaBGP's default `reactor.speed` (1.0) and at 0.1. RSS and idle CPU at rest: our manager plus its ExaBGP
child (and the relay ExaBGP runs), kube-vip's one process.

`--quick`: two runs of each scenario at the short timers only, one burst of each size at the default speed, 5 s
steady windows (about two minutes). The full run: 8 runs per case and scenario (4 for kube-vip's crash at hold 30,
which costs the hold time each), three bursts per size and speed, 30 s steady windows (about 14 minutes). Progress
goes to stderr; stdout gets the tables, then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what every benchmark shares (benchmarks/ is on sys.path; common.py needs only the standard library)
import common
from common import PREREQUISITES, Timeout, say, wait_for, wait_for_optional

try:
    from generic.bgp.exabgp import ExaBgpSpeaker
    from generic.bgp.peers import BgpPeer
    from generic.bgp.speaker import IPNetwork, Route, SpeakerSettings
    from kubevip_testbed import bird as bird_driver
    from kubevip_testbed.bird import Bird, BirdPeer, FibMonitor
    from kubevip_testbed.lab.api_backend import ApiBackend
    from kubevip_testbed.lab.cluster import LabCluster
    from kubevip_testbed.peers import apiserver as real_apiserver
    from kubevip_testbed.peers import kubevip
    from kubevip_testbed.peers.kubevip import KubeVipBgp, KubeVipNode
    from kubevip_testbed.rig import prerequisites_missing
except ModuleNotFoundError as exc:  # not the virtualenv's Python, or the test bed is not installed
    raise SystemExit(f"bgp.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

# the sibling benchmark's helpers (benchmarks/ is on sys.path when this file runs), imported after the test bed is
# known to be there, so that a missing test bed is reported as bgp.py's
import failover
from failover import WALL_MINUS_MONOTONIC, Prober, _stat, _stat_row, timers_key, timers_label

VIP = "203.0.113.10"
ROUTE = f"{VIP}/32"
ROUTER_AS, NODE_AS = 65000, 65001
DEFAULT, SHORT = ((5.0, 3.0, 1.0), 30), ((3.0, 2.0, 1.0), 9)  # (Lease timers, BGP hold time)
CASES = ("ours", "ours-short", "kube-vip", "kube-vip-short")
QUICK = ("ours-short", "kube-vip-short")
GRACEFUL_TARGET = 0.1
CRASH_MARGIN = 0.3  # issue #11: crash failover <= lease + 0.3 s p99, whatever the hold time
LEAD_TO_FIB_TARGET_MS = 50.0
PREFIX_TARGETS = {1000: 1.0, 10000: 5.0}
REACTOR_SPEEDS = (1.0, 0.1)


def hold_label(timers: Sequence[float], hold: int) -> str:
    return f"{timers_label(timers)}, hold {hold}"


# -- implementations ------------------------------------------------------------------------------------------


class RoutedOurs(failover.Ours):
    """Our managers in a BGP mode (bgp.py's and peering.py's): the VIP on lo, and a crash pulls the cable first,
    so nothing more leaves the node (not even ExaBGP's FIN) and its session lingers at the router."""

    device = "lo"

    def crash(self, node: str) -> None:
        self.lab.rig.link_down(node)
        self.lab.kill(node)


class BgpOurs(RoutedOurs):
    """Our managers in BGP mode (VIP on lo, host route through ExaBGP, MED from the Lease's term)."""

    def __init__(self, lab: LabCluster, timers: tuple[float, float, float], hold: int) -> None:
        super().__init__(lab, timers)
        self.hold = hold
        self.name = f"kube-vip-metal {hold_label(timers, hold)}"
        self.key = f"ours_{{scenario}}_{timers_key(timers)}_h{hold}"

    def start_all(self) -> None:
        self.lab.mode_args = ["--bgp", "--leaderElection", "--bgppeers", f"{self.lab.rig.ipv4('router')}:{ROUTER_AS}",
                              "--localAS", str(NODE_AS), "--bgpHoldTimer", str(self.hold)]
        super().start_all()

    def leadership_after(self, node: str, moment: float) -> float | None:
        return wait_for_optional(lambda: self.tails[node].first("election.started_leading", moment), 2.0)


class BgpKubeVip(failover.KubeVip):
    """kube-vip v1.0.0 on every node in BGP mode, the same Lease, VIP, API server, router and rig as ours."""

    device = "lo"

    def __init__(self, lab: LabCluster, timers: tuple[float, float, float], hold: int) -> None:
        super().__init__(lab, kubevip.TESTED_VERSION, timers)
        self.hold = hold
        self.name = f"kube-vip {kubevip.TESTED_VERSION} {hold_label(timers, hold)}"
        self.key = f"kube_vip_{{scenario}}_{timers_key(timers)}_h{hold}"
        settings = KubeVipBgp(lab.rig.ipv4("router"), ROUTER_AS, NODE_AS, hold_time=hold, keepalive=max(1, hold // 3))
        self.peers = {node: KubeVipNode(lab, node, kubevip.TESTED_VERSION, [int(t) for t in timers], bgp=settings)
                      for node in lab.nodes}

    def crash(self, node: str) -> None:
        self.lab.rig.link_down(node)
        self.peers[node].kill()

    def graceful(self, node: str) -> list[str]:
        code = self.peers[node].terminate()  # BGP mode returns from its manager and exits 0 (ARP mode panics: 2)
        return [] if code == 0 else [f"kube-vip on {node} exited {code} on SIGTERM"]

    def leadership_after(self, node: str, moment: float) -> float | None:
        wall = moment + WALL_MINUS_MONOTONIC
        peer = self.peers[node]
        return wait_for_optional(lambda: next((a.timestamp() - WALL_MINUS_MONOTONIC for a in peer.acquisitions()
                                               if a.timestamp() > wall), None), 2.0)


Speaker = BgpOurs | BgpKubeVip


# -- the runs -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    case: str
    scenario: str
    victim: str
    successor: str
    outage: float  # the client's longest gap in replies
    below_threshold: bool = False
    event_to_lead: float | None = None  # the fault to the successor's leadership
    event_to_fib: float | None = None  # the fault to the router's FIB forwarding to the successor only
    lead_to_fib: float | None = None
    fib_to_client: float | None = None  # the FIB switch to the client's first reply
    dead_session_up: bool | None = None  # crash: the dead leader's session still Established at the switch
    dead_route_kept: bool | None = None  # crash: ... and its route still in BIRD's table
    fib_path: list[str] = field(default_factory=list)  # the router's next hops for the VIP, as they changed
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, lab: LabCluster, prober: Prober, fib: FibMonitor, tiebreak: str) -> None:
        self.lab, self.prober, self.fib, self.tiebreak = lab, prober, fib, tiebreak
        self.router: Bird | None = None
        self.runs: list[Run] = []
        self.failures: list[str] = []
        self.anomalies: list[str] = []

    def ip(self, node: str) -> str:
        return self.lab.rig.ipv4(node)

    def start_router(self, hold: int) -> Bird:
        """A BIRD for one case: its hold time is the speakers' (BIRD's keepalive is a third of its own)."""
        self.stop_router()
        peers = [BirdPeer(node, self.ip(node), NODE_AS) for node in self.lab.nodes]
        self.router = Bird(self.lab.rig, "router", peers=peers, asn=ROUTER_AS, hold_time=hold, merge_paths=False,
                           prefer_older=self.tiebreak == "older").start()
        return self.router

    def stop_router(self) -> None:
        if self.router is not None:
            self.router.stop()
            self.router = None

    def settled(self, impl: Speaker) -> str | None:
        """The leader, when it alone holds the VIP and the Lease, every session is Established at the router and
        the router's only route for the VIP is the leader's (in BIRD's table and in the kernel)."""
        leader = impl.holder()
        if leader is None or self.fib.hops() != (self.ip(leader),):
            return None
        assert self.router is not None
        protocols = self.router.protocols()
        if not all(protocols.get(node) and protocols[node].established for node in self.lab.nodes):
            return None
        from_nodes = [node for node in self.lab.nodes if self.router.routes(node)]
        return leader if from_nodes == [leader] else None

    def ready(self, impl: Speaker) -> str:
        holder = wait_for(f"{impl.name}: settled", lambda: self.settled(impl), 90, poll=0.05)
        wait_for(f"{impl.name}: followers up", impl.followers_ready, 60)
        time.sleep(impl.settle_extra)  # every follower has watched the Lease for a whole term
        wait_for(f"{impl.name}: client replies", self.prober.flowing, 15)
        now = wait_for(f"{impl.name}: still settled", lambda: self.settled(impl), 10, poll=0.05)
        if now != holder:
            self.anomalies.append(f"{impl.name}: leader moved {holder} -> {now} while settled (no fault injected)")
        return now

    def case(self, impl: Speaker, scenario: str, runs: int) -> None:
        say(f"{impl.name}, {scenario}: {runs} runs")
        done, attempts = 0, 0
        while done < runs and attempts < runs + 3:
            attempts += 1
            try:
                self.runs.append(self.one(impl, scenario))
                done += 1
            except (Timeout, AssertionError, OSError, subprocess.SubprocessError) as exc:
                message = f"{impl.name} {scenario} attempt {attempts}: {exc}"
                say(f"  FAILED: {message}")
                self.failures.append(message)
                self.recover(impl)

    def one(self, impl: Speaker, scenario: str) -> Run:
        assert self.router is not None
        victim = self.ready(impl)
        event_at = time.monotonic()
        notes = impl.fault(scenario, victim)
        # the hold time bounds how long a dead leader's route can stay preferred
        limit = impl.timers[0] * 3 + impl.hold + 15
        successor = wait_for(f"{impl.name}: successor", lambda: impl.holder(exclude=[victim]), limit, poll=0.01)
        hop = self.ip(successor)
        fib_at = self.fib.when(lambda hops: hops == (hop,), after=event_at, timeout=limit)
        if fib_at is None:
            raise Timeout(f"{impl.name}: the router's FIB never forwarded to {successor} alone: "
                          f"{self.fib.history()[-4:]}")
        run = Run(impl.name, scenario, victim, successor, 0.0, event_to_fib=fib_at - event_at, notes=notes)
        if scenario == "crash":  # read at once: was the dead leader still peered when its successor won?
            run.dead_session_up = self.router.protocol(victim).established
            run.dead_route_kept = bool(self.router.routes(victim))
        names = {self.ip(node): node for node in self.lab.nodes}
        run.fib_path = [",".join(names.get(h, h) for h in hops) or "-"
                        for at, hops in self.fib.history() if event_at - 0.5 < at <= fib_at + 0.001][-6:]
        try:
            outage, _ = self.prober.outage_after(impl.name, event_at)
            run.outage = outage[1] - outage[0]
            run.fib_to_client = outage[1] - fib_at
        except Timeout:
            if not self.prober.replied_after(fib_at):
                raise
            run.outage, run.below_threshold = 3 * self.prober.interval, True  # never a gap of three probes
        lead = impl.leadership_after(successor, event_at)
        if lead is not None:
            run.event_to_lead = lead - event_at
            run.lead_to_fib = fib_at - lead
        else:
            run.notes.append(f"{successor}: no leadership logged after the event")
        if impl.reboot(victim, scenario) and scenario == "graceful":  # the victim back as after a reboot
            self.anomalies.append(f"{impl.name}: the stopped leader still held {VIP} on lo after its SIGTERM exit")
        dead = "" if run.dead_session_up is None else \
            f", dead session {'up' if run.dead_session_up else 'down'} at the switch"
        lead_text = f", lead->FIB {run.lead_to_fib * 1000:.1f} ms" if run.lead_to_fib is not None else ""
        say(f"  {scenario} {victim}->{successor}: outage {run.outage:.3f} s, FIB switch {run.event_to_fib:.3f} s"
            f"{lead_text}{dead}; FIB {' > '.join(run.fib_path)}{' NOTE ' + '; '.join(run.notes) if run.notes else ''}")
        return run

    def recover(self, impl: Speaker) -> None:
        impl.replug_and_revive()
        wait_for(f"{impl.name}: recovery", lambda: self.settled(impl), 90, poll=0.05)

    def steady(self, impl: Speaker, seconds: float) -> dict[str, Any]:
        """RSS and CPU over `seconds` at rest, per node: the daemon and every process below it (ExaBGP, its relay)."""
        leader = self.ready(impl)
        pids = impl.measured_pids()
        trees = {node: [pid, *descendants(pid)] for node, pid in pids.items()}
        say(f"{impl.name}: steady state for {seconds:g} s (leader {leader}), sampling CPU and RSS of "
            + ", ".join(f"{node} {len(tree)} processes" for node, tree in trees.items()))
        before = {pid: _stat(pid)[0] for tree in trees.values() for pid in tree}
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = {pid: _stat(pid) for tree in trees.values() for pid in tree}
        if impl.holder() != leader:
            self.anomalies.append(f"{impl.name}: leader changed during the steady window")
        out: dict[str, dict[str, float]] = {}
        for node, (daemon, *children) in trees.items():
            out[node] = {"daemon_rss": after[daemon][1], "children_rss": sum(after[p][1] for p in children),
                         "daemon_cpu": (after[daemon][0] - before[daemon]) / elapsed * 100,
                         "children_cpu": sum(after[p][0] - before[p] for p in children) / elapsed * 100}
        say("  " + ", ".join(f"{n}{'*' if n == leader else ''} cpu {v['daemon_cpu'] + v['children_cpu']:.3f} % "
                             f"rss {v['daemon_rss'] + v['children_rss']:.1f} MB" for n, v in out.items()))
        return {"name": impl.name, "leader": leader, "seconds": elapsed, "nodes": out,
                "processes": max(len(tree) for tree in trees.values())}


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                text = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(text[text.rindex(")") + 2:].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


# -- a burst of prefixes from one speaker ---------------------------------------------------------------------


@dataclass
class Burst:
    prefixes: int
    reactor_speed: float
    announce: float  # advertise() called -> the last prefix in the router's FIB
    withdraw: float  # advertise({}) called -> the last one gone
    queued: float  # how long advertise() itself took


def bursts(lab: LabCluster, sizes: Sequence[int], speeds: Sequence[float], runs: int) -> list[Burst]:
    """One ExaBgpSpeaker in n1's namespace against a fresh BIRD with one peer, as tests/test_bgp_speaker.py does."""
    bird = Bird(lab.rig, "router", peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)], asn=ROUTER_AS).start()
    try:
        return [burst for speed in speeds for burst in _bursts_at(lab, bird, speed, sizes, runs)]
    finally:
        bird.stop()


def _bursts_at(lab: LabCluster, bird: Bird, speed: float, sizes: Sequence[int], runs: int) -> list[Burst]:
    me = ipaddress.IPv4Address(lab.rig.ipv4("n1"))
    peer = BgpPeer(ipaddress.ip_address(lab.rig.ipv4("router")), ROUTER_AS)
    settings = SpeakerSettings(me, NODE_AS, (peer,), hold_time=9, source_ip=me)
    speaker = ExaBgpSpeaker(settings, command_prefix=["ip", "netns", "exec", lab.rig.ns("n1")], reactor_speed=speed)
    out: list[Burst] = []
    try:
        bird.wait_established("n1", timeout=30)
        wait_for("speaker established", lambda: speaker.sessions()[peer.address].established, 15)
        for size in sizes:
            prefixes: dict[IPNetwork, Route] = {
                ipaddress.ip_network(f"198.18.{i // 250}.{i % 250}/32"): Route() for i in range(size)}
            fib = FibMonitor(lab.rig, "router", set(prefixes))
            try:
                for _ in range(runs):
                    started = time.monotonic()
                    speaker.advertise(prefixes)
                    queued = time.monotonic() - started
                    arrived = fib.wait_all(True, timeout=120) - started
                    started = time.monotonic()
                    speaker.advertise({})
                    left = fib.wait_all(False, timeout=120) - started
                    out.append(Burst(size, speed, arrived, left, queued))
                    say(f"  {size:,} prefixes, reactor.speed {speed:g}: in the FIB after {arrived:.3f} s, withdrawn "
                        f"after {left:.3f} s (advertise() took {queued * 1000:.0f} ms)"
                        + (f"; {fib.lost} notification overflows" if fib.lost else ""))
                    time.sleep(0.5)
            finally:
                fib.close()
    finally:
        speaker.close()
    return out


# -- report ---------------------------------------------------------------------------------------------------


def measured_commit() -> str:
    """HEAD, and whether the daemon's code differed from it (what ran is the working tree)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "generic", "kubevip_metal"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted changes to {', '.join(changed)}" if changed else "") if head else "unknown"


def _ms(values: list[float | None]) -> list[float]:
    return [v * 1000 for v in values if v is not None]


def report(bench: Bench, impls: dict[str, Speaker], steady: dict[str, dict[str, Any]], burst_runs: list[Burst],
           elapsed: float, commit: str) -> dict[str, Any]:
    headline: dict[str, Any] = {}
    tie = "older path (FRR's tie-break)" if bench.tiebreak == "older" else "lower router ID (BIRD's default)"
    print(f"measured: {commit}; router BIRD {bird_version()}, tie-break {tie}, one best path to the kernel; "
          f"client ICMP every {bench.prober.interval * 1000:g} ms through the router")
    if impls:
        print(f"{'implementation / config':<40} {'scenario':<9} {'runs':>4} {'p50 s':>8} {'p99 s':>8} {'max s':>8}  "
              "target")
    for impl in impls.values():
        for scenario in ("crash", "graceful"):
            values = [r.outage for r in bench.runs if r.case == impl.name and r.scenario == scenario]
            target = impl.timers[0] + CRASH_MARGIN if scenario == "crash" else GRACEFUL_TARGET
            ours = isinstance(impl, BgpOurs)
            _stat_row(f"{impl.name:<40} {scenario:<9}", values, f"p99 <= {target:.3f} s" if ours else "reference",
                      target if ours else None, headline, impl.key.format(scenario=scenario), "s", 3, 4,
                      empty_note="  NO RUNS")

    if bench.runs:
        print()
        print(f"{'timings (ms)':<68} {'runs':>4} {'p50':>8} {'p99':>8} {'max':>8}  target")
        ours_runs = [r for r in bench.runs if r.case.startswith("kube-vip-metal")]
        if ours_runs:
            _stat_row(f"{'kube-vip-metal, all: leadership -> route in the router FIB':<68}",
                      _ms([r.lead_to_fib for r in ours_runs]), f"p99 <= {LEAD_TO_FIB_TARGET_MS:g} ms",
                      LEAD_TO_FIB_TARGET_MS, headline, "ours_lead_to_fib", "ms", 1, 1)
    for impl in impls.values():
        mine = [r for r in bench.runs if r.case == impl.name]
        lead = "leadership" if isinstance(impl, BgpOurs) else "Lease acquired"
        rows: list[tuple[str, list[float], str]] = [
            (f"{lead} -> route in the FIB, graceful",
             _ms([r.lead_to_fib for r in mine if r.scenario == "graceful"]), "graceful_lead_to_fib"),
            (f"{lead} -> route in the FIB, crash", _ms([r.lead_to_fib for r in mine if r.scenario == "crash"]),
             "crash_lead_to_fib"),
            ("crash -> new leader", _ms([r.event_to_lead for r in mine if r.scenario == "crash"]), "crash_to_lead"),
            ("crash -> the router FIB on the new leader", _ms([r.event_to_fib for r in mine if r.scenario == "crash"]),
             "crash_to_fib"),
            ("FIB switch -> client's first reply (< 0: read after)", _ms([r.fib_to_client for r in mine]),
             "fib_to_client"),
        ]
        for label, values, key in rows:
            if values:
                _stat_row(f"{impl.name + ': ' + label:<68}", values, "", None, headline,
                          impl.key.format(scenario=key), "ms", 1, 1)
    for impl in impls.values():
        crashes = [r for r in bench.runs if r.case == impl.name and r.scenario == "crash"]
        if crashes:
            up = sum(1 for r in crashes if r.dead_session_up)
            kept = sum(1 for r in crashes if r.dead_route_kept)
            print(f"{impl.name}: at the FIB switch after a crash, the dead leader's session was still Established in "
                  f"{up} of {len(crashes)} runs, its route still in BIRD's table in {kept}")
            headline[impl.key.format(scenario="crash_dead_session_up")] = f"{up}/{len(crashes)}"

    if burst_runs:
        print()
        print(f"{'prefixes from one ExaBGP speaker to the router FIB (s)':<64} {'runs':>4} {'p50':>8} {'p99':>8} "
              f"{'max':>8}  target")
        for speed in sorted({b.reactor_speed for b in burst_runs}, reverse=True):
            for size in sorted({b.prefixes for b in burst_runs}):
                chosen = [b for b in burst_runs if b.prefixes == size and b.reactor_speed == speed]
                key = f"prefixes_{size}_speed_{f'{speed:g}'.replace('.', '')}"
                limit = PREFIX_TARGETS.get(size)
                _stat_row(f"{f'{size:,} announced, reactor.speed {speed:g}':<64}", [b.announce for b in chosen],
                          f"p99 <= {limit:g} s" if limit else "", limit, headline, f"{key}_announce", "s", 3, 3)
                _stat_row(f"{f'{size:,} withdrawn, reactor.speed {speed:g}':<64}", [b.withdraw for b in chosen],
                          "", None, headline, f"{key}_withdraw", "s", 3, 3)

    if steady:
        print()
    for prefix, data in steady.items():
        leader, nodes = data["leader"], data["nodes"]
        total_rss = {n: v["daemon_rss"] + v["children_rss"] for n, v in nodes.items()}
        total_cpu = {n: v["daemon_cpu"] + v["children_cpu"] for n, v in nodes.items()}
        followers = [n for n in nodes if n != leader]
        worst = max(total_rss, key=lambda n: total_rss[n])
        split = (f" (daemon {nodes[worst]['daemon_rss']:.1f} + ExaBGP and relay {nodes[worst]['children_rss']:.1f})"
                 if data["processes"] > 1 else "")
        print(f"{data['name']}: RSS max {total_rss[worst]:.1f} MB{split}; idle CPU over {data['seconds']:.0f} s: "
              f"leader {total_cpu[leader]:.2f} % (daemon {nodes[leader]['daemon_cpu']:.2f}), followers "
              + ", ".join(f"{n} {total_cpu[n]:.2f}" for n in followers) + " % of a core")
        headline[f"{prefix}rss_mb"] = round(total_rss[worst], 1)
        headline[f"{prefix}idle_cpu_leader_pct"] = round(total_cpu[leader], 3)
        headline[f"{prefix}idle_cpu_follower_pct"] = round(max(total_cpu[n] for n in followers), 3)

    print()
    below = [r for r in bench.runs if r.below_threshold]
    print(f"runs: {len(bench.runs)}; failed attempts: {len(bench.failures)}; below the prober's threshold (3 x "
          f"{bench.prober.interval * 1000:g} ms, counted as that): {len(below)}; wall time {elapsed / 60:.1f} min")
    notes = bench.failures + bench.anomalies + [f"{r.case} {r.scenario}: {'; '.join(r.notes)}"
                                                 for r in bench.runs if r.notes]
    for line in dict.fromkeys(notes):  # in order, each once
        count = notes.count(line)
        print(f"  note: {line}{f' ({count} times)' if count > 1 else ''}")
    headline.update(commit=commit.split()[0], tiebreak=bench.tiebreak, runs=len(bench.runs),
                    failed_attempts=len(bench.failures), anomalies=len(bench.anomalies), seconds=round(elapsed))
    return headline


def bird_version() -> str:
    try:
        out = subprocess.run(["bird", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (out.stdout + out.stderr).strip().split()[-1]


# -- main -----------------------------------------------------------------------------------------------------


def _cases(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in (*CASES, "prefixes")]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown case(s) {', '.join(unknown) or text!r}; known: "
                                         f"{', '.join(CASES)}, prefixes")
    return chosen


def _implementations(lab: LabCluster, chosen: Sequence[str]) -> dict[str, Speaker]:
    made: dict[str, Callable[[], Speaker]] = {
        "ours": lambda: BgpOurs(lab, *DEFAULT), "ours-short": lambda: BgpOurs(lab, *SHORT),
        "kube-vip": lambda: BgpKubeVip(lab, *DEFAULT), "kube-vip-short": lambda: BgpKubeVip(lab, *SHORT)}
    return {name: made[name]() for name in CASES if name in chosen}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"2 runs of {', '.join(QUICK)} and one burst per size "
                        "(unless --only), 5 s steady windows")
    parser.add_argument("--runs", type=int, help="failover runs per case and scenario (default 8, --quick 2)")
    parser.add_argument("--interval", type=float, default=0.002, help="probe interval in seconds")
    parser.add_argument("--tiebreak", choices=("older", "router-id"), default="older",
                        help="how BIRD breaks a tie between equal routes (default: the older wins, as in FRR)")
    parser.add_argument("--only", type=_cases, metavar="CASE[,CASE...]",
                        help=f"cases to run, of: {', '.join(CASES)}, prefixes (default all)")
    common.add_file_options(parser, "managers' and kube-vip's logs")
    args = parser.parse_args()
    args.only = args.only or ([*QUICK, "prefixes"] if args.quick else [*CASES, "prefixes"])
    missing = prerequisites_missing() + bird_driver.missing()
    if any(name in CASES for name in args.only):
        missing += real_apiserver.missing()
    if any(name.startswith("kube-vip") for name in args.only):
        missing += kubevip.missing(kubevip.TESTED_VERSION)
    if missing:
        return common.cannot_run("bgp.py", missing)

    common.exit_on_signals()
    started = time.monotonic()
    commit = measured_commit()
    with contextlib.ExitStack() as stack:
        workdir = common.scratch_dir(stack, "kvm-bgpbench-", args.keep_logs)
        backend: ApiBackend | None = None
        if any(name in CASES for name in args.only):
            backend = common.real_api_backend(stack, workdir / "kube-apiserver")
        return _run(args, backend, started, commit)


def _run(args: argparse.Namespace, backend: ApiBackend | None, started: float, commit: str) -> int:
    runs = args.runs or (2 if args.quick else 8)
    steady_seconds = 5.0 if args.quick else 30.0
    lab = LabCluster(timers=DEFAULT[0], vip=VIP, keep_workdir=True, api=backend)
    namespaces = lab.rig.namespaces
    steady: dict[str, dict[str, Any]] = {}
    impls: dict[str, Speaker] = {}
    burst_runs: list[Burst] = []
    prober: Prober | None = None
    fib: FibMonitor | None = None
    bench: Bench | None = None
    try:
        with lab:
            say(f"rig up ({lab.rig.prefix}); measuring {commit}; prober every {args.interval * 1000:g} ms")
            fib = FibMonitor(lab.rig, "router", {ROUTE})
            prober = Prober(lab, args.interval)
            bench = Bench(lab, prober, fib, args.tiebreak)
            impls = _implementations(lab, args.only)
            measured_steady: set[type] = set()
            try:
                for impl in impls.values():
                    say(f"== {impl.name}: starting (BIRD hold time {impl.hold} s)")
                    bench.start_router(impl.hold)
                    impl.start_all()
                    if type(impl) not in measured_steady:  # the first (default-timer) case of each
                        measured_steady.add(type(impl))
                        prefix = "ours_" if isinstance(impl, BgpOurs) else "kube_vip_"
                        steady[prefix] = bench.steady(impl, steady_seconds)
                    for scenario in ("crash", "graceful"):
                        count = runs
                        if scenario == "crash" and isinstance(impl, BgpKubeVip) and impl.hold >= 30:
                            count = max(1, runs // 2)  # each costs the hold time
                        bench.case(impl, scenario, count)
                    say(f"== {impl.name}: stopping")
                    impl.stop_all()
                bench.stop_router()
                if "prefixes" in args.only:
                    say("== prefixes from one ExaBGP speaker")
                    sizes, speeds = sorted(PREFIX_TARGETS), REACTOR_SPEEDS[:1] if args.quick else REACTOR_SPEEDS
                    burst_runs = bursts(lab, sizes, speeds, 1 if args.quick else 3)
            finally:
                for impl in impls.values():
                    if isinstance(impl, BgpKubeVip):
                        for peer in impl.peers.values():
                            peer.kill()
                bench.stop_router()
                prober.stop()
                fib.close()  # an open socket would keep the router namespace alive after the rig is down
        common.rig_down(namespaces)
        common.write_details(args.details, [*bench.runs, *burst_runs])
        headline = report(bench, impls, steady, burst_runs, time.monotonic() - started, commit)
        print(json.dumps(headline))
        return 0
    finally:
        common.keep_or_remove(args.keep_logs, lab.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
