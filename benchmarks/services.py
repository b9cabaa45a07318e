"""Services of type LoadBalancer at scale: N Services (and their EndpointSlices) created at once, to every VIP at
the router's kernel FIB (BGP) or answering the client's ARP (ARP); memory, idle CPU and API requests at rest; and
kube-vip v1.0.0 serving the same Services in BGP mode.

One rig per API tier: three node namespaces, BIRD 2 in the router namespace (AS 65000, a passive session per
node, the nodes in AS 65001, ECMP into the kernel), a client on the LAN.

- **BGP, ours** (the in-process API emulator): `kube-vip-metal manager --controlplane --services --bgp
  --leaderElection` on ONE node (n1): N = 1,000 and 10,000 Services, each with the annotation
  `kube-vip.io/loadbalancerIPs` (198.18.0.0/15) and one EndpointSlice with a serving endpoint on n1, created from
  16 threads; timed from the first create to the last of the N /32s in BIRD's kernel FIB (rtnetlink,
  `kubevip_testbed.bird.FibMonitor`), and split from the manager's JSON log: first and last `service.serving`
  (the controller's decision), last `vip.added` (the VIP controller's address on `lo`), the FIB's last route.
  The 1,000 are deleted (time to the last route gone) before the 10,000 are created. The full run also starts all
  three managers for 1,000 Services: time to every route being a three-way ECMP route.
- **ARP, ours** (emulator): `--services --arp` on three nodes, the holder of the `plndr-svcs-lock` Lease serves
  every Service; 1,000 Services on 100.64.0.0/16 (on-link at the client by a route on its eth0), timed from the
  first create to the last VIP answering the client's ARP requests (a raw socket in the client's namespace asks
  for every unanswered VIP every 20 ms and records the first reply and who sent it).
- **kube-vip v1.0.0** (BGP, `svc_enable=true`, one node, the real kube-apiserver: v1.0.0 speaks protobuf) and ours
  on the same kube-apiserver, 1,000 Services each, the same timing to the router's FIB.
- At rest, after each burst (a 5 s settle, then a window of 30 s; 5 s with `--quick`): RSS of the manager plus its
  ExaBGP children, CPU over the window, API requests per second per node (the emulator's or the fault proxy's
  count by identity and verb).

`--quick` (about a minute and a half): 1,000 Services in BGP on the emulator, 250 by ARP, 200 for kube-vip and
ours on the kube-apiserver, 5 s windows. Progress goes to stderr; stdout gets the tables, then one JSON line with
the headline figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ipaddress
import json
import platform
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what every benchmark shares (benchmarks/ is on sys.path; common.py needs only the standard library)
import common
from common import PREREQUISITES, Timeout, say, wait_for

try:
    from kubevip_testbed import bird as bird_driver
    from kubevip_testbed.bird import Bird, BirdPeer, FibMonitor
    from kubevip_testbed.lab.api_backend import ApiBackend
    from kubevip_testbed.lab.cluster import LabCluster
    from kubevip_testbed.peers import apiserver as real_apiserver
    from kubevip_testbed.peers import kubevip
    from kubevip_testbed.peers.kubevip import KubeVipBgp, KubeVipNode
    from kubevip_testbed.rig import netns, prerequisites_missing
except ModuleNotFoundError as exc:
    raise SystemExit(f"services.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

from bgp import bird_version, descendants, measured_commit
from failover import LogTail, _stat

CP_VIP = "203.0.113.10"
ARP_CP_VIP = "198.51.100.10"
ROUTER_AS, NODE_AS = 65000, 65001
TIMERS = (5.0, 3.0, 1.0)
NAMESPACE = "default"
BGP_TARGETS = {1000: 1.0, 10000: 5.0}  # issue #10: to the router's FIB
CASES = ("bgp", "arp", "arp-election", "kube-apiserver")
ARP_ELECTION_TARGET = 2.0  # issue #10: 1,000 per-Service VIPs answering ARP
WORKERS = 16
SETTLE_CAP = 30.0  # the status writer's 50 writes/s: 10,000 statuses take 200 s, more than we wait


def bgp_vip(i: int) -> str:
    return str(ipaddress.IPv4Address("198.18.0.0") + i)


def arp_vip(i: int) -> str:
    return str(ipaddress.IPv4Address("100.64.0.0") + 1 + i)


# -- the user's writes ----------------------------------------------------------------------------------------


def _service_body(name: str, address: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {"kube-vip.io/loadbalancerIPs": address}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                     "externalTrafficPolicy": "Cluster"}}


def _slice_body(name: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{name}-slice", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.0.1"], "nodeName": "n1",
                           "conditions": {"ready": True, "serving": True}}]}


def _in_parallel(backend: ApiBackend, items: Sequence[Any], work: Callable[[Any, Any], None]) -> float:
    """`work(core_and_discovery, item)` for every item from WORKERS threads, each with its own API client."""
    from kubernetes import client

    started = time.monotonic()
    chunks = [items[i::WORKERS] for i in range(WORKERS)]

    def run(chunk: Sequence[Any]) -> None:
        api = backend.admin_client()
        try:
            apis = (client.CoreV1Api(api), client.DiscoveryV1Api(api))
            for item in chunk:
                work(apis, item)
        finally:
            api.close()

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(run, chunk) for chunk in chunks if chunk]:
            future.result()
    return time.monotonic() - started


def create(backend: ApiBackend, services: Sequence[tuple[str, str]]) -> float:
    def one(apis: Any, item: tuple[str, str]) -> None:
        core, discovery = apis
        name, address = item
        core.create_namespaced_service(NAMESPACE, _service_body(name, address), _preload_content=False)
        discovery.create_namespaced_endpoint_slice(NAMESPACE, _slice_body(name), _preload_content=False)

    return _in_parallel(backend, services, one)


def delete(backend: ApiBackend, names: Sequence[str]) -> float:
    from kubernetes import client

    def one(apis: Any, name: str) -> None:
        core, discovery = apis
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_service(name, NAMESPACE, _preload_content=False)
        with contextlib.suppress(client.ApiException):
            discovery.delete_namespaced_endpoint_slice(f"{name}-slice", NAMESPACE, _preload_content=False)

    return _in_parallel(backend, names, one)


# -- observation ----------------------------------------------------------------------------------------------


class ArpSweeper:
    """Asks for every VIP not yet answered, from the client's eth0, every `interval`; the first reply per VIP
    (time.monotonic() on receipt) and its sender's MAC."""

    ETH_P_ARP = 0x0806

    def __init__(self, lab: LabCluster, vips: Sequence[str], interval: float = 0.02,
                 ignore_mac: str | None = None) -> None:
        self.ignore_mac = ignore_mac  # replies from it do not count (a crashed node's last answers)
        self.targets = {socket.inet_aton(v): v for v in vips}
        self.replies: dict[str, tuple[float, str]] = {}
        self.interval = interval
        self.sock: socket.socket = netns.call_in(lab.rig.ns("client"), self._open)
        self.mac = self.sock.getsockname()[4]
        self.ip = socket.inet_aton(lab.rig.ipv4("client"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._receive, name="arp-rx", daemon=True),
                         threading.Thread(target=self._send, name="arp-tx", daemon=True)]
        for thread in self._threads:
            thread.start()

    @classmethod
    def _open(cls) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(cls.ETH_P_ARP))
        sock.bind(("eth0", cls.ETH_P_ARP))
        sock.settimeout(0.2)
        return sock

    def _send(self) -> None:
        head = b"\xff" * 6 + self.mac + struct.pack("!H", self.ETH_P_ARP) + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
        while not self._stop.is_set():
            with self._lock:
                missing = [raw for raw, vip in self.targets.items() if vip not in self.replies]
            for raw in missing:
                with contextlib.suppress(OSError):
                    self.sock.send(head + self.mac + self.ip + b"\0" * 6 + raw)
            self._stop.wait(self.interval)

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(128)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 42 or data[20:22] != b"\0\2":
                continue
            vip = self.targets.get(data[28:32])
            sender = ":".join(f"{b:02x}" for b in data[22:28])
            if vip is not None and sender != self.ignore_mac:
                with self._lock:
                    self.replies.setdefault(vip, (time.monotonic(), sender))

    def answered(self) -> int:
        with self._lock:
            return len(self.replies)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.sock.close()


