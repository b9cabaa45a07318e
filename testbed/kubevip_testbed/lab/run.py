"""`kube-vip-metal lab`: watch a control-plane failover on a real (namespaced) network, on this one machine.

Three nodes run the real manager against the API emulator; a client probes the VIP every 5 ms. The lab prints a
live timeline (who leads, which nodes hold the VIP, which node the client's ARP entry points at, each outage the
client saw), then crashes the leader (SIGKILL + cable pulled), then stops the next leader gracefully (SIGTERM),
and prints the measured outages. Everything is removed on exit; `--keep` leaves it running until stopped.

`--bgp`: the managers announce the VIP 203.0.113.10 (outside the LAN) by BGP to BIRD 2 in the router namespace
(AS 65000, a passive session per node, the nodes in AS 65001, hold time 30 s as kube-vip's default), and the client
reaches it only through the router, so its traffic follows the router's kernel FIB. The timeline shows which node's
route that FIB uses (from rtnetlink notifications) and whose routes BIRD holds: after the crash the dead leader's
session and route linger until the hold time expires, while the FIB already forwards to the new leader, whose route
has the lower MED of a newer term.

`--metal --bgp`: Metal's BGP mode, with no Elastic IP assigned. The project has BGP enabled in the Metal API
emulator (AS 65001, an MD5 password); each manager finds its device, creates its IPv4 BGP session and peers with the
neighbours Metal reports: both of Metal's routers, 169.254.255.1 on the router's loopback and 169.254.255.2 on a
second LAN host `router2`'s, each its own BIRD 2 in AS 65530 with the project's password, multihop, reached by a
static route on every node (kubevip_testbed.metal_routers). The timeline shows both routers' kernel FIBs and
BIRDs' routes, the client still behind `router`.

Stopped by Ctrl-C, SIGTERM (kill, systemd, `timeout`) or SIGHUP (the terminal closed), at any moment, the lab
unwinds the same way: the signal becomes an exception in the main thread, so the managers, the prober, the API
and the namespaces are stopped and the work directory removed before the process exits (128 + the signal's
number). Once the teardown has begun a further signal is only noted, so the teardown itself is never cut short
(SIGKILL still ends everything; the next rig's start removes what it left).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from kubevip_testbed.bird import Bird, BirdPeer, FibMonitor
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.metal_routers import METAL_AS, MetalPeer, bird_peers, give_routers_the_peer_addresses, protocol

BGP_VIP = "203.0.113.10"  # outside the LAN: the client reaches it through the router only
ROUTER_AS, NODE_AS, HOLD_TIME = 65000, 65001, 30
METAL_MD5 = "lab-metal-bgp-md5-not-secret"  # the project's BGP password (`metal project bgp-enable --md5 ...`)
METAL_ROUTERS = (MetalPeer(1, "169.254.255.1", METAL_AS, METAL_MD5),  # on router's loopback
                 MetalPeer(2, "169.254.255.2", METAL_AS, METAL_MD5, role="router2"))  # on a second LAN host's


class _Router:
    """BIRD in the router namespace with a passive session per node, and what its kernel FIB does with the VIP;
    `metal`: Metal's two routers instead, a BIRD each (`router` and `router2`), a multihop session per node."""

    def __init__(self, lab: LabCluster, metal: bool = False) -> None:
        self.lab = lab
        self.metal = metal
        if metal:  # the peer addresses exist once start() has added router2 and the loopback addresses
            self.birds = {peer.role: Bird(lab.rig, peer.role, peers=(), asn=METAL_AS, hold_time=HOLD_TIME)
                          for peer in METAL_ROUTERS}
        else:
            self.birds = {"router": Bird(lab.rig, "router", asn=ROUTER_AS, hold_time=HOLD_TIME,
                                         peers=[BirdPeer(n, lab.rig.ipv4(n), NODE_AS) for n in lab.nodes])}
        self.fibs: dict[str, FibMonitor] = {}
        self.killed: list[int] = []  # managers SIGKILLed: their ExaBGP work directories are removed at the end
        self._paths: dict[str, tuple[float, tuple[str, ...], str]] = {}  # role: (read at, FIB then, text)

    @property
    def bird(self) -> Bird:
        return self.birds["router"]

    @property
    def roles(self) -> list[str]:
        return list(self.birds)

    @staticmethod
    def mode_args(lab: LabCluster, metal: bool = False) -> list[str]:
        if metal:  # peers, local AS, passwords and source addresses all come from the Metal API
            return ["--bgp", "--leaderElection", "--bgpHoldTimer", str(HOLD_TIME)]
        return ["--bgp", "--leaderElection", "--bgppeers", f"{lab.rig.ipv4('router')}:{ROUTER_AS}",
                "--localAS", str(NODE_AS), "--bgpHoldTimer", str(HOLD_TIME)]

    def start(self) -> _Router:
        if self.metal:
            self.lab.rig.add_lan_host("router2", 2)  # 198.51.100.2, removed with the rig
            give_routers_the_peer_addresses(self.lab, METAL_ROUTERS)
            for peer in METAL_ROUTERS:
                bird = self.birds[peer.role]
                bird.peers = tuple(bird_peers(self.lab, [peer], peer.role, multihop=True))
        for role, bird in self.birds.items():
            bird.start()
            self.fibs[role] = FibMonitor(self.lab.rig, role, {f"{self.lab.vip}/32"})
        return self

    def protocols_of(self, node: str, role: str) -> list[str]:
        """The BIRD protocols of `role` that belong to `node`."""
        if not self.metal:
            return [node]
        return [protocol(node, peer) for peer in METAL_ROUTERS if peer.role == role]

    def _node_of_protocol(self, name: str) -> str:
        return name.rsplit("_p", 1)[0] if self.metal else name

    def node(self, address: str) -> str:
        return next((n for n in self.lab.nodes if self.lab.rig.ipv4(n) == address), address)

    def via(self, role: str = "router") -> list[str]:
        """The nodes `role`'s FIB forwards the VIP to (several: ECMP)."""
        fib = self.fibs.get(role)
        return [self.node(hop) for hop in (fib.hops() if fib is not None else ())]

    def paths(self, dead: set[str], role: str = "router") -> str:
        """Whose routes for the VIP `role`'s BIRD holds, best first (read again when the FIB changed, else at most
        every 0.25 s: birdc is a process)."""
        fib = self.fibs.get(role)
        hops = fib.hops() if fib is not None else ()
        last = self._paths.get(role, (0.0, (), "-"))
        if time.monotonic() - last[0] > 0.25 or hops != last[1]:
            try:
                out = self.birds[role].birdc("show", "route", f"{self.lab.vip}/32")
            except RuntimeError:  # "Network not found": no route at all
                out = ""
            names = [self._node_of_protocol(n) for n in re.findall(r"unicast \[(\S+) ", out)]
            text = ",".join(f"{n}(dead)" if n in dead else n for n in names) or "-"
            last = self._paths[role] = (time.monotonic(), hops, text)
        return last[2]

    def view(self, dead: set[str]) -> str:
        """The timeline's column: where each router's FIB sends the VIP, and whose routes its BIRD holds."""
        if not self.metal:
            return (f"router FIB -> {'+'.join(self.via()) or '-':<5}  "
                    f"BGP routes (best first) from {self.paths(dead)}")
        return "   ".join(f"{role} FIB -> {'+'.join(self.via(role)) or '-':<3} BGP {self.paths(dead, role):<15}"
                          for role in self.roles).rstrip()

    def lingering(self, dead: str) -> str:
        """What the routers still have of a crashed node: its sessions and routes, kept for the hold time."""
        facts: dict[str, tuple[bool, bool]] = {}  # role: (session Established, route held)
        for role, bird in self.birds.items():
            names = self.protocols_of(dead, role)
            facts[role] = (all(bird.protocol(name).established for name in names),
                           any(bird.routes(name) for name in names))
        if not self.metal:
            up, routed = facts["router"]
            return (f"{dead}'s session {'still Established' if up else 'down'}, "
                    f"its route {'still at the router' if routed else 'gone'}")
        if all(up and routed for up, routed in facts.values()):
            return f"{dead}'s sessions still Established at {' and '.join(facts)}, its routes still at both"
        return "; ".join(f"at {role} {dead}'s session {'still Established' if up else 'down'}, "
                         f"its route {'still there' if routed else 'gone'}" for role, (up, routed) in facts.items())

    def close(self) -> None:
        for fib in self.fibs.values():
            fib.close()  # an open netlink socket would keep the router namespace alive
        self.fibs.clear()
        for bird in self.birds.values():
            bird.stop()
        from generic.bgp.exabgp import WORKDIR_PREFIX

        for pid in self.killed:  # a SIGKILLed manager never closed its speaker
            for path in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}{pid}-*"):
                shutil.rmtree(path, ignore_errors=True)


