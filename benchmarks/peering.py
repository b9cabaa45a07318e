"""BGP settings followed live: how long a change of a node's BGP peers takes to reach the router, what else it
disturbs, and how fast a new leader's route reaches both of Equinix Metal's routers; beside the same steps done
by a static speaker (the floor) and by kube-vip v1.0.0, which reads its BGP settings once at start.

One real kube-apiserver (etcd behind it, the fault proxy, each node its own ServiceAccount token) for all; Lease
timers 3/2/1, BGP hold time 9 s. Metal's routers are played as kubevip_testbed/metal_routers.py plays them for
the rig tests: one BIRD 2 per router address, on the loopback of a rig host of its own (169.254.255.1 on
`router`, .2 on `router2`, .3 on `router3`, the last two added to the LAN), each node reaching them through a
static route. A session is BIRD's protocol `<node>_p<index>`; "Established at" is BIRD's own timestamp of that
protocol's state change to up (`since` in `birdc show protocols`, milliseconds, turned into CLOCK_MONOTONIC), and
a session **dropped** when its `since` changed (any flap, however short, changes it; by more than 5 ms, since
BIRD prints the same state change a millisecond apart now and then).

1. **Annotations** (`manager --bgp --leaderElection --annotations bgp.example.net`, three managers, the CCM's
   annotations written on each Node through the API, as tests/test_bgp_discovered_rig.py does): two peers, alpha
   (AS 65530) and beta (AS 65531), each with its password. *Rotation*: one peer's password changed at its router
   (`birdc configure`, which restarts those sessions; the run waits until all three dropped), then in every
   node's annotations, one PATCH per node: the time from the start of a node's PATCH to that node's session
   Established again at the router, and the number of sessions that dropped besides the three changed ones
   (target 0). The manager's own log splits it: PATCH to `bgp.repeering` (the watch delivered it), to
   `bgp.reconfigured` (ExaBGP reloaded), to Established. Also the other order: the annotations first and the
   router a random 0.5-3 s later, timed from the router's `birdc configure`, as the floor's router-last runs.
   *Addition*: a third peer, gamma (router3), configured at its router and then written into every node's
   annotations: PATCH to its session Established, and other drops (target 0); *removal*: the annotations without
   it again, PATCH to the session closed at router3.
2. **Metal** (`manager --metal --bgp --leaderElection`, the Metal API emulator with the project's BGP enabled
   and its password): every node peers with both routers (multihop, as Metal reports them). Graceful (SIGTERM the
   leader) and crash (the leader's cable pulled, then SIGKILL) hand-overs: from the new leader's
   `election.started_leading` (its CLOCK_MONOTONIC `mono`) to the VIP route in the kernel FIB of `router`, of
   `router2`, and of both (the later of the two), from rtnetlink notifications in each router's namespace
   (`kubevip_testbed.bird.FibMonitor`).
3. **Beside ours, in the same run and rig**:
   (a) *the floor*: one `generic.bgp.exabgp.ExaBgpSpeaker` in n1's namespace, no manager. Router last: the
   speaker already has the new password (set while the router still has the old one, then a random 0.5-3 s) when
   the router is reconfigured: `birdc configure` to Established. Speaker last, the order of the rotations above:
   the router already changed, then `ExaBgpSpeaker.configure()` with the new password: the speaker library alone,
   without the API, the watch and the manager. BIRD is passive (the speakers dial out, as on Metal), so router
   last the time is mostly how soon the speaker's pending connection attempt sends its next SYN: the router's
   kernel drops a SYN with the wrong MD5 signature silently, and Linux (6.5+, `tcp_syn_linear_timeouts` 4)
   retransmits a SYN every second for the first four tries, so 0-1 s, whoever the speaker is.
   (b) *kube-vip v1.0.0* (kubevip_testbed/peers/kubevip.py, BGP control plane with Lease election, both peers
   in `bgp_peers` as `address:AS:password:false`): it reads its BGP settings once at start, so a rotation is the
   router's change and then a restart of every node's kube-vip with the new password (its static pod re-created
   after a manifest edit: SIGTERM, then started again; followers first, the leader last), timed from the SIGTERM
   (and from the new process's start) to both of that node's sessions Established again; every session drops.
   For both ours and kube-vip: how long the VIP route was missing, during the rotation, from the router whose
   peer did *not* change (ours should never lose it; a kube-vip restart of the leader withdraws it).

What is compared, and why: the same routers, passwords and steps for everyone, each order timed from its last
step. Ours against the floor, order by order: router first, our PATCH -> Established against the bare speaker's
`configure()` -> Established (what the API, the watch and the manager add); annotations first, both timed from
the router's `birdc configure` (what is left is the speaker's next SYN, ours no different from a static
speaker's). kube-vip has no live source, so a restart is its only way: its figure is not a re-peering of the same
kind (it includes its start, its Lease client and GoBGP's first connect), and its cost is counted in sessions:
every session of every node drops, and the leader's restart takes the VIP off the router whose peer did not
change.

`--quick`: 2 rotations router first and 1 annotations first, 1 addition and removal, 1 floor run of each order,
1 kube-vip rotation, 1 Metal hand-over of each kind (about a minute). The full run: 12 rotations router first and
6 annotations first, 8 additions and removals, 8 floor runs of each order, 4 kube-vip rotations, 10 hand-overs of
each kind (about 7 minutes).
Progress goes to stderr; stdout gets the tables, then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

# what every benchmark shares (benchmarks/ is on sys.path; common.py needs only the standard library)
import common
from common import PREREQUISITES, Timeout, say, wait_for, wait_for_optional

try:
    from generic import logfmt
    from generic.bgp.exabgp import ExaBgpSpeaker
    from generic.bgp.peers import BgpPeer
    from generic.bgp.speaker import SpeakerSettings
    from generic.secret import Secret
    from kubevip_testbed import bird as bird_driver
    from kubevip_testbed.bird import FibMonitor, Hops, Protocol, same_since
    from kubevip_testbed.lab.api_backend import ApiBackend
    from kubevip_testbed.lab.cluster import LabCluster
    from kubevip_testbed.metal_routers import (
        METAL_AS,
        NODE_AS,
        MetalPeer,
        Routers,
        bird_peers,
        ccm_annotations,
        give_routers_the_peer_addresses,
        protocol,
    )
    from kubevip_testbed.nodes import replace_node_annotations
    from kubevip_testbed.peers import apiserver as real_apiserver
    from kubevip_testbed.peers import kubevip
    from kubevip_testbed.peers.kubevip import KubeVipBgp, KubeVipNode
    from kubevip_testbed.rig import prerequisites_missing
except ModuleNotFoundError as exc:  # not the virtualenv's Python, or the test bed is not installed
    raise SystemExit(f"peering.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

# the sibling benchmarks' helpers (benchmarks/ is on sys.path when this file runs), imported after the test bed
# is known to be there, so that a missing test bed is reported as peering.py's
import failover
from bgp import RoutedOurs, bird_version, measured_commit
from failover import WALL_MINUS_MONOTONIC, LogTail, _stat_row

VIP = "203.0.113.10"
ROUTE = f"{VIP}/32"
PREFIX = "bgp.example.net"  # a CCM fork's own prefix (the contract is the same under any prefix)
TIMERS = (3.0, 2.0, 1.0)  # Lease duration / renew / retry: whole seconds, which kube-vip needs
HOLD = 9
SECTIONS = ("annotations", "floor", "kube-vip", "metal")
LEAD_TO_BOTH_TARGET_MS = 50.0  # bgp.py's leadership -> FIB target, here for both routers
ALPHA = MetalPeer(1, "169.254.255.1", 65530, "alpha-Pass0")
BETA = MetalPeer(2, "169.254.255.2", 65531, "beta-Pass0", role="router2")
GAMMA = MetalPeer(3, "169.254.255.3", 65532, "gamma-Pass0", role="router3")
METAL_MD5 = "metal-Md5-pass"
RNG = random.Random(9)  # the floor's random waits, the same in every run of the benchmark


# -- BIRD's view ----------------------------------------------------------------------------------------------


def since_mono(since: str) -> float | None:
    """BIRD's `since` (local time of day, milliseconds: `12:24:26.877`) as CLOCK_MONOTONIC."""
    try:
        clock = datetime.strptime(since, "%H:%M:%S.%f").time()
    except ValueError:
        return None
    now = datetime.now()
    moment = datetime.combine(now.date(), clock)
    if moment > now + timedelta(minutes=1):  # just before midnight
        moment -= timedelta(days=1)
    return moment.timestamp() - WALL_MINUS_MONOTONIC