def events_since(tail: LogTail, event: str, after: float) -> list[float]:
    return [float(e["mono"]) for e in tail.poll() if e.get("event") == event and float(e.get("mono", 0)) > after]


def at_rest(lab: LabCluster, pids: dict[str, int], seconds: float, backend: ApiBackend) -> dict[str, Any]:
    """RSS (the process and everything below it) and CPU over `seconds`, API requests per second per node."""
    trees = {node: [pid, *descendants(pid)] for node, pid in pids.items()}
    before = {pid: _stat(pid)[0] for tree in trees.values() for pid in tree}
    backend.reset_request_counts()
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    counts = backend.request_counts_by_verb()
    after = {pid: _stat(pid) for tree in trees.values() for pid in tree}
    out: dict[str, Any] = {}
    for node, tree in trees.items():
        verbs = counts.get(node, {})
        out[node] = {"rss_mb": sum(after[p][1] for p in tree), "daemon_rss_mb": after[tree[0]][1],
                     "cpu_pct": sum(after[p][0] - before[p] for p in tree) / elapsed * 100,
                     "requests_per_s": sum(verbs.values()) / elapsed, "verbs": dict(verbs)}
    say(f"  at rest over {elapsed:.0f} s: " + ", ".join(
        f"{n} rss {v['rss_mb']:.1f} MB cpu {v['cpu_pct']:.2f} % req {v['requests_per_s']:.2f}/s {v['verbs']}"
        for n, v in out.items()))
    return out