class _Timeline:
    def __init__(self, lab: LabCluster, router: _Router | None = None) -> None:
        self.lab = lab
        self.router = router
        self.start = time.monotonic()
        self.outages: list[dict[str, Any]] = []
        self._last: tuple[str, tuple[str, ...], str] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.dead: set[str] = set()  # crashed nodes: the address stays on their interface but reaches nobody
        self.thread: threading.Thread | None = None

    def say(self, text: str) -> None:
        with self._lock:
            print(f"  {time.monotonic() - self.start:7.3f}s  {text}", flush=True)

    def watch_state(self) -> None:
        while not self._stop.wait(0.02):
            holders = tuple(f"{n}(dead)" if n in self.dead else n for n in self.lab.holders())
            if self.router is not None:  # routed: what matters is where the router(s) send the VIP
                view = self.router.view(self.dead)
            elif self.lab.metal:  # the client's ARP entry means nothing on a routed EIP; show Metal's view instead
                view = "EIP assigned to " + (",".join(self.lab.eip_holders()) or "-")
            else:
                view = "client's ARP entry -> " + (self.lab.node_of_mac(self.lab.client_mac()) or "-")
            state = (self.lab.lease_holder() or "-", holders, view)
            if state != self._last:
                self._last = state
                self.say(f"lease holder {state[0]:<3}  VIP on {','.join(state[1]) or '-':<15}  {state[2]}")

    def watch_probe(self, probe: subprocess.Popen[str]) -> None:
        assert probe.stdout is not None
        for line in probe.stdout:
            event = json.loads(line)
            if event.get("event") == "outage":  # the prober reports gaps longer than three intervals (15 ms)
                self.outages.append(event)
                self.say(f"client: no reply for {event['seconds'] * 1000:.0f} ms")

    def stop(self) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(2)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _outage_since(timeline: _Timeline, since: float) -> float | None:
    found = [o["seconds"] for o in timeline.outages if o["end"] > since]
    return max(found) if found else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived; raised in the main thread so that everything unwinds as after Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopSignals:
    """While installed, the first stop signal raises Stopped; after `hold()` (teardown) signals are only noted."""

    def __init__(self) -> None:
        self.held = False
        self.owner_pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread receives signals in Python; a caller elsewhere keeps its own handling
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self.owner_pid:  # a forked helper (pyroute2's NetNS forks to open a socket in a namespace),
            signal.signal(signum, signal.SIG_DFL)  # signalled with the whole process group: it dies as without us
            os.kill(os.getpid(), signum)
            return
        if not self.held:
            self.held = True  # this signal's unwinding is the teardown: a second one must not cut it short
            raise Stopped(signum)

    def hold(self) -> None:
        self.held = True

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