def ts_mono(entry: Mapping[str, Any]) -> float | None:
    """A manager log line's `ts` (UTC, milliseconds) as CLOCK_MONOTONIC."""
    try:
        wall = datetime.strptime(str(entry["ts"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return None
    return wall.timestamp() - WALL_MINUS_MONOTONIC


class View:
    """Every BGP session of a set of routers as BIRD sees it, and the VIP route in each router's kernel FIB."""

    def __init__(self, lab: LabCluster, routers: Routers) -> None:
        self.lab, self.routers = lab, routers
        self.fibs = {role: FibMonitor(lab.rig, role, {ROUTE}) for role in routers.birds}
        self.glitches: list[str] = []  # reads of BIRD's sessions that the next read contradicted

    def sessions(self) -> dict[str, Protocol]:
        out: dict[str, Protocol] = {}
        for bird in self.routers.birds.values():
            out |= {name: p for name, p in bird.protocols().items() if p.proto == "BGP"}
        return out

    def since(self, names: Iterable[str]) -> dict[str, str]:
        found = self.sessions()
        return {name: found[name].since if name in found else "" for name in names}

    def all_up(self, names: Iterable[str]) -> bool:
        found = self.sessions()
        return all(name in found and found[name].established for name in names)

    def wait_up_after(self, names: Sequence[str], after: float, timeout: float) -> dict[str, float]:
        """When each session was Established (BIRD's timestamp), waiting until all are, each after `after`."""
        def done() -> dict[str, float] | None:
            found = self.sessions()
            out = {}
            for name in names:
                p = found.get(name)
                at = since_mono(p.since) if p is not None and p.established else None
                if at is None or at < after - 0.002:  # BIRD's clock is read to the millisecond
                    return None
                out[name] = at
            return out
        return wait_for(f"sessions {', '.join(names)} Established", done, timeout, poll=0.02)

    def wait_dropped(self, before: Mapping[str, str], timeout: float) -> dict[str, float]:
        """When each session of `before` left its state (BIRD's timestamp), waiting until every one is down."""
        def done() -> dict[str, float] | None:
            found = self.sessions()
            out = {}
            for name, since in before.items():
                p = found.get(name)
                if p is None or same_since(p.since, since) or p.established:
                    return None
                out[name] = since_mono(p.since) or time.monotonic()
            return out
        return wait_for(f"sessions {', '.join(before)} down", done, timeout, poll=0.02)

    def dropped(self, before: Mapping[str, str]) -> list[str]:
        """Sessions of `before` whose state changed since (or that are not Established now), as two reads 50 ms
        apart agree (a flap changes `since` for good; a read that the next one contradicts is kept in `glitches`)."""
        def changed() -> tuple[list[str], dict[str, Protocol]]:
            now = self.sessions()
            return [name for name, since in before.items()
                    if name not in now or not same_since(now[name].since, since) or not now[name].established], now
        first, seen = changed()
        if not first:
            return []
        time.sleep(0.05)
        second, _ = changed()
        odd = [name for name in first if name not in second]
        if odd:
            self.glitches.append("; ".join(f"{name}: {seen.get(name)} (before: since {before[name]})" for name in odd))
        return [name for name in first if name in second]

    def hops(self, role: str) -> Hops:
        return self.fibs[role].hops()

    def missing(self, role: str, start: float, end: float) -> float:
        """Seconds within [start, end] during which `role`'s FIB had no route for the VIP."""
        history = self.fibs[role].history()
        total, at = 0.0, start
        state: Hops = ()
        for moment, hops in history:
            if moment <= start:
                state = hops
                continue
            if moment >= end:
                break
            if not state:
                total += moment - at
            state, at = hops, moment
        if not state:
            total += end - at
        return total

    def close(self) -> None:
        for fib in self.fibs.values():
            fib.close()


def reconfigure_router(lab: LabCluster, routers: Routers, role: str, peers: Sequence[MetalPeer],
                       multihop: bool = False) -> float:
    """`birdc configure` on one router with `peers`' sessions; returns when it was issued (CLOCK_MONOTONIC)."""
    started = time.monotonic()
    routers.birds[role].reconfigure(bird_peers(lab, peers, role, multihop))
    return started


def names_of(lab: LabCluster, peers: Iterable[MetalPeer], nodes: Sequence[str] | None = None) -> list[str]:
    return [protocol(node, peer) for peer in peers for node in (nodes or lab.nodes)]


def rotated(peer: MetalPeer, number: int) -> MetalPeer:
    base = peer.password.split("-")[0] if peer.password else "pw"
    return dataclasses.replace(peer, password=f"{base}-Pass{number}")


@dataclass
class Rotation:
    """One password rotation as both rotation benches (ours by annotations, kube-vip by restart) plan it: peer
    `number % 2` is rotated, the other is left alone; every session is watched from its state `before`."""

    victim: MetalPeer
    other: MetalPeer
    new: MetalPeer  # the victim with its new password
    peers: list[MetalPeer]  # the peer list after the rotation
    watched: list[str]  # every node's session to every peer
    before: dict[str, str]  # BIRD's `since` of each watched session
    changed: list[str]  # the victim's sessions, which must come back with the new password

    @classmethod
    def plan(cls, lab: LabCluster, view: View, peers: Sequence[MetalPeer], number: int, serial: int) -> Rotation:
        victim, other = peers[number % 2], peers[(number + 1) % 2]
        watched = names_of(lab, peers)
        before = view.since(watched)
        new = rotated(victim, serial)
        return cls(victim, other, new, [new if p == victim else p for p in peers], watched, before,
                   names_of(lab, [victim]))


def write_annotations(api: Any, node: str, wanted: Mapping[str, str]) -> float:
    """Make the node's annotations under PREFIX exactly `wanted`: one merge PATCH, whose start is returned."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    found = core.read_node(node, _request_timeout=10)
    current = dict((found.metadata.annotations if found.metadata else None) or {})
    patch: dict[str, str | None] = {key: None for key in current if key.startswith(PREFIX + "/") and key not in wanted}
    patch |= dict(wanted)
    started = time.monotonic()
    core.patch_node(node, {"metadata": {"annotations": patch}}, _request_timeout=10)
    return started


# -- results --------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One session's change: from the change (a PATCH, a `birdc configure`, a restart) to it at the router."""

    section: str  # "rotation", "addition", "removal", "floor-router-last", "floor-speaker-last", "kube-vip"
    session: str
    seconds: float
    repeering: float | None = None  # ours: the PATCH to the manager's bgp.repeering line
    reconfigured: float | None = None  # ours: the PATCH to bgp.reconfigured (ExaBGP reloaded)
    spawn: float | None = None  # kube-vip: the new process's start to Established


@dataclass
class Change:
    """One rotation (or addition, removal) across all nodes."""

    section: str
    changed: list[str]
    others: int  # sessions watched that should not drop
    others_dropped: list[str]
    first_to_last: float  # the first node's change to the last node's session at the router
    unchanged_gap: float | None = None  # seconds the VIP was missing at the router whose peer did not change
    watched: int = 0  # every session that was up before the change (the changed ones included)
    dropped: int = 0  # ... and how many of them dropped
    notes: list[str] = field(default_factory=list)


@dataclass
class Handover:
    scenario: str
    victim: str
    successor: str
    lead_to: dict[str, float]  # router role -> leadership to the VIP on the successor in its FIB
    lead_to_both: float
    event_to_lead: float
    lead_to_announced: float | None = None  # to the manager's vip.announced (via bgp: the route handed to ExaBGP)
    notes: list[str] = field(default_factory=list)


class Results:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.changes: list[Change] = []
        self.handovers: list[Handover] = []
        self.failures: list[str] = []
        self.anomalies: list[str] = []

    def attempt(self, what: str, runs: int, one: Callable[[int], None], recover: Callable[[], None]) -> None:
        """`runs` successful calls of `one(number)` (a few failed attempts allowed, each followed by `recover`)."""
        done = attempts = 0
        while done < runs and attempts < runs + 2:
            attempts += 1
            try:
                one(done)
                done += 1
            except (Timeout, AssertionError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
                message = f"{what} attempt {attempts}: {exc}"
                say(f"  FAILED: {message}")
                self.failures.append(message)
                recover()


# -- 1. annotations -------------------------------------------------------------------------------------------


class AnnotatedOurs(RoutedOurs):
    """Our managers with `--annotations PREFIX`, the VIP on lo, peers from the CCM-style annotations."""

    def __init__(self, lab: LabCluster) -> None:
        super().__init__(lab, TIMERS)
        self.name = "kube-vip-metal --annotations"


class AnnotationBench:
    def __init__(self, lab: LabCluster, routers: Routers, view: View, results: Results) -> None:
        self.lab, self.routers, self.view, self.results = lab, routers, view, results
        self.ours = AnnotatedOurs(lab)
        self.peers = [ALPHA, BETA]  # what the annotations and the routers say now
        self.rotations = 0

    def annotate_all(self, api: Any, peers: Sequence[MetalPeer]) -> dict[str, float]:
        return {node: write_annotations(api, node, ccm_annotations(PREFIX, peers, self.lab.rig.ipv4(node)))
                for node in self.lab.nodes}

    def settled(self, peers: Sequence[MetalPeer]) -> str | None:
        """The leader, when every session of `peers` is Established and each of their routers forwards the VIP to
        the leader alone."""
        leader = self.ours.holder()
        if leader is None or not self.view.all_up(names_of(self.lab, peers)):
            return None
        hop = (self.lab.rig.ipv4(leader),)
        return leader if all(self.view.hops(peer.role) == hop for peer in peers) else None

    def ready(self, peers: Sequence[MetalPeer], when: str = "before the run") -> str:
        """Settled, and no session changed for a second."""
        leader = wait_for("annotations: settled", lambda: self.settled(peers), 60, poll=0.05)
        before = self.view.since(names_of(self.lab, peers))
        time.sleep(1.0)
        now = wait_for("annotations: still settled", lambda: self.settled(peers), 10, poll=0.05)
        changed = self.view.dropped(before)
        if changed or now != leader:
            raise Timeout(f"annotations, {when}: not quiet (leader {leader} -> {now}, sessions changed: {changed})")
        return now

    def start(self, api: Any) -> None:
        give_routers_the_peer_addresses(self.lab, [ALPHA, BETA, GAMMA])
        for node in self.lab.nodes:
            replace_node_annotations(api, node, PREFIX, ccm_annotations(PREFIX, self.peers, self.lab.rig.ipv4(node)))
        self.ours.start_all()
        self.ready(self.peers)

    def rotation(self, api: Any, number: int, router_last: bool = False) -> None:
        """One peer's password rotated: at its router, then in every node's annotations (the order of
        tests/test_bgp_discovered_rig.py), timed from each node's PATCH; or, `router_last`, the annotations first
        and the router a random 0.5-3 s later, timed from the router's `birdc configure` (as the floor)."""
        leader = self.ready(self.peers)
        self.rotations += 1
        plan = Rotation.plan(self.lab, self.view, self.peers, number, self.rotations)
        victim, other, peers, watched, before, changed = (plan.victim, plan.other, plan.peers, plan.watched,
                                                          plan.before, plan.changed)
        section = "rotation-router-last" if router_last else "rotation"
        if router_last:
            started = min(self.annotate_all(api, peers).values())
            self.view.wait_dropped({n: before[n] for n in changed}, 10)
            time.sleep(RNG.uniform(0.5, 3.0))
            at = reconfigure_router(self.lab, self.routers, victim.role, [p for p in peers if p.role == victim.role])
            self.peers = peers
            written = dict.fromkeys(self.lab.nodes, at)
            up = self.view.wait_up_after(changed, at, 30)
            for node in self.lab.nodes:
                name = protocol(node, victim)
                self.results.samples.append(Sample(section, name, up[name] - at))
        else:
            started = reconfigure_router(self.lab, self.routers, victim.role,
                                         [p for p in peers if p.role == victim.role])
            self.peers = peers  # from here on the router has the new password
            self.view.wait_dropped({n: before[n] for n in changed}, 10)
            written = self.annotate_all(api, peers)
            up = self.view.wait_up_after(changed, min(written.values()), 30)
            self._samples(section, victim, written, up)
        self.ready(peers, "after the rotation")
        unchanged = [n for n in watched if n not in changed]
        dropped_now = self.view.dropped(before)
        dropped = [n for n in unchanged if n in dropped_now]
        gap = self.view.missing(other.role, started, time.monotonic())
        change = Change(section, changed, len(unchanged), dropped, max(up.values()) - min(written.values()),
                        unchanged_gap=gap, watched=len(watched), dropped=len(dropped_now))
        if self.ours.holder() != leader:
            change.notes.append(f"leader moved {leader} -> {self.ours.holder()}")
        self.results.changes.append(change)
        order = ", router last" if router_last else ""
        say(f"  rotation {number + 1}{order} ({victim.address}): "
            + ", ".join(f"{s.session} {s.seconds * 1000:.0f} ms" for s in self.results.samples[-len(changed):])
            + f"; other sessions dropped: {len(dropped)} of {len(unchanged)}; VIP missing at {other.role}: "
            f"{gap * 1000:.0f} ms")

    def addition(self, api: Any, number: int) -> None:
        self.ready(self.peers)
        watched = names_of(self.lab, self.peers)
        before = self.view.since(watched)
        gamma = rotated(GAMMA, number + 1)
        added = [*self.peers, gamma]
        reconfigure_router(self.lab, self.routers, gamma.role, [gamma])  # the router first, as Metal's would be
        changed = names_of(self.lab, [gamma])
        written = self.annotate_all(api, added)
        up = self.view.wait_up_after(changed, min(written.values()), 30)
        self._samples("addition", gamma, written, up)
        self.ready(added, "after the addition")
        dropped = [n for n in watched if n in self.view.dropped(before)]
        self.results.changes.append(Change("addition", changed, len(watched), dropped,
                                           max(up.values()) - min(written.values()), watched=len(watched),
                                           dropped=len(dropped)))
        say(f"  addition {number + 1} ({gamma.address}): "
            + ", ".join(f"{s.session} {s.seconds * 1000:.0f} ms" for s in self.results.samples[-len(changed):])
            + f"; other sessions dropped: {len(dropped)} of {len(watched)}")

        # and removed again
        gone = self.view.since(changed)
        written = self.annotate_all(api, self.peers)
        down = self.view.wait_dropped(gone, 30)
        for node in self.lab.nodes:
            name = protocol(node, gamma)
            self.results.samples.append(Sample("removal", name, down[name] - written[node]))
        self.ready(self.peers, "after the removal")
        dropped = [n for n in watched if n in self.view.dropped(before)]
        self.results.changes.append(Change("removal", changed, len(watched), dropped,
                                           max(down.values()) - min(written.values()), watched=len(watched),
                                           dropped=len(dropped)))
        reconfigure_router(self.lab, self.routers, gamma.role, [])
        say(f"  removal {number + 1}: " + ", ".join(f"{n} {(down[n] - written[n.split('_')[0]]) * 1000:.0f} ms"
                                                    for n in changed)
            + f"; other sessions dropped: {len(dropped)} of {len(watched)}")

    def _samples(self, section: str, peer: MetalPeer, written: Mapping[str, float], up: Mapping[str, float]) -> None:
        for node in self.lab.nodes:
            name = protocol(node, peer)
            tail = self.ours.tails[node]
            repeering = wait_for_optional(partial(_logged, tail, "bgp.repeering", written[node]), 2.0)
            reconfigured = wait_for_optional(partial(_logged, tail, "bgp.reconfigured", written[node]), 2.0)
            self.results.samples.append(Sample(
                section, name, up[name] - written[node],
                repeering=None if repeering is None else repeering - written[node],
                reconfigured=None if reconfigured is None else reconfigured - written[node]))

    def recover(self) -> None:
        """After a failed attempt: the routers and every node's annotations back to `self.peers`."""
        for role in self.routers.birds:
            reconfigure_router(self.lab, self.routers, role, [p for p in self.peers if p.role == role])
        with self.lab.api.admin_client() as api:
            self.annotate_all(api, self.peers)
        self.ours.revive()
        wait_for("annotations: recovery", lambda: self.settled(self.peers), 60, poll=0.05)


def _logged(tail: LogTail, event: str, after: float) -> float | None:
    for entry in tail.poll():
        if entry.get("event") == event:
            at = ts_mono(entry)
            if at is not None and at >= after - 0.001:  # `ts` has milliseconds
                return at
    return None


# -- 3a. the floor: one static speaker ------------------------------------------------------------------------


def floor(lab: LabCluster, routers: Routers, view: View, results: Results, current: MetalPeer, runs: int) -> MetalPeer:
    """`runs` rotations of each order between one ExaBgpSpeaker in n1 and `current`'s router (managers stopped)."""
    node = lab.nodes[0]
    me = ipaddress.IPv4Address(lab.rig.ipv4(node))
    name = protocol(node, current)

    def settings(peer: MetalPeer) -> SpeakerSettings:
        bgp = BgpPeer(ipaddress.ip_address(peer.address), peer.asn, Secret(peer.password or ""))
        return SpeakerSettings(me, NODE_AS, (bgp,), hold_time=HOLD, source_ip=me)

    speaker = ExaBgpSpeaker(settings(current), command_prefix=["ip", "netns", "exec", lab.rig.ns(node)])
    number = 100
    try:
        view.wait_up_after([name], 0.0, 30)
        for order in ("router-last", "speaker-last"):
            def one(_: int, order: str = order) -> None:
                nonlocal current, number
                view.wait_up_after([name], 0.0, 30)
                time.sleep(0.5)
                before = view.since([name])
                number += 1
                new = rotated(current, number)
                if order == "router-last":
                    speaker.configure(settings(new))
                else:
                    reconfigure_router(lab, routers, new.role, [new])
                view.wait_dropped(before, 15)
                time.sleep(RNG.uniform(0.5, 3.0))  # whenever the other side gets to it
                if order == "router-last":
                    started = reconfigure_router(lab, routers, new.role, [new])
                else:
                    started = time.monotonic()
                    speaker.configure(settings(new))
                current = new
                up = view.wait_up_after([name], started, 60)
                results.samples.append(Sample(f"floor-{order}", name, up[name] - started))
                say(f"  floor, {order.replace('-', ' ')}: {(up[name] - started) * 1000:.0f} ms")

            def recover() -> None:
                speaker.configure(settings(current))
                reconfigure_router(lab, routers, current.role, [current])

            results.attempt(f"floor {order}", runs, one, recover)
    finally:
        speaker.close()
    return current


# -- 3b. kube-vip v1.0.0 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeVipPeers(KubeVipBgp):
    """kube-vip's BGP settings with several peers, each with its password (`bgp_peers`)."""

    peers: tuple[MetalPeer, ...] = ()

    def environment(self, router_id: str) -> dict[str, str]:
        env = super().environment(router_id)
        env["bgp_peers"] = ",".join(f"{p.address}:{p.asn}:{p.password or ''}:false" for p in self.peers)
        return env


def kube_vip_settings(peers: Sequence[MetalPeer]) -> KubeVipPeers:
    return KubeVipPeers(peers[0].address, peers[0].asn, NODE_AS, hold_time=HOLD, keepalive=HOLD // 3,
                        peers=tuple(peers))


class KubeVipBench(failover.KubeVip):
    """kube-vip v1.0.0 on every node, BGP control plane with Lease election, peered with both routers."""

    device = "lo"

    def __init__(self, lab: LabCluster, routers: Routers, view: View, results: Results,
                 peers: Sequence[MetalPeer]) -> None:
        super().__init__(lab, kubevip.TESTED_VERSION, TIMERS)
        self.routers, self.view, self.results = routers, view, results
        self.bgp_peers = list(peers)
        self.name = f"kube-vip {kubevip.TESTED_VERSION}"
        self.peers = {node: KubeVipNode(lab, node, kubevip.TESTED_VERSION, [int(t) for t in TIMERS],
                                        bgp=kube_vip_settings(peers)) for node in lab.nodes}
        self.rotations = 200
        self.restarted_by_us: set[int] = set()

    def settled(self) -> str | None:
        leader = self.holder()
        if leader is None or not self.view.all_up(names_of(self.lab, self.bgp_peers)):
            return None
        hop = (self.lab.rig.ipv4(leader),)
        return leader if all(self.view.hops(peer.role) == hop for peer in self.bgp_peers) else None

    def ready(self) -> str:
        leader = wait_for("kube-vip: settled", self.settled, 90, poll=0.05)
        wait_for("kube-vip: followers up", self.followers_ready, 60)
        before = self.view.since(names_of(self.lab, self.bgp_peers))
        time.sleep(1.0)
        now = wait_for("kube-vip: still settled", self.settled, 10, poll=0.05)
        changed = self.view.dropped(before)
        if changed or now != leader:
            raise Timeout(f"kube-vip: not quiet (leader {leader} -> {now}, sessions changed: {changed})")
        return now

    def revive(self) -> None:
        for peer in self.peers.values():
            if not peer.alive:
                peer.start()

    def rotation(self, number: int) -> None:
        leader = self.ready()
        self.rotations += 1
        plan = Rotation.plan(self.lab, self.view, self.bgp_peers, number, self.rotations)
        victim, other, peers, watched, before, changed = (plan.victim, plan.other, plan.peers, plan.watched,
                                                          plan.before, plan.changed)
        started = reconfigure_router(self.lab, self.routers, victim.role, [p for p in peers if p.role == victim.role])
        self.bgp_peers = peers
        self.view.wait_dropped({n: before[n] for n in changed}, 10)
        first = time.monotonic()
        last = first
        notes: list[str] = []
        for node in sorted(self.lab.nodes, key=lambda n: n == leader):  # the leader last
            peer = self.peers[node]
            peer.bgp = kube_vip_settings(peers)
            stopped = time.monotonic()
            code = peer.terminate() if peer.alive else None
            if code not in (0, 2, None):  # 2: it lost leadership (a SIGTERMed leader releases its Lease first)
                notes.append(f"kube-vip on {node} exited {code} on SIGTERM")
            spawned = time.monotonic()
            peer.start()
            mine = [protocol(node, p) for p in peers]
            up = self.view.wait_up_after(mine, stopped, 60)
            at = max(up.values())
            last = max(last, at)
            self.results.samples.append(Sample("kube-vip", node, at - stopped, spawn=at - spawned))
            say(f"  kube-vip on {node}{' (leader)' if node == leader else ''}: SIGTERM -> both sessions "
                f"Established {(at - stopped) * 1000:.0f} ms (from its start {(at - spawned) * 1000:.0f} ms)")
            for other_node, other_peer in self.peers.items():  # v1.0.0 exits when it loses leadership
                if other_node != node and not other_peer.alive:
                    status = other_peer.process.returncode if other_peer.process else None
                    notes.append(f"kube-vip on {other_node} had exited (status {status}); restarted")
                    other_peer.start()
        self.ready()
        unchanged = [n for n in watched if n not in changed]
        dropped_now = self.view.dropped(before)
        gap = self.view.missing(other.role, started, time.monotonic())
        change = Change("kube-vip", changed, len(unchanged), [n for n in unchanged if n in dropped_now],
                        last - first, unchanged_gap=gap, watched=len(watched), dropped=len(dropped_now), notes=notes)
        self.results.changes.append(change)
        say(f"  kube-vip rotation {number + 1} ({victim.address}): sessions dropped {len(dropped_now)} of "
            f"{len(watched)} ({len(change.others_dropped)} besides the changed ones); VIP missing at {other.role}: "
            f"{gap:.3f} s")

    def recover_rotation(self) -> None:
        for role in self.routers.birds:
            reconfigure_router(self.lab, self.routers, role, [p for p in self.bgp_peers if p.role == role])
        for peer in self.peers.values():
            peer.bgp = kube_vip_settings(self.bgp_peers)
            if peer.alive:
                peer.terminate()
            peer.start()
        wait_for("kube-vip: recovery", self.settled, 90, poll=0.05)


# -- 2. Metal: leadership -> the route at both routers --------------------------------------------------------


class MetalOurs(RoutedOurs):
    def __init__(self, lab: LabCluster) -> None:
        super().__init__(lab, TIMERS)
        self.name = "kube-vip-metal --metal --bgp"


class MetalBench:
    def __init__(self, lab: LabCluster, routers: Routers, view: View, results: Results,
                 peers: Sequence[MetalPeer]) -> None:
        self.lab, self.routers, self.view, self.results, self.peers = lab, routers, view, results, list(peers)
        self.ours = MetalOurs(lab)

    def settled(self) -> str | None:
        leader = self.ours.holder()
        if leader is None or not self.view.all_up(names_of(self.lab, self.peers)):
            return None
        hop = (self.lab.rig.ipv4(leader),)
        return leader if all(self.view.hops(role) == hop for role in self.routers.birds) else None

    def ready(self) -> str:
        holder = wait_for("metal: settled", self.settled, 90, poll=0.05)
        wait_for("metal: followers up", self.ours.followers_ready, 60)
        time.sleep(self.ours.settle_extra)  # every follower has watched the Lease for a whole term
        now = wait_for("metal: still settled", self.settled, 10, poll=0.05)
        if now != holder:
            self.results.anomalies.append(f"metal: leader moved {holder} -> {now} while settled (no fault)")
        return now

    def one(self, scenario: str) -> None:
        victim = self.ready()
        event_at = time.monotonic()
        notes = self.ours.fault(scenario, victim)
        limit = TIMERS[0] * 3 + HOLD + 15
        successor = wait_for("metal: successor", lambda: self.ours.holder(exclude=[victim]), limit, poll=0.01)
        hop = (self.lab.rig.ipv4(successor),)
        lead = wait_for("metal: successor's election.started_leading",
                        lambda: self.ours.tails[successor].first("election.started_leading", event_at), 5.0)
        at: dict[str, float] = {}
        for role, fib in self.view.fibs.items():
            found = fib.when(lambda hops: hops == hop, after=event_at, timeout=limit)
            if found is None:
                raise Timeout(f"metal: {role}'s FIB never forwarded the VIP to {successor} alone: "
                              f"{fib.history()[-4:]}")
            at[role] = found
        announced = wait_for_optional(partial(_logged, self.ours.tails[successor], "vip.announced", lead), 2.0)
        run = Handover(scenario, victim, successor, {role: t - lead for role, t in at.items()},
                       max(at.values()) - lead, lead - event_at,
                       None if announced is None else announced - lead, notes)
        self.results.handovers.append(run)
        if self.ours.reboot(victim, scenario) and scenario == "graceful":  # the victim back as after a reboot
            self.results.anomalies.append(f"metal: the stopped leader {victim} still held {VIP} on lo")
        say(f"  {scenario} {victim}->{successor}: leadership {run.event_to_lead:.3f} s after the event; then the "
            "VIP at " + ", ".join(f"{role} {t * 1000:.1f} ms" for role, t in run.lead_to.items())
            + f", both {run.lead_to_both * 1000:.1f} ms{' NOTE ' + '; '.join(notes) if notes else ''}")

    def recover(self) -> None:
        self.ours.replug_and_revive()
        wait_for("metal: recovery", self.settled, 90, poll=0.05)


# -- the run --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    rotations: int
    router_last: int  # rotations with the annotations first and the router last
    additions: int
    floor: int
    kube_vip: int
    handovers: int


def run_annotations(args: argparse.Namespace, plan: Plan, backend: ApiBackend | None, results: Results,
                    workdir: Path) -> None:
    lab = LabCluster(timers=TIMERS, vip=VIP, keep_workdir=True, api=backend,
                     mode_args=["--bgp", "--leaderElection", "--annotations", PREFIX, "--bgpHoldTimer", str(HOLD)])
    namespaces = lab.rig.namespaces
    routers: Routers | None = None
    view: View | None = None
    kube_vip: KubeVipBench | None = None
    try:
        with lab:
            lab.rig.add_lan_host("router2", 2)
            lab.rig.add_lan_host("router3", 3)
            namespaces = lab.rig.namespaces
            say(f"rig up ({lab.rig.prefix}) for the annotations, the floor and kube-vip: routers "
                f"{ALPHA.address} on router, {BETA.address} on router2, {GAMMA.address} on router3")
            routers = Routers(lab, [ALPHA, BETA, GAMMA])
            reconfigure_router(lab, routers, "router3", [])  # gamma is added later, router first
            view = View(lab, routers)
            bench = AnnotationBench(lab, routers, view, results)
            try:
                if "annotations" in args.only:
                    say("== 1. annotations: three managers peered by annotations")
                    with lab.api.admin_client() as api:
                        bench.start(api)
                        say(f"rotations: {plan.rotations}")
                        results.attempt("rotation", plan.rotations, lambda n: bench.rotation(api, n), bench.recover)
                        say(f"rotations, annotations first and the router last: {plan.router_last}")
                        results.attempt("rotation, router last", plan.router_last,
                                        lambda n: bench.rotation(api, n, router_last=True), bench.recover)
                        say(f"additions and removals: {plan.additions}")
                        results.attempt("addition", plan.additions, lambda n: bench.addition(api, n), bench.recover)
                    bench.ours.stop_all()
                    for node in lab.nodes:
                        lab.rig.run(node, ["ip", "addr", "del", ROUTE, "dev", "lo"], check=False)
                peers = bench.peers
                if "floor" in args.only:
                    say(f"== 3a. the floor: one ExaBgpSpeaker in {lab.nodes[0]}, {plan.floor} runs of each order")
                    give_routers_the_peer_addresses(lab, [ALPHA, BETA, GAMMA])
                    beta = floor(lab, routers, view, results, peers[1], plan.floor)
                    peers = [peers[0], beta]
                if "kube-vip" in args.only:
                    say(f"== 3b. kube-vip {kubevip.TESTED_VERSION}: {plan.kube_vip} rotations by restart")
                    give_routers_the_peer_addresses(lab, [ALPHA, BETA, GAMMA])
                    for role in ("router", "router2"):
                        reconfigure_router(lab, routers, role, [p for p in peers if p.role == role])
                    kube_vip = KubeVipBench(lab, routers, view, results, peers)
                    kube_vip.start_all()
                    kube_vip.ready()
                    results.attempt("kube-vip rotation", plan.kube_vip, kube_vip.rotation, kube_vip.recover_rotation)
                    kube_vip.stop_all()
            finally:
                if kube_vip is not None:
                    for peer in kube_vip.peers.values():
                        peer.kill()
                for node in list(lab.managers):
                    lab.kill(node)
                results.anomalies += [f"a read of BIRD's sessions contradicted by the next: {g}" for g in view.glitches]
                view.close()  # an open socket would keep a router namespace alive after the rig is down
                routers.stop()
        common.rig_down(namespaces)
    finally:
        common.keep_or_remove(args.keep_logs, lab.workdir)


def _handover(bench: MetalBench, scenario: str, _number: int) -> None:
    bench.one(scenario)


def run_metal(args: argparse.Namespace, plan: Plan, backend: ApiBackend | None, results: Results) -> None:
    lab = LabCluster(timers=TIMERS, vip=VIP, keep_workdir=True, api=backend, metal=True,
                     mode_args=["--bgp", "--leaderElection", "--bgpHoldTimer", str(HOLD)])
    namespaces = lab.rig.namespaces
    peers = [MetalPeer(1, "169.254.255.1", METAL_AS, METAL_MD5),
             MetalPeer(2, "169.254.255.2", METAL_AS, METAL_MD5, role="router2")]
    try:
        with lab:
            lab.enable_metal_bgp(asn=NODE_AS, md5=METAL_MD5)
            lab.rig.add_lan_host("router2", 2)
            namespaces = lab.rig.namespaces
            give_routers_the_peer_addresses(lab, peers)
            routers = Routers(lab, peers, multihop=True)
            view = View(lab, routers)
            say(f"== 2. Metal: rig up ({lab.rig.prefix}), Metal's routers {peers[0].address} on router and "
                f"{peers[1].address} on router2, {plan.handovers} hand-overs of each kind")
            try:
                bench = MetalBench(lab, routers, view, results, peers)
                bench.ours.start_all()
                for scenario in ("graceful", "crash"):
                    results.attempt(f"metal {scenario}", plan.handovers, partial(_handover, bench, scenario),
                                    bench.recover)
                bench.ours.stop_all()
            finally:
                for node in list(lab.managers):
                    lab.kill(node)
                results.anomalies += [f"a read of BIRD's sessions contradicted by the next: {g}" for g in view.glitches]
                view.close()
                routers.stop()
        common.rig_down(namespaces)
    finally:
        common.keep_or_remove(args.keep_logs, lab.workdir)


# -- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    name = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip('"')
    return f"{os.cpu_count()}-core {name}, kernel {platform.release()}, Python {platform.python_version()}"


def report(results: Results, plan: Plan, started_at: datetime, elapsed: float, commit: str,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:
    headline: dict[str, Any] = {}
    print(f"benchmarks/peering.py, {started_at:%Y-%m-%d %H:%M} UTC; {machine()}; load average {load[0][0]:.1f} "
          f"at the start, {load[1][0]:.1f} at the end")
    print(f"measured: {commit}; BIRD {bird_version()}, ExaBGP {metadata.version('exabgp')}, kube-vip "
          f"{kubevip.TESTED_VERSION}, kube-apiserver {real_apiserver.K8S_VERSION}; Lease "
          f"{'/'.join(f'{t:g}' for t in TIMERS)}, hold time {HOLD} s")
    print()

    def ms(section: str, attr: str = "seconds") -> list[float]:
        values = [getattr(s, attr) for s in results.samples if s.section == section]
        return [v * 1000 for v in values if v is not None]

    def changes_ms(section: str) -> list[float]:
        return [c.first_to_last * 1000 for c in results.changes if c.section == section]

    print(f"{'BGP settings changed (ms, per session)':<78} {'runs':>4} {'p50':>8} {'p99':>8} {'max':>8}")
    rows: list[tuple[str, list[float], str]] = [
        ("ours, password rotated, router first: annotation PATCH -> Established", ms("rotation"),
         "annotation_repeer"),
        ("  PATCH -> the manager's bgp.repeering (the watch delivered it)", ms("rotation", "repeering"),
         "annotation_watch"),
        ("  PATCH -> bgp.reconfigured (ExaBGP reloaded)", ms("rotation", "reconfigured"), "annotation_reloaded"),
        ("  first PATCH -> the last of the three nodes re-peered", changes_ms("rotation"),
         "annotation_rotation_all_nodes"),
        ("speaker alone, router first: ExaBgpSpeaker.configure() -> Established", ms("floor-speaker-last"),
         "floor_speaker_last"),
        ("ours, password rotated, annotations first: birdc configure -> Established",
         ms("rotation-router-last"), "annotation_router_last"),
        ("floor, speaker already right: birdc configure -> Established", ms("floor-router-last"),
         "floor_router_last"),
        ("ours, peer added: annotation PATCH -> its session Established", ms("addition"), "annotation_add"),
        ("ours, peer removed: annotation PATCH -> its session closed at the router", ms("removal"),
         "annotation_remove"),
        (f"kube-vip {kubevip.TESTED_VERSION}, rotated by restart: SIGTERM -> both sessions Established",
         ms("kube-vip"), "kube_vip_restart"),
        ("  its new process's start -> both sessions Established", ms("kube-vip", "spawn"), "kube_vip_start"),
        ("  first SIGTERM -> the last of the three nodes re-peered", changes_ms("kube-vip"),
         "kube_vip_rotation_all_nodes"),
    ]
    for label, values, key in rows:
        _stat_row(f"{label:<78}", values, "", None, headline, key, "ms", 0, 1)

    print()
    print(f"{'sessions dropped':<52} {'changes':>7} {'all':>7} {'besides the changed':>19} {'VIP missing':>12}  "
          "target")
    for section, label, key in (
            ("rotation", "ours: password rotated, router first", "annotation_repeer"),
            ("rotation-router-last", "ours: password rotated, annotations first", "annotation_router_last"),
            ("addition", "ours: peer added by annotation", "annotation_add"),
            ("removal", "ours: peer removed by annotation", "annotation_remove"),
            ("kube-vip", f"kube-vip {kubevip.TESTED_VERSION}: password rotated by restart", "kube_vip_restart")):
        changes = [c for c in results.changes if c.section == section]
        others = sum(len(c.others_dropped) for c in changes)
        others_watched = sum(c.others for c in changes)
        gaps = [c.unchanged_gap for c in changes if c.unchanged_gap is not None]
        gap_text = f"{sum(gaps):.3f} s" if gaps else "-"
        ours = section != "kube-vip"
        verdict = ("  ok" if others == 0 else "  MISSED") if ours and changes else ""
        everything = f"{sum(c.dropped for c in changes)}/{sum(c.watched for c in changes)}"
        print(f"{label:<52} {len(changes):>7} {everything:>7} {f'{others}/{others_watched}':>19} {gap_text:>12}  "
              f"{'0' if ours else 'reference'}{verdict}")
        headline[f"{key}_other_drops"] = others
        headline[f"{key}_other_sessions"] = others_watched
        if gaps:
            headline[f"{key}_unchanged_router_vip_missing_s"] = round(sum(gaps), 3)
    print("(all: sessions whose BIRD `since` changed, of those up before; besides the changed: of the sessions whose "
          "settings did not change; VIP missing: total time the VIP route was absent from the kernel FIB of the "
          "router whose peer did not change, from the first step of each rotation until settled again)")

    if results.handovers:
        print()
        print(f"{'Metal, both routers: leadership -> the VIP route (ms)':<78} {'runs':>4} {'p50':>8} {'p99':>8} "
              f"{'max':>8}  target")
        for scenario in ("graceful", "crash"):
            runs = [h for h in results.handovers if h.scenario == scenario]
            for role in ("router", "router2"):
                _stat_row(f"{f'{scenario}: started_leading -> route in the FIB of {role}':<78}",
                          [h.lead_to[role] * 1000 for h in runs if role in h.lead_to], "", None, headline,
                          f"metal_{scenario}_lead_to_{role}", "ms", 1, 1)
            _stat_row(f"{f'{scenario}: started_leading -> route at both':<78}",
                      [h.lead_to_both * 1000 for h in runs], "", None, headline, f"metal_{scenario}_lead_to_both",
                      "ms", 1, 1)
            _stat_row(f"{'  of which started_leading -> vip.announced (the route handed to ExaBGP)':<78}",
                      [h.lead_to_announced * 1000 for h in runs if h.lead_to_announced is not None], "", None,
                      headline, f"metal_{scenario}_lead_to_announced", "ms", 0, 1)
            _stat_row(f"{f'{scenario}: SIGTERM / cable pulled -> started_leading':<78}",
                      [h.event_to_lead * 1000 for h in runs], "", None, headline,
                      f"metal_{scenario}_event_to_lead", "ms", 0, 1)
        _stat_row(f"{'all hand-overs: started_leading -> route at both routers':<78}",
                  [h.lead_to_both * 1000 for h in results.handovers], f"p99 <= {LEAD_TO_BOTH_TARGET_MS:g} ms",
                  LEAD_TO_BOTH_TARGET_MS, headline, "metal_lead_to_both", "ms", 1, 1)

    print()
    print(f"plan: {plan.rotations} rotations router first and {plan.router_last} annotations first, "
          f"{plan.additions} additions and removals, {plan.floor} floor runs of each order, {plan.kube_vip} kube-vip "
          f"rotations, {plan.handovers} Metal hand-overs of each kind; failed attempts: {len(results.failures)}; "
          f"wall time {elapsed / 60:.1f} min")
    notes = results.failures + results.anomalies + [f"{c.section}: {'; '.join(c.notes)}"
                                                     for c in results.changes if c.notes]
    notes += [f"metal {h.scenario}: {'; '.join(h.notes)}" for h in results.handovers if h.notes]
    for line in dict.fromkeys(notes):
        count = notes.count(line)
        print(f"  note: {line}{f' ({count} times)' if count > 1 else ''}")
    headline.update(date=f"{started_at:%Y-%m-%d}", commit=commit.split()[0], cores=os.cpu_count(),
                    failed_attempts=len(results.failures), anomalies=len(results.anomalies), seconds=round(elapsed))
    return headline


# -- main -----------------------------------------------------------------------------------------------------


def _sections(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown) or text!r}; known: "
                                         f"{', '.join(SECTIONS)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one or two runs of each (about a minute)")
    parser.add_argument("--only", type=_sections, metavar="SECTION[,SECTION...]",
                        help=f"sections to run, of: {', '.join(SECTIONS)} (default all)")
    common.add_file_options(parser, "managers', kube-vip's and BIRD's files", details="every measurement")
    args = parser.parse_args()
    args.only = args.only or list(SECTIONS)
    plan = Plan(2, 1, 1, 1, 1, 1) if args.quick else Plan(12, 6, 8, 8, 4, 10)
    missing = prerequisites_missing() + bird_driver.missing() + real_apiserver.missing()
    if "kube-vip" in args.only:
        missing += kubevip.missing(kubevip.TESTED_VERSION)
    if missing:
        return common.cannot_run("peering.py", missing)

    common.exit_on_signals()
    started = time.monotonic()
    started_at = datetime.now(UTC)
    load_start = os.getloadavg()
    commit = measured_commit()
    results = Results()
    with contextlib.ExitStack() as stack:
        workdir = common.scratch_dir(stack, "kvm-peeringbench-", args.keep_logs)
        # the test bed's and the floor speaker's own log lines go to a file, so stderr is the progress alone
        log_file = stack.enter_context((workdir / "benchmark.log").open("a"))
        logfmt.configure(logging.INFO, logfmt.LogFormat.JSON, stream=log_file)
        stack.callback(logging.getLogger().handlers.clear)  # before the file closes
        backend = common.real_api_backend(stack, workdir / "kube-apiserver")
        say(f"measuring {commit}")
        if any(name in args.only for name in ("annotations", "floor", "kube-vip")):
            run_annotations(args, plan, backend, results, workdir)
        if "metal" in args.only:
            run_metal(args, plan, backend, results)
    common.write_details(args.details, [*results.samples, *results.changes, *results.handovers], kind=True)
    headline = report(results, plan, started_at, time.monotonic() - started, commit, (load_start, os.getloadavg()))
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