# -- the measurements -----------------------------------------------------------------------------------------


@dataclass
class Burst:
    who: str  # the row label
    key: str  # the headline key prefix
    services: int
    nodes: int
    created: float  # the creates' wall time
    to_all: float | None  # the first create to the last VIP at the router / answering ARP
    target: float | None = None
    serving_first: float | None = None  # from the first create, the manager's log
    serving_last: float | None = None
    vip_added_last: float | None = None
    vips_added: int | None = None
    withdrawn: float | None = None  # deletes started -> the last route gone
    settled: float = 0.0  # after the burst, until a second without writes (or SETTLE_CAP)
    rest: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    spread: dict[str, int] = field(default_factory=dict)  # per-Service election: VIPs per serving node
    failover: Failover | None = None


@dataclass
class Failover:
    """Per-Service election: the node serving the most VIPs crashes (SIGKILL, cable pulled); every one of its
    VIPs answering ARP from another node."""

    victim: str
    vips: int
    target: float  # lease duration + 1 s (issue #10)
    first: float | None = None
    p50: float | None = None
    last: float | None = None
    moved_to: dict[str, int] = field(default_factory=dict)


def bgp_router(lab: LabCluster) -> Bird:
    peers = [BirdPeer(node, lab.rig.ipv4(node), NODE_AS) for node in lab.nodes]
    return Bird(lab.rig, "router", peers=peers, asn=ROUTER_AS, hold_time=9).start()


def _bgp_mode_args(lab: LabCluster) -> list[str]:
    return ["--bgp", "--leaderElection", "--services", "--bgppeers", f"{lab.rig.ipv4('router')}:{ROUTER_AS}",
            "--localAS", str(NODE_AS), "--bgpHoldTimer", "9"]


def _lo_addresses(lab: LabCluster, node: str) -> list[str]:
    out = lab.rig.run(node, ["ip", "-o", "-4", "addr", "show", "dev", "lo", "scope", "global"], check=False).stdout
    return [line.split()[3] for line in (out or "").splitlines() if len(line.split()) > 3]


def settle(backend: ApiBackend, cap: float) -> float:
    """Wait (at most `cap` s) until a whole second passes without a write (status patches draining)."""
    started = time.monotonic()
    while time.monotonic() - started < cap:
        backend.reset_request_counts()
        time.sleep(1.0)
        counts = backend.request_counts_by_verb()
        if not sum(n for verbs in counts.values() for verb, n in verbs.items() if verb in ("patch", "post")):
            break
    return time.monotonic() - started


def _fib_ready(lab: LabCluster, nodes: int) -> Callable[[], bool]:
    """The control plane's route in the FIB and every started node's session Established."""
    monitor = FibMonitor(lab.rig, "router", {f"{CP_VIP}/32"})

    def ready() -> bool:
        if not monitor.hops():
            return False
        monitor.close()
        return True

    return ready


def _all_hops_at(fib: FibMonitor, prefixes: Sequence[str], hops: int, timeout: float) -> float:
    """When the last prefix became a route with `hops` next hops."""
    deadline = time.monotonic() + timeout
    while True:
        ats = []
        for prefix in prefixes:
            at = next((t for t, h in fib.history(prefix) if len(h) == hops), None)
            if at is None:
                break
            ats.append(at)
        else:
            return max(ats)
        if time.monotonic() > deadline:
            raise Timeout(f"not every route had {hops} next hops within {timeout:g} s")
        time.sleep(0.1)