def run_lab(keep: bool = False, timers: tuple[float, float, float] = (5, 3, 1), metal: bool = False,
            bgp: bool = False) -> int:
    """Run the lab; 0 when the scenario ran, 1 when no leader came up, 128 + N when stopped by signal N.
    LabError (nothing left behind) when the lab cannot be set up. `bgp` needs BIRD 2 (kubevip_testbed.bird)."""
    stops = _StopSignals()
    stops.install()
    lab: LabCluster | None = None
    router: _Router | None = None
    try:
        lab = LabCluster(timers=timers, metal=metal, vip=BGP_VIP if bgp else None)  # --metal --bgp: EIP reserved
        if bgp:
            lab.mode_args = _Router.mode_args(lab, metal)  # the topology is known before the rig is built
        lab.up()
        if bgp:
            if metal:  # before any manager starts: without it each would exit naming `metal project bgp-enable`
                lab.enable_metal_bgp(asn=NODE_AS, md5=METAL_MD5)
            router = _Router(lab, metal)
            router.start()
        return _scenario(lab, keep, timers, metal, router)
    except Stopped as stop:
        print(f"\n{stop}: removing the lab ...", flush=True)
        return 128 + stop.signum
    finally:
        stops.hold()  # from here on the teardown runs to its end
        if router is not None:
            assert lab is not None
            for process in lab.managers.values():  # while BIRD runs: SIGTERM withdraws from the router
                process.send_signal(signal.SIGTERM)
            for process in lab.managers.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)  # one that does not exit is killed by lab.down()
            router.close()
        if lab is not None:
            lab.down()
        stops.restore()


def _scenario(lab: LabCluster, keep: bool, timers: tuple[float, float, float], metal: bool,
              router: _Router | None) -> int:
    if router is not None and metal:
        where = (f"router (Kubernetes API emulator at 198.51.100.1:6443, Metal API emulator at :8080: project BGP "
                 f"enabled, AS {NODE_AS}, MD5), router2")
    elif router is not None:
        where = f"router (BIRD 2 (AS {ROUTER_AS}, hold {HOLD_TIME} s) and the Kubernetes API emulator at 198.51.100.1)"
    else:
        where = ("router (Kubernetes API emulator at 198.51.100.1:6443"
                 + (", Metal API emulator at :8080)" if metal else ")"))
    print(f"kube-vip-metal lab: 3 nodes, {where}, client; "
          f"{'Elastic IP' if metal else 'VIP'} {lab.vip}{' by BGP' if router is not None else ''}"
          f"{', peers from the Metal API' if router is not None and metal else ''}; "
          f"timers {'/'.join(f'{t:g}' for t in timers)} s", flush=True)
    if router is not None and metal:
        print("Metal's routers: " + ", ".join(f"{peer.address} on {peer.role}" for peer in METAL_ROUTERS)
              + f", a BIRD 2 each (AS {METAL_AS}, MD5, multihop, hold {HOLD_TIME} s); every node peers with both. "
              "The timeline shows each router's kernel FIB and its BIRD's routes, best first.", flush=True)
    for node in lab.nodes:
        lab.start(node)
    timeline = _Timeline(lab, router)
    timeline.thread = threading.Thread(target=timeline.watch_state, daemon=True)
    timeline.thread.start()
    try:
        return _failovers(lab, timeline, keep, timers, metal, router)
    finally:
        timeline.stop()  # before the teardown, which closes the netlink handles the timeline reads through