def ours_bgp(lab: LabCluster, backend: ApiBackend, sizes: Sequence[int], nodes: Sequence[str], rest_s: float,
             label: str, key: str, *, keep_last: bool = False) -> list[Burst]:
    out: list[Burst] = []
    tails = {node: LogTail(lab.log_path(node)) for node in nodes}
    leftovers = {node: len(_lo_addresses(lab, node)) for node in nodes}
    for node in nodes:
        lab.start(node)
    wait_for(f"{label}: control-plane route in the router's FIB", _fib_ready(lab, len(nodes)), 60, poll=0.1)
    for node in nodes:
        _ROUTERS[id(lab)].wait_established(node, timeout=30)
    for index, size in enumerate(sizes):
        services = [(f"svc-{i}", bgp_vip(i)) for i in range(size)]
        prefixes = [f"{address}/32" for _, address in services]
        fib = FibMonitor(lab.rig, "router", prefixes)
        try:
            say(f"{label}: creating {size:,} Services and EndpointSlices from {WORKERS} threads")
            for tail in tails.values():
                tail.poll()
            started = time.monotonic()
            created = create(backend, services)
            say(f"  created in {created:.2f} s; waiting for {size:,} routes in the router's FIB")
            burst = Burst(label, f"{key}_{size}", size, len(nodes), created, None, BGP_TARGETS.get(size))
            if index == 0 and any(leftovers.values()):
                burst.notes.append(f"addresses already on lo before the managers started: {leftovers}")
            try:
                last = fib.wait_all(True, timeout=max(60.0, size / 50))
                if len(nodes) > 1:
                    last = _all_hops_at(fib, prefixes, len(nodes), 60)
                burst.to_all = last - started
            except (Timeout, TimeoutError) as exc:
                burst.notes.append(f"not all routes: {exc}")
            time.sleep(1.0)  # the log's last lines written
            _from_logs(burst, tails, started)
            say(f"  all {size:,} in the FIB after {_s(burst.to_all)} s (serving {_s(burst.serving_first)}.."
                f"{_s(burst.serving_last)} s, last vip.added {_s(burst.vip_added_last)} s, {burst.vips_added or 0} "
                "added)" + (f"; {fib.lost} rtnetlink overflows" if fib.lost else ""))
            _settle_and_rest(lab, backend, burst, {n: lab.managers[n].pid for n in nodes}, rest_s)
            if index < len(sizes) - 1 or not keep_last:
                say(f"  deleting the {size:,}")
                begun = time.monotonic()
                delete(backend, [name for name, _ in services])
                with contextlib.suppress(Timeout, TimeoutError):
                    burst.withdrawn = fib.wait_all(False, timeout=max(60.0, size / 50)) - begun
                say(f"  the last route gone after {_s(burst.withdrawn)} s")
            out.append(burst)
        finally:
            fib.close()
    for node in nodes:
        lab.terminate(node, timeout=15)
    return out


_ROUTERS: dict[int, Bird] = {}


def _start_arp(lab: LabCluster, backend: ApiBackend, lease: str, what: str) -> dict[str, LogTail]:
    """Every node's manager started (their logs followed from here), `lease` held, the client's route to the
    Services' range on its LAN: what both ARP cases begin with."""
    tails = {node: LogTail(lab.log_path(node)) for node in lab.nodes}
    for node in lab.nodes:
        lab.start(node)
    wait_for(what, lambda: backend.lease_holder("kube-system", lease) or None, 30)
    lab.rig.run("client", ["ip", "route", "replace", "100.64.0.0/16", "dev", "eth0"])
    return tails


def _arp_burst(lab: LabCluster, backend: ApiBackend, tails: dict[str, LogTail], burst: Burst
               ) -> dict[str, tuple[float, str]]:
    """`burst.services` Services created at once, timed from the first create to the last VIP answering the
    client's ARP, and split by the managers' logs; the replies (first per VIP: when, from which MAC)."""
    size = burst.services
    services = [(f"svc-{i}", arp_vip(i)) for i in range(size)]
    sweeper = ArpSweeper(lab, [address for _, address in services])
    try:
        for tail in tails.values():
            tail.poll()
        started = time.monotonic()
        burst.created = create(backend, services)
        say(f"  created in {burst.created:.2f} s; waiting for every VIP to answer ARP")
        try:
            wait_for("every VIP answering ARP", lambda: sweeper.answered() == size, max(60.0, size / 20), poll=0.05)
        except Timeout as exc:
            burst.notes.append(f"{sweeper.answered()} of {size} answered: {exc}")
        replies = dict(sweeper.replies)
        if replies:
            burst.to_all = max(t for t, _ in replies.values()) - started
        time.sleep(1.0)
        _from_logs(burst, tails, started)
    finally:
        sweeper.close()
    return replies


def _from_logs(burst: Burst, tails: dict[str, LogTail], started: float) -> None:
    """The burst's split from the managers' JSON logs: first and last `service.serving`, last `vip.added`."""
    serving = [t for tail in tails.values() for t in events_since(tail, "service.serving", started)]
    added = [t for tail in tails.values() for t in events_since(tail, "vip.added", started)]
    if serving:
        burst.serving_first, burst.serving_last = min(serving) - started, max(serving) - started
    if added:
        burst.vip_added_last, burst.vips_added = max(added) - started, len(added)


def _settle_and_rest(lab: LabCluster, backend: ApiBackend, burst: Burst, pids: dict[str, int], rest_s: float) -> None:
    """After a burst: until the writes drain (at most SETTLE_CAP), then the window at rest."""
    burst.settled = settle(backend, SETTLE_CAP)
    say(f"  writes settled after {burst.settled:.1f} s")
    burst.rest = at_rest(lab, pids, rest_s, backend)


def ours_arp(lab: LabCluster, backend: ApiBackend, size: int, rest_s: float) -> Burst:
    """`--services` by ARP on three nodes: the holder of the `plndr-svcs-lock` Lease serves every Service."""
    tails = _start_arp(lab, backend, "plndr-svcs-lock", "services Lease holder")
    holder = backend.lease_holder("kube-system", "plndr-svcs-lock")
    say(f"ARP: {size:,} Services (Lease holder {holder}); creating")
    burst = Burst(f"ours, ARP, 3 nodes ({holder} serves)", f"ours_arp_{size}", size, len(lab.nodes), 0.0, None)
    replies = _arp_burst(lab, backend, tails, burst)
    who = sorted(str(lab.node_of_mac(mac)) for mac in {mac for _, mac in replies.values()})
    if who != [holder]:
        burst.notes.append(f"ARP replies came from {who}, the Lease holder is {holder}")
    say(f"  {len(replies):,} answered, the last after {_s(burst.to_all)} s (from {who}; serving "
        f"{_s(burst.serving_first)}..{_s(burst.serving_last)} s, last vip.added {_s(burst.vip_added_last)} s)")
    _settle_and_rest(lab, backend, burst, {n: p.pid for n, p in lab.managers.items()}, rest_s)
    for node in list(lab.managers):
        lab.terminate(node, timeout=15)
    return burst


def ours_arp_election(lab: LabCluster, backend: ApiBackend, size: int, rest_s: float) -> Burst:
    """`--services --servicesElection` by ARP on three nodes: every Service has its own Lease (kube-vip's
    `kubevip-<name>`), whoever wins it serves that Service; then the busiest node crashes."""
    tails = _start_arp(lab, backend, "plndr-cp-lock", "control-plane Lease holder")
    say(f"ARP, per-Service election: {size:,} Services; creating")
    burst = Burst("ours, ARP, per-Service election, 3 nodes", f"ours_arp_election_{size}", size, len(lab.nodes), 0.0,
                  None, ARP_ELECTION_TARGET)
    replies = _arp_burst(lab, backend, tails, burst)
    for _, mac in replies.values():
        node = str(lab.node_of_mac(mac))
        burst.spread[node] = burst.spread.get(node, 0) + 1
    say(f"  {len(replies):,} answered, the last after {_s(burst.to_all)} s (served by {burst.spread})")
    _settle_and_rest(lab, backend, burst, {n: p.pid for n, p in lab.managers.items()}, rest_s)
    if burst.spread:
        burst.failover = _crash_busiest(lab, replies)
    for node in list(lab.managers):
        lab.terminate(node, timeout=15)
    return burst