def _failovers(lab: LabCluster, timeline: _Timeline, keep: bool, timers: tuple[float, float, float],
               metal: bool, router: _Router | None) -> int:
    eip = metal and router is None  # the Elastic IP mode; with BGP (--metal --bgp) no EIP is assigned
    probe = lab.probe()  # in the Elastic IP mode nothing routes the EIP to the client: it just sees no reply
    if not eip:
        threading.Thread(target=timeline.watch_probe, args=(probe,), daemon=True).start()

    def settled() -> bool:
        live = [n for n in lab.holders() if n not in timeline.dead]
        ok = len(live) == 1 and live == [lab.lease_holder()]
        return ok and (not eip or lab.eip_holders() == live) and (
            router is None or all(router.via(role) == live for role in router.roles))

    if not _wait(settled, 30):
        lab.keep_workdir = True
        print("no leader after 30 s; see the manager logs in", lab.workdir)
        return 1

    def fail_leader(what: str, act: Callable[[str], None]) -> tuple[float, float | None]:
        """Do `act` to the leader; return (seconds until a new leader holds the VIP, the client's outage)."""
        time.sleep(timers[0] + 1)  # followers have watched the Lease for a whole term
        leader = lab.lease_holder()
        timeline.say(what.replace("{}", leader))
        started = time.monotonic()
        timeline.dead.add(leader)
        act(leader)
        _wait(lambda: lab.lease_holder() not in ("", leader) and settled(), 60)
        converged = time.monotonic() - started
        time.sleep(1.0)
        return converged, _outage_since(timeline, started)

    crashed: dict[str, Any] = {}

    def crash(node: str) -> None:
        if router is None:
            lab.kill(node)
            lab.rig.link_down(node)
            return
        lab.rig.link_down(node)  # the cable first: nothing more leaves the node, its BGP session lingers
        router.killed.append(lab.managers[node].pid)
        lab.kill(node)
        crashed.update(node=node, at=time.monotonic())

    def stop(node: str) -> None:
        lab.terminate(node)

    crash_converged, crash_outage = fail_leader("CRASH {}: " + ("cable pulled and SIGKILL" if router else
                                                                "SIGKILL and cable pulled"), crash)
    lingering = ""
    if router is not None and crashed:
        lingering = f"; {router.lingering(crashed['node'])} (hold {HOLD_TIME} s)"
    graceful_converged, graceful_outage = fail_leader("STOP {}: SIGTERM (graceful hand-over)", stop)
    timeline.stop()

    if eip:
        print("\nmeasured in the Metal API emulator (time until the new leader's device holds the EIP):")
        print(f"  crash of the leader     {crash_converged * 1000:8.0f} ms  (lease {timers[0]:g} s)")
        print(f"  graceful hand-over      {graceful_converged * 1000:8.0f} ms")
    else:
        print(f"\nmeasured by the client (ICMP echo every 5 ms{', through the router' if router else ''}):")
        print(f"  crash of the leader     outage {_fmt(crash_outage)}  (lease {timers[0]:g} s{lingering})")
        print(f"  graceful hand-over      outage {_fmt(graceful_outage)}")
    if keep:
        print("\nthe lab keeps running; try:")
        for node in lab.nodes:
            print(f"  ip netns exec {lab.rig.ns(node)} ip -br addr show {'lo' if router else 'eth0'}")
        print(f"  ip netns exec {lab.rig.ns('client')} ping {lab.vip}")
        if router is not None:
            for role, bird in router.birds.items():
                print(f"  ip netns exec {lab.rig.ns(role)} ip route show {lab.vip}")
                print(f"  birdc -s {bird.socket} show route {lab.vip}/32 all")
        print(f"  manager logs: {lab.workdir}/<node>.log")
        print("Ctrl-C (or SIGTERM, SIGHUP) removes everything.", flush=True)
        while True:
            time.sleep(3600)  # until a stop signal raises Stopped
    probe.kill()
    print("removing the lab ...", flush=True)
    return 0


def _fmt(seconds: float | None) -> str:
    return "   < 15 ms (no gap of three probes)" if seconds is None else f"{seconds * 1000:8.0f} ms"