def _crash_busiest(lab: LabCluster, replies: dict[str, tuple[float, str]]) -> Failover:
    by_node: dict[str, list[str]] = {}
    for vip, (_, mac) in replies.items():
        by_node.setdefault(str(lab.node_of_mac(mac)), []).append(vip)
    victim = max(by_node, key=lambda n: len(by_node[n]))
    vips = by_node[victim]
    outcome = Failover(victim, len(vips), TIMERS[0] + 1.0)
    sweeper = ArpSweeper(lab, vips, ignore_mac=lab.rig.mac(victim))
    try:
        say(f"  crashing {victim} (SIGKILL, cable pulled), which serves {len(vips):,} VIPs")
        started = time.monotonic()
        lab.kill(victim)
        lab.rig.link_down(victim)
        with contextlib.suppress(Timeout):
            wait_for(f"{len(vips):,} VIPs answering from another node", lambda: sweeper.answered() == len(vips),
                     TIMERS[0] * 4 + 30, poll=0.05)
        times = sorted(t - started for t, _ in sweeper.replies.values())
        if times:
            outcome.first, outcome.p50 = times[0], times[len(times) // 2]
            outcome.last = times[-1] if len(times) == len(vips) else None
        for _, mac in sweeper.replies.values():
            node = str(lab.node_of_mac(mac))
            outcome.moved_to[node] = outcome.moved_to.get(node, 0) + 1
        say(f"  {len(times):,} of {len(vips):,} answered from {outcome.moved_to}: first {_s(outcome.first)} s, "
            f"p50 {_s(outcome.p50)} s, last {_s(outcome.last)} s (target {outcome.target:g} s)")
    finally:
        sweeper.close()
        lab.rig.link_up(victim)
    return outcome


class WideServiceRange(real_apiserver.RealApiServer):
    """The test bed's kube-apiserver with a /16 Service range: its /24 holds 254 ClusterIPs (creating the 255th
    Service fails with "failed to allocate a serviceIP: range is full")."""

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        super()._spawn(name, ["--service-cluster-ip-range=10.96.0.0/16" if a.startswith("--service-cluster-ip-range=")
                              else a for a in argv])


class KubeVipSvcBgp(KubeVipBgp):
    def environment(self, router_id: str) -> dict[str, str]:
        return {**super().environment(router_id), "svc_enable": "true"}


def kubevip_bgp(lab: LabCluster, backend: ApiBackend, size: int, rest_s: float) -> Burst:
    settings = KubeVipSvcBgp(lab.rig.ipv4("router"), ROUTER_AS, NODE_AS, hold_time=9, keepalive=3)
    peer = KubeVipNode(lab, "n1", kubevip.TESTED_VERSION, [int(t) for t in TIMERS], bgp=settings)
    label = f"kube-vip {kubevip.TESTED_VERSION}, BGP, 1 node"
    services = [(f"kv-{i}", bgp_vip(i)) for i in range(size)]
    prefixes = [f"{address}/32" for _, address in services]
    burst = Burst(label, f"kube_vip_bgp_{size}", size, 1, 0.0, None, BGP_TARGETS.get(size))
    peer.start()
    fib = FibMonitor(lab.rig, "router", prefixes)
    try:
        wait_for(f"{label}: control-plane route in the router's FIB", _fib_ready(lab, 1), 90, poll=0.1)
        say(f"{label}: creating {size:,} Services and EndpointSlices")
        started = time.monotonic()
        burst.created = create(backend, services)
        say(f"  created in {burst.created:.2f} s; waiting for {size:,} routes in the router's FIB")
        try:
            burst.to_all = fib.wait_all(True, timeout=max(90.0, size / 10)) - started
        except (Timeout, TimeoutError) as exc:
            routed = sum(1 for p in prefixes if fib.hops(p))
            burst.notes.append(f"{routed} of {size} routes in the FIB: {exc}")
        say(f"  all in the FIB after {_s(burst.to_all)} s" + (f" ({'; '.join(burst.notes)})" if burst.notes else ""))
        if peer.alive:
            assert peer.process is not None
            burst.settled = settle(backend, SETTLE_CAP)
            burst.rest = at_rest(lab, {"n1": peer.process.pid}, rest_s, backend)
        else:
            burst.notes.append(f"kube-vip exited {peer.process.returncode if peer.process else '?'}")
    finally:
        fib.close()
        if peer.alive:
            peer.terminate()
        lab.rig.run("n1", ["ip", "addr", "flush", "dev", "lo", "scope", "global"], check=False)
        say(f"  deleting the {size:,}")
        delete(backend, [name for name, _ in services])
    if burst.to_all is None and peer.log_path.exists():
        tail = peer.log_path.read_text(errors="replace").splitlines()[-5:]
        burst.notes.append("kube-vip log tail: " + " | ".join(tail))
    return burst


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- report ---------------------------------------------------------------------------------------------------


def report(bursts: list[Burst], failures: list[str], commit: str, elapsed: float, quick: bool) -> dict[str, Any]:
    print(f"measured: {commit}; {time.strftime('%Y-%m-%d')}; {platform.node()} ({_cores()} cores); router BIRD "
          f"{bird_version()}, ECMP to the kernel; Services + EndpointSlices created from {WORKERS} threads"
          + ("; --quick" if quick else ""))
    print(f"{'case':<44} {'N':>6} {'create s':>8} {'all s':>8} {'- create':>8} {'target':>7} "
          f"{'serving 1st..last s':>19} "
          f"{'vip.added last s':>16} {'withdraw s':>10} {'settle s':>8}")
    headline: dict[str, Any] = {}
    for b in bursts:
        target = f"{b.target:g} s" if b.target else ""
        verdict = "" if b.target is None or b.to_all is None else (" ok" if b.to_all <= b.target else " MISS")
        serving = f"{_s(b.serving_first)}..{_s(b.serving_last)}" if b.serving_first is not None else "-"
        after_create = _s(b.to_all - b.created if b.to_all else None)
        print(f"{b.who:<44} {b.services:>6,} {b.created:>8.2f} {_s(b.to_all):>8} {after_create:>8} "
              f"{target + verdict:>7} "
              f"{serving:>19} {_s(b.vip_added_last):>16} {_s(b.withdrawn):>10} {b.settled:>8.1f}")
        headline[f"{b.key}_s"] = None if b.to_all is None else round(b.to_all, 3)
        headline[f"{b.key}_create_s"] = round(b.created, 2)
    print()
    print(f"{'at rest (after the burst)':<44} {'N':>6} {'RSS MB':>8} {'CPU %':>7} {'API req/s':>10}  verbs")
    for b in bursts:
        for node, v in b.rest.items():
            print(f"{b.who + ' ' + node:<44} {b.services:>6,} {v['rss_mb']:>8.1f} {v['cpu_pct']:>7.2f} "
                  f"{v['requests_per_s']:>10.2f}  {v['verbs']}")
        if b.rest:
            headline[f"{b.key}_rss_mb"] = round(max(v["rss_mb"] for v in b.rest.values()), 1)
            headline[f"{b.key}_idle_cpu_pct"] = round(max(v["cpu_pct"] for v in b.rest.values()), 3)
            headline[f"{b.key}_api_req_per_s"] = round(max(v["requests_per_s"] for v in b.rest.values()), 3)
    failovers = [b for b in bursts if b.failover is not None]
    if failovers:
        print()
        print(f"{'per-Service failover (busiest node crashed)':<44} {'VIPs':>6} {'first s':>8} {'p50 s':>8} "
              f"{'last s':>8} {'target':>9}  served before -> moved to")
        for b in failovers:
            f = b.failover
            assert f is not None
            verdict = "" if f.last is None else (" ok" if f.last <= f.target else " MISS")
            print(f"{b.who + ' ' + f.victim:<44} {f.vips:>6,} {_s(f.first):>8} {_s(f.p50):>8} {_s(f.last):>8} "
                  f"{f'{f.target:g} s' + verdict:>9}  {b.spread} -> {f.moved_to}")
            headline[f"{b.key}_failover_last_s"] = None if f.last is None else round(f.last, 3)
            headline[f"{b.key}_failover_vips"] = f.vips
    print()
    notes = failures + [f"{b.who} {b.services}: {n}" for b in bursts for n in b.notes]
    print(f"wall time {elapsed / 60:.1f} min; failures/notes: {len(notes)}")
    for note in notes:
        print(f"  note: {note}")
    headline.update(date=time.strftime("%Y-%m-%d"), commit=commit.split()[0], machine=f"{_cores()} cores",
                    quick=quick, failures=len(failures), seconds=round(elapsed))
    return headline


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


# -- main -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 by BGP, 250 by ARP, 200 for kube-vip; 5 s windows")
    parser.add_argument("--no-kube-vip", action="store_true", help="skip the kube-apiserver tier (kube-vip and ours)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the managers' and kube-vip's logs")
    parser.add_argument("--case", action="append", choices=CASES,
                        help="run only this case (repeatable; default: all)")
    args = parser.parse_args()
    missing = prerequisites_missing() + bird_driver.missing()
    if not args.no_kube_vip and "kube-apiserver" in (args.case or CASES):
        missing += real_apiserver.missing() + kubevip.missing(kubevip.TESTED_VERSION)
    if missing:
        return common.cannot_run("services.py", missing)
    common.exit_on_signals()
    started = time.monotonic()
    commit = measured_commit()
    rest_s = 5.0 if args.quick else 30.0
    bursts: list[Burst] = []
    failures: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="kvm-svcbench-"))
    labs: list[LabCluster] = []

    def guarded(what: str, step: Callable[[], list[Burst]]) -> None:
        try:
            bursts.extend(step())
        except Exception as exc:  # one case's failure (an API error too) must not lose the others
            say(f"FAILED: {what}: {type(exc).__name__}: {exc}")
            failures.append(f"{what}: {type(exc).__name__}: {exc}")

    def bgp_emulator() -> list[Burst]:
        lab = LabCluster(timers=TIMERS, vip=CP_VIP, keep_workdir=True)
        lab.mode_args = _bgp_mode_args(lab)
        labs.append(lab)
        with lab:
            say(f"== BGP on the emulator ({lab.rig.prefix}); measuring {commit}")
            _ROUTERS[id(lab)] = router = bgp_router(lab)
            try:
                out = ours_bgp(lab, lab.api, [1000] if args.quick else [1000, 10000], ["n1"], rest_s,
                               "ours, BGP, 1 node", "ours_bgp")
                if not args.quick:
                    out += ours_bgp(lab, lab.api, [1000], lab.nodes, rest_s, "ours, BGP, 3 nodes (ECMP)",
                                    "ours_bgp_3nodes")
                return out
            finally:
                router.stop()

    def arp_emulator() -> list[Burst]:
        lab = LabCluster(timers=TIMERS, vip=ARP_CP_VIP, keep_workdir=True, extra_args=["--services"])
        labs.append(lab)
        with lab:
            say(f"== ARP on the emulator ({lab.rig.prefix})")
            return [ours_arp(lab, lab.api, 250 if args.quick else 1000, rest_s)]

    def arp_election_emulator() -> list[Burst]:
        lab = LabCluster(timers=TIMERS, vip=ARP_CP_VIP, keep_workdir=True,
                         extra_args=["--services", "--servicesElection"])
        labs.append(lab)
        with lab:
            say(f"== ARP, per-Service election, on the emulator ({lab.rig.prefix})")
            return [ours_arp_election(lab, lab.api, 250 if args.quick else 1000, rest_s)]

    cases = set(args.case or CASES)
    if "bgp" in cases:
        guarded("BGP on the emulator", bgp_emulator)
    if "arp" in cases:
        guarded("ARP on the emulator", arp_emulator)
    if "arp-election" in cases:
        guarded("ARP, per-Service election, on the emulator", arp_election_emulator)
    if not args.no_kube_vip and "kube-apiserver" in cases:
        with contextlib.ExitStack() as stack:
            backend = common.real_api_backend(stack, workdir / "kube-apiserver", WideServiceRange)
            size = 200 if args.quick else 1000

            def real_tier() -> list[Burst]:
                lab = LabCluster(timers=TIMERS, vip=CP_VIP, keep_workdir=True, api=backend)
                lab.mode_args = _bgp_mode_args(lab)
                labs.append(lab)
                out: list[Burst] = []
                with lab:
                    say(f"== BGP on kube-apiserver ({lab.rig.prefix})")
                    _ROUTERS[id(lab)] = router = bgp_router(lab)
                    try:
                        try:
                            out.append(kubevip_bgp(lab, backend, size, rest_s))
                        except Exception as exc:  # ours on this tier still runs
                            say(f"FAILED: kube-vip: {type(exc).__name__}: {exc}")
                            failures.append(f"kube-vip {kubevip.TESTED_VERSION}: {type(exc).__name__}: {exc}")
                        out += ours_bgp(lab, backend, [size], ["n1"], rest_s, "ours, BGP, 1 node, kube-apiserver",
                                        "ours_bgp_kube_apiserver")
                    finally:
                        router.stop()
                return out

            guarded("kube-apiserver tier", real_tier)
    elapsed = time.monotonic() - started
    headline = report(bursts, failures, commit, elapsed, args.quick)
    print(json.dumps(headline))
    for lab in labs:
        common.keep_or_remove(args.keep_logs, lab.workdir)
    common.keep_or_remove(args.keep_logs, workdir, "kube-apiserver files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
