"""Client-visible failover of the control-plane VIP: ours (Lease + gratuitous ARP) against kube-vip itself and
keepalived VRRP.

Everything runs side by side in one rig (three node namespaces, a client, a router) and one run, on VIP
198.51.100.10 on the nodes' eth0, against one Kubernetes API: by default a real kube-apiserver (built by
tests/peers/build.sh) behind the fault proxy on the router, each node with its own ServiceAccount token
(`--api emulator`: the Kubernetes API emulator instead):

- ours: one real `kube-vip-metal manager` per node (ARP mode) at the default timers 5/3/1, at 3/2/1 (the
  shortest whole-second set, equal to kube-vip's below) and at 1/0.75/0.2;
- kube-vip v1.0.0 (the newest release the Go module proxy serves), control plane in ARP mode with Lease election,
  at its default timers 5/3/1 (equal to ours) and at 3/2/1; and v0.7.2 (the newest served release with Equinix
  Metal code; v0.8.10 is refused by the proxy) at 5/3/1. kube-vip takes whole seconds only;
- keepalived 2.2 (VRRP only, one per node namespace): VRRPv2 with `advert_int 1` and VRRPv3 with
  `advert_int 0.1`; priorities 200/150/100, every node BACKUP with `nopreempt` (a restarted node never takes
  the VIP back, as with our Lease, and a master's death has exactly one successor).

Two scenarios, each repeated: **crash** (the holder's process SIGKILLed, keepalived's parent and VRRP child,
and its cable pulled with `Rig.link_down`: a power loss) and **graceful** (SIGTERM to the holder: ours steps
down, removes the VIP and releases the Lease; keepalived sends priority 0). After each run the node comes
back as after a reboot (a crashed node's stale VIP deleted, cable plugged in, process restarted) and the next
run waits until the cluster is settled (one holder; for ours the Lease holder too) and every follower has
been up longer than a lease duration (keepalived: its longest master-down interval).

The figure is the **client outage**: the gap in echo replies seen by a prober in the client namespace
(`lab.probe()`, every 2 ms by default; a gap counts when longer than three intervals). For ours also:
leadership to announce (`election.started_leading` to `vip.announced`, the managers' CLOCK_MONOTONIC `mono`),
GARP to client flip (`vip.announced` to the first reply after the outage) and leadership to client flip;
manager RSS after a steady minute and idle CPU (utime + stime over the window) of the leader and followers.

`--only` picks cases (names in `--help`). `--quick` runs one repetition of ours, kube-vip and keepalived v3 at
their defaults with 5 s steady windows (about two minutes: a 5 s lease takes time to expire); the full run 20
repetitions of every case and 60 s steady windows (about 40 minutes). Progress goes to
stderr; stdout gets the table, then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what every benchmark shares (benchmarks/ is on sys.path; common.py needs only the standard library)
import common
from common import PREREQUISITES, Timeout, pct, say, wait_for, wait_for_optional

try:
    from kubevip_testbed.lab.api_backend import ApiBackend
    from kubevip_testbed.lab.cluster import LabCluster
    from kubevip_testbed.lab.keepalived import Keepalived, KeepalivedError, VrrpConfig, binary
    from kubevip_testbed.peers import apiserver as real_apiserver
    from kubevip_testbed.peers import kubevip
    from kubevip_testbed.peers.kubevip import KubeVipNode
    from kubevip_testbed.rig import netns, prerequisites_missing
    from kubevip_testbed.rig.processes import started_at
except ModuleNotFoundError as exc:  # not the virtualenv's Python, or the test bed is not installed
    raise SystemExit(f"failover.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

VIP = "198.51.100.10"
DEFAULT, EQUAL, FAST = (5.0, 3.0, 1.0), (3.0, 2.0, 1.0), (1.0, 0.75, 0.2)
CASES = ("ours", "ours-3-2-1", "ours-fast", "kube-vip", "kube-vip-3-2-1", "kube-vip-v0.7.2", "keepalived-v2",
         "keepalived-v3")
QUICK = ("ours", "kube-vip", "keepalived-v3")
PRIORITIES = (200, 150, 100)
GRACEFUL_TARGET = 0.1
FLIP_TARGET_MS = 10.0
RSS_TARGET_MB = 55.0  # issue #11 item 6: the ARP control plane at rest
CPU_TARGET_LEADER_PCT = 0.3
CPU_TARGET_FOLLOWER_PCT = 0.1


def timers_label(timers: Sequence[float]) -> str:
    return "/".join(f"{t:g}" for t in timers)


def timers_key(timers: Sequence[float]) -> str:
    return "_".join(f"{t:g}".replace(".", "") for t in timers)


# -- observation ----------------------------------------------------------------------------------------------


class Prober:
    """`lab.probe()` in the client namespace for the whole run; a thread collects its outage events."""

    def __init__(self, lab: LabCluster, interval: float) -> None:
        self.interval = interval
        self.process = lab.probe(interval=interval)
        self.outages: list[tuple[float, float]] = []
        self.last_reply = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="prober-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if event.get("event") == "outage":
                    self.outages.append((float(event["start"]), float(event["end"])))
                    self.last_reply = max(self.last_reply, float(event["end"]))
                elif event.get("event") == "reply":
                    self.last_reply = max(self.last_reply, float(event["mono"]))

    def flowing(self, within: float = 1.5) -> bool:
        with self._lock:
            return self.last_reply > time.monotonic() - within

    def replied_after(self, moment: float) -> bool:
        with self._lock:
            return self.last_reply > moment

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        """Outages that ended after `start` and began before `end`."""
        with self._lock:
            return [o for o in self.outages if o[1] > start and o[0] < end]

    def outage_after(self, what: str, event_at: float) -> tuple[tuple[float, float], list[tuple[float, float]]]:
        """The longest outage since a fault at `event_at` and every outage since: waited for (an outage is
        reported when replies resume), then 0.1 s more so that a second gap right after the first shows too.
        Timeout when replies never paused for more than three intervals within 5 s."""
        def seen() -> tuple[float, float] | None:
            found = self.between(event_at, time.monotonic())
            return max(found, key=lambda o: o[1] - o[0]) if found else None

        wait_for(f"{what}: client replies after the event", seen, 5.0, poll=0.01)
        time.sleep(0.1)
        found = self.between(event_at, time.monotonic())
        return max(found, key=lambda o: o[1] - o[0]), found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(Exception):
                self.process.wait(5)
        self._thread.join(2)


class GarpSniffer:
    """Gratuitous ARPs for the VIP as the client's eth0 receives them, with kernel receive timestamps
    (SO_TIMESTAMPNS, CLOCK_REALTIME, converted to CLOCK_MONOTONIC): when an announcement really hit the wire,
    independent of when a daemon logged it."""

    SO_TIMESTAMPNS = 35
    ETH_P_ARP = 0x0806

    def __init__(self, lab: LabCluster, vip: str) -> None:
        self.vip = socket.inet_aton(vip)
        self.sock = netns.call_in(lab.rig.ns("client"), self._open)
        self.seen: list[tuple[float, str]] = []  # (mono, sender MAC)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="garp-sniffer", daemon=True)
        self._thread.start()

    @classmethod
    def _open(cls) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(cls.ETH_P_ARP))
        sock.bind(("eth0", 0))
        sock.setsockopt(socket.SOL_SOCKET, cls.SO_TIMESTAMPNS, 1)
        sock.settimeout(0.5)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(256, socket.CMSG_SPACE(16))
            except TimeoutError:
                continue
            except OSError:
                return
            mono = time.monotonic()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == self.SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    mono -= time.time() - (sec + nsec / 1e9)
            if len(data) < 42:
                continue
            sha, spa, tpa = data[22:28], data[28:32], data[38:42]
            if spa == tpa == self.vip:
                with self._lock:
                    self.seen.append((mono, ":".join(f"{b:02x}" for b in sha)))

    def first(self, mac: str, after: float) -> float | None:
        with self._lock:
            return next((t for t, sender in self.seen if t > after and sender == mac), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()  # an open socket would keep the client namespace alive after the rig is down


class LogTail:
    """A manager's JSON log, read incrementally (the file keeps every run of that node)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return self.events
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))
        return self.events

    def first(self, event: str, after_mono: float) -> float | None:
        for entry in self.poll():
            if entry.get("event") == event and float(entry.get("mono", 0.0)) > after_mono:
                return float(entry["mono"])
        return None


def _stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, utime + stime of all threads; RSS in MB) of a live process."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return cpu, rss_kb * 1024 / 1e6


# -- implementations under test -------------------------------------------------------------------------------


@dataclass
class Run:
    case: str
    scenario: str
    victim: str
    successor: str
    outage: float
    below_threshold: bool = False
    extra_outages: list[float] = field(default_factory=list)
    outage_start_after_event: float = 0.0
    event_to_lead: float | None = None
    lead_to_announce: float | None = None
    announce_to_client: float | None = None
    lead_to_client: float | None = None
    lead_to_garp: float | None = None
    garp_to_client: float | None = None
    announce_log_lag: float | None = None
    notes: list[str] = field(default_factory=list)


class Implementation:
    """What a failover case needs from ours or keepalived."""

    name = ""
    key = ""
    settle_extra = 0.0  # how long a (re)started follower must have watched before the next run
    device = "eth0"  # where a node holds the lab's VIP (bgp.py's and peering.py's on lo)

    def __init__(self, lab: LabCluster) -> None:
        self.lab = lab

    def start_all(self) -> None:
        raise NotImplementedError

    def stop_all(self) -> None:
        raise NotImplementedError

    def holder(self, exclude: Sequence[str] = ()) -> str | None:
        """The one node holding the VIP (and for ours the Lease), `exclude`d nodes ignored; else None."""
        raise NotImplementedError

    def followers_ready(self) -> bool:
        raise NotImplementedError

    def crash(self, node: str) -> None:
        raise NotImplementedError

    def graceful(self, node: str) -> list[str]:
        raise NotImplementedError

    def fault(self, scenario: str, node: str) -> list[str]:
        """The scenario's fault on `node`: "crash" or else graceful; notes on anything unexpected."""
        if scenario == "crash":
            self.crash(node)
            return []
        return self.graceful(node)

    def restart(self, node: str) -> None:
        raise NotImplementedError

    def takeover_timeout(self) -> float:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """The running daemon's PID per node (for RSS and CPU); empty if not measured."""
        return {}

    program = b""  # a word every measured PID's command line must contain

    def measured_pids(self) -> dict[str, int]:
        """`pids()`, each checked to be this implementation's manager: a PID reused by something else would
        measure the wrong process."""
        pids = self.pids()
        for node, pid in pids.items():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if self.program not in cmdline or b"manager" not in cmdline:
                raise RuntimeError(f"PID {pid} of {node} is not a {self.program.decode()} manager: {cmdline!r}")
        return pids

    def revive(self) -> None:
        """Start whatever is not running (after a failed run)."""
        raise NotImplementedError

    def reboot(self, node: str, scenario: str) -> bool:
        """Bring the node back as after a reboot: no stale VIP, cable in, process started. Whether the node still
        held the VIP (after a graceful stop, an anomaly: the daemon should have removed it)."""
        stale = self.lab.vip in self.lab.rig.addresses(node, self.device)
        if stale:
            self.lab.rig.run(node, ["ip", "addr", "del", f"{self.lab.vip}/32", "dev", self.device], check=False)
        if scenario == "crash":
            self.lab.rig.link_up(node)
        self.restart(node)
        return stale

    def replug_and_revive(self) -> None:
        """After a failed run: every cable in, every process running."""
        for node in self.lab.nodes:
            self.lab.rig.link_up(node)
        self.revive()

    def annotate(self, run: Run, event_at: float, client_at: float | None, garp_at: float | None) -> None:
        """Add log-derived timings to a run."""
        if client_at is not None and garp_at is not None:
            run.garp_to_client = client_at - garp_at


class Ours(Implementation):
    def __init__(self, lab: LabCluster, timers: tuple[float, float, float]) -> None:
        super().__init__(lab)
        self.timers = timers
        self.name = f"ours {timers_label(timers)} (Lease + GARP)"
        self.key = f"ours_{{scenario}}_{timers_key(timers)}"
        self.settle_extra = timers[0] + 0.5
        self.tails = {node: LogTail(lab.log_path(node)) for node in lab.nodes}
        self._mark: dict[str, int] = {}  # index into the node's events where its current process begins

    def start(self, node: str) -> None:
        self._mark[node] = len(self.tails[node].poll())
        self.lab.start(node)

    def start_all(self) -> None:
        self.lab.timers = self.timers  # the same rig and emulator; only the managers' flags change
        for node in self.lab.nodes:
            self.start(node)

    def stop_all(self) -> None:
        leader = self.lab.lease_holder()
        for node in sorted(self.lab.managers, key=lambda n: n == leader):  # the leader last: it releases
            code = self.lab.terminate(node, timeout=10)
            if code != 0:
                say(f"  note: {node} exited {code} on SIGTERM")

    def holder(self, exclude: Sequence[str] = ()) -> str | None:
        holders = [node for node in self.lab.holders() if node not in exclude]
        if len(holders) == 1 and self.lab.lease_holder() == holders[0]:
            return holders[0]
        return None

    def followers_ready(self) -> bool:
        """Every manager runs and has observed a leader (its own or another's) since it started."""
        for node in self.lab.nodes:
            process = self.lab.managers.get(node)
            if process is None or process.poll() is not None:
                return False
            seen = self.tails[node].poll()[self._mark.get(node, 0):]
            if not any(e.get("event") in ("election.new_leader", "election.started_leading") for e in seen):
                return False
        return True

    def crash(self, node: str) -> None:
        self.lab.kill(node)
        self.lab.rig.link_down(node)

    def graceful(self, node: str) -> list[str]:
        code = self.lab.terminate(node, timeout=10)
        return [] if code == 0 else [f"{node} exited {code} on SIGTERM"]

    def restart(self, node: str) -> None:
        self.start(node)

    def takeover_timeout(self) -> float:
        return 3 * self.timers[0] + 10

    program = b"kubevip_metal"

    def pids(self) -> dict[str, int]:
        return {node: process.pid for node, process in self.lab.managers.items()}

    def revive(self) -> None:
        for node in self.lab.nodes:
            process = self.lab.managers.get(node)
            if process is None or process.poll() is not None:
                self.lab.managers.pop(node, None)
                self.start(node)

    def annotate(self, run: Run, event_at: float, client_at: float | None, garp_at: float | None) -> None:
        super().annotate(run, event_at, client_at, garp_at)
        tail = self.tails[run.successor]
        lead = wait_for_optional(lambda: tail.first("election.started_leading", event_at), 2.0)
        announced = wait_for_optional(lambda: tail.first("vip.announced", event_at), 2.0)
        if lead is not None:
            run.event_to_lead = lead - event_at
        if lead is not None and announced is not None:
            run.lead_to_announce = announced - lead
        if client_at is not None and announced is not None:
            run.announce_to_client = client_at - announced
        if client_at is not None and lead is not None:
            run.lead_to_client = client_at - lead
        if garp_at is not None and lead is not None:
            run.lead_to_garp = garp_at - lead
        if garp_at is not None and announced is not None:
            run.announce_log_lag = announced - garp_at
        if lead is None or announced is None:
            run.notes.append(f"{run.successor}: started_leading={lead} vip.announced={announced} after the event")


class Vrrp(Implementation):
    def __init__(self, lab: LabCluster, workdir: Path, config: VrrpConfig) -> None:
        super().__init__(lab)
        self.config = config
        self.name = f"keepalived VRRPv{config.version} advert {config.advert_int:g} s"
        self.key = f"keepalived_v{config.version}_{{scenario}}"
        self.settle_extra = config.master_down + 0.5
        files = workdir / f"v{config.version}"
        files.mkdir(parents=True, exist_ok=True)
        self.daemons = {node: Keepalived(lab.rig, node, files, config, priority)
                        for node, priority in zip(lab.nodes, PRIORITIES, strict=False)}
        for daemon in self.daemons.values():
            daemon.write_config()

    def start_all(self) -> None:
        for daemon in self.daemons.values():
            daemon.start()

    def stop_all(self) -> None:
        holders = self.lab.holders()
        for _node, daemon in sorted(self.daemons.items(), key=lambda item: item[0] in holders):
            daemon.terminate()

    def holder(self, exclude: Sequence[str] = ()) -> str | None:
        holders = [node for node in self.lab.holders() if node not in exclude]
        return holders[0] if len(holders) == 1 else None

    def followers_ready(self) -> bool:
        return all(d.running() and d.states() for d in self.daemons.values())

    def crash(self, node: str) -> None:
        self.daemons[node].kill()
        self.lab.rig.link_down(node)

    def graceful(self, node: str) -> list[str]:
        code = self.daemons[node].terminate()
        return [] if code == 0 else [f"keepalived on {node} exited {code} on SIGTERM"]

    def restart(self, node: str) -> None:
        self.daemons[node].start()

    def takeover_timeout(self) -> float:
        return 3 * self.config.master_down + 10

    def revive(self) -> None:
        for daemon in self.daemons.values():
            if not daemon.running():
                daemon.start()


# kube-vip's client-go klog lines are stamped with the wall clock; the prober's with CLOCK_MONOTONIC
WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


class KubeVip(Implementation):
    """kube-vip itself on every node, the same Lease, VIP, API server and rig as ours."""

    program = b"kube-vip"

    def __init__(self, lab: LabCluster, version: str, timers: tuple[float, float, float]) -> None:
        super().__init__(lab)
        self.version, self.timers = version, timers
        self.name = f"kube-vip {version} {timers_label(timers)}"
        self.key = f"kube_vip_{version.replace('.', '_')}_{{scenario}}_{timers_key(timers)}"
        self.settle_extra = timers[0] + 0.5
        self.peers = {node: KubeVipNode(lab, node, version, [int(t) for t in timers]) for node in lab.nodes}

    def start_all(self) -> None:
        for peer in self.peers.values():
            peer.start()

    def stop_all(self) -> None:
        leader = self.lab.lease_holder()
        for _node, peer in sorted(self.peers.items(), key=lambda item: item[0] == leader):
            if peer.alive:
                peer.terminate()
        for node in self.lab.nodes:  # v0.7.2 leaves its VIP behind on SIGTERM
            self.lab.rig.run(node, ["ip", "addr", "del", f"{self.lab.vip}/32", "dev", self.device], check=False)

    def holder(self, exclude: Sequence[str] = ()) -> str | None:
        holders = [node for node in self.lab.holders() if node not in exclude]
        if len(holders) == 1 and self.lab.lease_holder() == holders[0] and self.peers[holders[0]].alive:
            return holders[0]
        return None

    def followers_ready(self) -> bool:
        return all(peer.alive and peer.saw_leader() for peer in self.peers.values())

    def crash(self, node: str) -> None:
        self.peers[node].kill()
        self.lab.rig.link_down(node)

    def graceful(self, node: str) -> list[str]:
        code = self.peers[node].terminate()
        expected = 2 if self.version == kubevip.TESTED_VERSION else 0  # v1.0.0 ends in a panic by design
        return [] if code == expected else [f"kube-vip on {node} exited {code} on SIGTERM"]

    def restart(self, node: str) -> None:
        self.peers[node].start()
        for other, peer in self.peers.items():  # v1.0.0 exits when it loses leadership; a kubelet restarts it
            if other != node and not peer.alive:
                peer.start()

    def revive(self) -> None:
        for peer in self.peers.values():
            if not peer.alive:
                peer.start()

    def takeover_timeout(self) -> float:
        return 3 * self.timers[0] + 10

    def pids(self) -> dict[str, int]:
        return {node: peer.process.pid for node, peer in self.peers.items() if peer.process and peer.alive}

    def annotate(self, run: Run, event_at: float, client_at: float | None, garp_at: float | None) -> None:
        super().annotate(run, event_at, client_at, garp_at)
        peer = self.peers[run.successor]
        wall = event_at + WALL_MINUS_MONOTONIC
        lead = wait_for_optional(lambda: next((a.timestamp() - WALL_MINUS_MONOTONIC for a in peer.acquisitions()
                                               if a.timestamp() > wall), None), 2.0)
        if lead is not None:
            run.event_to_lead = lead - event_at
            if client_at is not None:
                run.lead_to_client = client_at - lead
            if garp_at is not None:
                run.lead_to_garp = garp_at - lead


# -- the runs -------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, lab: LabCluster, prober: Prober, sniffer: GarpSniffer) -> None:
        self.lab, self.prober, self.sniffer = lab, prober, sniffer
        self.runs: list[Run] = []
        self.failures: list[str] = []
        self.background: list[tuple[str, float]] = []  # gaps between runs (restart, settling), by case
        self.anomalies: list[str] = []
        self._calm_from: float | None = None  # when the client last recovered in this case

    def ready(self, impl: Implementation) -> str:
        """Wait until settled, every follower has watched for long enough, and the client gets replies."""
        holder = wait_for(f"{impl.name}: one holder", impl.holder, 60)
        wait_for(f"{impl.name}: followers up", impl.followers_ready, 60)
        time.sleep(impl.settle_extra)
        wait_for(f"{impl.name}: client replies", self.prober.flowing, 15)
        now = wait_for(f"{impl.name}: settled", impl.holder, 10)
        if now != holder:
            self.anomalies.append(f"{impl.name}: holder moved {holder} -> {now} while settled (no fault injected)")
        return now

    def case(self, impl: Implementation, scenario: str, runs: int) -> list[Run]:
        say(f"{impl.name}, {scenario}: {runs} runs")
        self._calm_from = None
        done: list[Run] = []
        attempts = 0
        while len(done) < runs and attempts < runs + 5:
            attempts += 1
            try:
                done.append(self.one(impl, scenario))
            except (Timeout, KeepalivedError, OSError) as exc:
                message = f"{impl.name} {scenario} attempt {attempts}: {exc}"
                say(f"  FAILED: {message}")
                self.failures.append(message)
                self.recover(impl)
                self._calm_from = None
        self.runs.extend(done)
        return done

    def one(self, impl: Implementation, scenario: str) -> Run:
        victim = self.ready(impl)
        event_at = time.monotonic()
        if self._calm_from is not None:  # a node's return or the settling must not cost the client anything
            for start, end in self.prober.between(self._calm_from, event_at):
                self.background.append((impl.name, end - start))
                say(f"  gap of {(end - start) * 1000:.1f} ms between runs, {event_at - end:.1f} s before the event")
        notes = impl.fault(scenario, victim)
        successor = wait_for(f"{impl.name}: successor", lambda: impl.holder(exclude=[victim]),
                             impl.takeover_timeout(), poll=0.01)
        took_over = time.monotonic()
        client_at: float | None
        try:
            outage, found = self.prober.outage_after(impl.name, event_at)
            self._calm_from = time.monotonic()
            run = Run(impl.name, scenario, victim, successor, outage[1] - outage[0],
                      extra_outages=[e - s for s, e in found if (s, e) != outage],
                      outage_start_after_event=outage[0] - event_at)
            client_at = outage[1]
        except Timeout:
            if not self.prober.replied_after(took_over):
                raise
            # replies never paused for more than three intervals: the gap is at most that
            run = Run(impl.name, scenario, victim, successor, 3 * self.prober.interval, below_threshold=True)
            client_at = None
            self._calm_from = time.monotonic()
        run.notes += notes
        garp_at = wait_for_optional(lambda: self.sniffer.first(self.lab.rig.mac(successor), event_at), 1.0)
        impl.annotate(run, event_at, client_at, garp_at)
        if impl.reboot(victim, scenario) and scenario == "graceful":  # the victim back as after a reboot
            self.anomalies.append(f"{impl.name}: {victim} still held {VIP} after its SIGTERM exit")
        lead = f", lead->client {run.lead_to_client * 1000:.1f} ms" if run.lead_to_client is not None else ""
        say(f"  {scenario} run {victim}->{successor}: outage {run.outage:.3f} s"
            f"{' (below threshold)' if run.below_threshold else ''}{lead}"
            f"{' extra gaps ' + str([round(x, 3) for x in run.extra_outages]) if run.extra_outages else ''}"
            f"{' NOTE ' + '; '.join(run.notes) if run.notes else ''}")
        return run

    def recover(self, impl: Implementation) -> None:
        """After a failed run: every cable in, every process running, then wait for a holder."""
        impl.replug_and_revive()
        wait_for(f"{impl.name}: recovery", impl.holder, 60)

    def steady(self, impl: Implementation, seconds: float) -> dict[str, Any]:
        """RSS and CPU of each daemon over `seconds` of steady state (no fault, one leader)."""
        leader = self.ready(impl)
        pids = impl.measured_pids()
        say(f"{impl.name}: steady state for {seconds:g} s (leader {leader}), sampling CPU and RSS")
        before = {node: _stat(pid)[0] for node, pid in pids.items()}
        self.lab.api.reset_request_counts()
        started = time.monotonic()
        time.sleep(seconds)
        after = {node: _stat(pid) for node, pid in pids.items()}
        elapsed = time.monotonic() - started
        requests = self.lab.api.request_counts_by_verb()
        if impl.holder() != leader:
            self.anomalies.append(f"{impl.name}: leader changed during the steady window")
        cpu = {node: (after[node][0] - before[node]) / elapsed * 100 for node in pids}
        rss = {node: after[node][1] for node in pids}
        uptime = {node: time.time() - (started_at(pid) or time.time()) for node, pid in pids.items()}
        rates = {node: {verb: count / elapsed for verb, count in sorted(requests.get(node, {}).items())}
                 for node in pids}
        say("  " + ", ".join(f"{n}{'*' if n == leader else ''} cpu {cpu[n]:.3f} % rss {rss[n]:.1f} MB"
                             for n in pids))
        return {"name": impl.name, "leader": leader, "cpu": cpu, "rss": rss, "seconds": elapsed,
                "uptime_min": min(uptime.values()), "api_rates": rates}


# -- report ---------------------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def _stat_row(label: str, values: Sequence[float], target_text: str, target: float | None,
              headline: dict[str, Any], key: str, unit: str, decimals: int, digits: int, empty_note: str = "") -> None:
    """One table row (runs, p50, p99, max, target and verdict) and its `<key>_p50_<unit>` / `_p99_` figures."""
    if not values:
        print(f"{label} {0:>4} {'-':>8} {'-':>8} {'-':>8}  {target_text}{empty_note}")
        headline[f"{key}_p99_{unit}"] = None
        return
    p50, p99 = statistics.median(values), pct(values, 0.99)
    verdict = f"  {_mark(p99 <= target)}" if target is not None else ""
    print(f"{label} {len(values):>4} {p50:>8.{decimals}f} {p99:>8.{decimals}f} {max(values):>8.{decimals}f}  "
          f"{target_text}{verdict}")
    headline[f"{key}_p50_{unit}"] = round(p50, digits)
    headline[f"{key}_p99_{unit}"] = round(p99, digits)


def report(bench: Bench, cases: list[tuple[Implementation, str, str, float | None]],
           steady: dict[str, dict[str, Any]], runs: int, elapsed: float) -> dict[str, Any]:
    """Print the tables; `steady` maps a headline prefix ("" for ours at 5/3/1) to a steady-state window."""
    print(f"{'implementation / config':<36} {'scenario':<9} {'runs':>4} {'p50 s':>8} {'p99 s':>8} {'max s':>8}  target")
    headline: dict[str, Any] = {}
    for impl, scenario, target_text, target in cases:
        values = [r.outage for r in bench.runs if r.case == impl.name and r.scenario == scenario]
        _stat_row(f"{impl.name:<36} {scenario:<9}", values, target_text, target, headline,
                  impl.key.format(scenario=scenario), "s", 3, 4, empty_note="  NO RUNS")

    ours_runs = [r for r in bench.runs if r.case.startswith("ours")]
    graceful = [r.outage for r in ours_runs if r.scenario == "graceful"]
    headline["ours_graceful_p99_s"] = round(pct(graceful, 0.99), 4) if graceful else None  # both timer sets
    print()
    print(f"{'timings (ms), all configs and scenarios':<62} {'runs':>4} {'p50':>8} {'p99':>8} {'max':>8}  target")
    keepalived_runs = [r for r in bench.runs if r.case.startswith("keepalived")]
    for label, runs_of, attr, key, target_ms in (
            ("ours: leadership -> announce (started_leading->vip.announced)", ours_runs, "lead_to_announce",
             "lead_to_announce", None),
            ("ours: GARP flip (vip.announced -> first reply)", ours_runs, "announce_to_client", "flip", None),
            ("ours: leadership -> client flip (started_leading->reply)", ours_runs, "lead_to_client",
             "lead_to_client", FLIP_TARGET_MS),
            ("ours: leadership -> first GARP on the wire (client's NIC)", ours_runs, "lead_to_garp", "lead_to_garp",
             None),
            ("ours: GARP on the wire -> first reply", ours_runs, "garp_to_client", "garp_wire_to_client", None),
            ("ours: GARP on the wire -> vip.announced logged", ours_runs, "announce_log_lag", "announce_log_lag",
             None),
            ("keepalived: GARP on the wire -> first reply", keepalived_runs, "garp_to_client",
             "keepalived_garp_wire_to_client", None)):
        values = [getattr(r, attr) * 1000 for r in runs_of if getattr(r, attr) is not None]
        target_text = f"p99 <= {target_ms:g} ms" if target_ms is not None else ""
        _stat_row(f"{label:<62}", values, target_text, target_ms, headline, key, "ms", 2, 2)

    print()
    for prefix, data in steady.items():
        leader = data["leader"]
        followers = [n for n in data["cpu"] if n != leader]
        rss_max = max(data["rss"].values())
        cpu_leader = data["cpu"][leader]
        cpu_follower = max(data["cpu"][n] for n in followers)
        ours = data["name"].startswith("ours")
        rss_verdict = f"  target <= {RSS_TARGET_MB:g} MB  {_mark(rss_max <= RSS_TARGET_MB)}" if ours else ""
        cpu_verdict = (f"  target <= {CPU_TARGET_LEADER_PCT:g} % / {CPU_TARGET_FOLLOWER_PCT:g} %  "
                       + _mark(cpu_leader <= CPU_TARGET_LEADER_PCT and cpu_follower <= CPU_TARGET_FOLLOWER_PCT)
                       if ours else "")
        print(f"{data['name']}: RSS after {data['uptime_min']:.0f} s up: "
              + ", ".join(f"{n} {v:.1f}" for n, v in sorted(data["rss"].items()))
              + f" MB; max {rss_max:.1f} MB{rss_verdict}")
        print(f"{data['name']}: idle CPU over {data['seconds']:.0f} s: leader {leader} {cpu_leader:.3f} %, followers "
              + ", ".join(f"{n} {data['cpu'][n]:.3f}" for n in followers) + f" %{cpu_verdict}")
        print(f"{data['name']}: API requests/s in that window: "
              + "; ".join(f"{n}{'*' if n == leader else ''} "
                          + (", ".join(f"{verb} {rate:.2f}" for verb, rate in data["api_rates"][n].items()) or "none")
                          for n in sorted(data["api_rates"])))
        headline[f"{prefix}rss_mb"] = round(rss_max, 1)
        headline[f"{prefix}idle_cpu_pct"] = round(max(cpu_leader, cpu_follower), 3)
        headline[f"{prefix}idle_cpu_leader_pct"] = round(cpu_leader, 3)
        headline[f"{prefix}idle_cpu_follower_pct"] = round(cpu_follower, 3)

    below = [r for r in bench.runs if r.below_threshold]
    extra = [r for r in bench.runs if r.extra_outages]
    print()
    print(f"runs: {len(bench.runs)}; failed attempts: {len(bench.failures)}; below the prober's threshold "
          f"(3 x {bench.prober.interval * 1000:g} ms, counted as that): {len(below)}; runs with a second gap: "
          f"{len(extra)}; gaps while settled: {len(bench.background)}"
          + (f" (max {max(g for _, g in bench.background) * 1000:.1f} ms)" if bench.background else "")
          + f"; wall time {elapsed / 60:.1f} min")
    for line in bench.failures + bench.anomalies + [f"{r.case} {r.scenario}: {'; '.join(r.notes)}"
                                                     for r in bench.runs if r.notes]:
        print(f"  note: {line}")
    headline.update(runs=runs, failed_attempts=len(bench.failures), anomalies=len(bench.anomalies),
                    probe_interval_ms=bench.prober.interval * 1000, seconds=round(elapsed))
    return headline


# -- main -----------------------------------------------------------------------------------------------------


def targets(impl: Implementation, scenario: str) -> tuple[str, float | None]:
    if isinstance(impl, Ours):
        target = impl.timers[0] + 0.2 if scenario == "crash" else GRACEFUL_TARGET
        return f"p99 <= {target:.3f} s", target
    if scenario == "crash" and isinstance(impl, Vrrp):
        return ("reference (RIG.md: 3.0-3.1 s)" if impl.config.version == 2 else
                "reference (RIG.md: 0.330-0.335 s)"), None
    return "reference", None


def _cases(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in CASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown case(s) {', '.join(unknown) or text!r}; known: {', '.join(CASES)}")
    return chosen


def _implementations(lab: LabCluster, workdir: Path, chosen: Sequence[str]) -> dict[str, Implementation]:
    made: dict[str, Implementation] = {
        "ours": Ours(lab, DEFAULT), "ours-3-2-1": Ours(lab, EQUAL), "ours-fast": Ours(lab, FAST),
        "kube-vip": KubeVip(lab, kubevip.TESTED_VERSION, DEFAULT),
        "kube-vip-3-2-1": KubeVip(lab, kubevip.TESTED_VERSION, EQUAL),
        "kube-vip-v0.7.2": KubeVip(lab, kubevip.METAL_VERSION, DEFAULT)}
    if "keepalived-v2" in chosen:
        made["keepalived-v2"] = Vrrp(lab, workdir, VrrpConfig(VIP, version=2, advert_int=1.0))
    if "keepalived-v3" in chosen:
        made["keepalived-v3"] = Vrrp(lab, workdir, VrrpConfig(VIP, version=3, advert_int=0.1))
    return {name: made[name] for name in CASES if name in chosen}


STEADY = {"ours": "", "ours-fast": "ours_1_075_02_", "kube-vip": "kube_vip_"}  # case -> headline prefix


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"1 run per case of {', '.join(QUICK)} (unless --only), 5 s steady windows")
    parser.add_argument("--runs", type=int, help="runs per case (default 20, --quick 1)")
    parser.add_argument("--interval", type=float, default=0.002, help="probe interval in seconds")
    parser.add_argument("--api", choices=("kube-apiserver", "emulator"), default="kube-apiserver",
                        help="the Kubernetes API the managers and kube-vip use (default: a real kube-apiserver)")
    parser.add_argument("--only", type=_cases, metavar="CASE[,CASE...]",
                        help=f"cases to run, of: {', '.join(CASES)} (default all)")
    common.add_file_options(parser, "managers' and keepalived's logs")
    args = parser.parse_args()
    args.only = args.only or (list(QUICK) if args.quick else list(CASES))
    runs = args.runs or (1 if args.quick else 20)
    steady_seconds = {"ours": 60.0, "ours-fast": 30.0, "kube-vip": 60.0} if not args.quick else \
        dict.fromkeys(STEADY, 5.0)
    missing = prerequisites_missing()
    if args.api == "kube-apiserver":
        missing += real_apiserver.missing()
    elif any(name.startswith("kube-vip") for name in args.only):
        parser.error("kube-vip needs --api kube-apiserver (v1.0.0 speaks protobuf, which the emulator does not)")
    for name, version in (("kube-vip", kubevip.TESTED_VERSION), ("kube-vip-3-2-1", kubevip.TESTED_VERSION),
                          ("kube-vip-v0.7.2", kubevip.METAL_VERSION)):
        if name in args.only:
            missing += [m for m in kubevip.missing(version) if m not in missing]
    if any(name.startswith("keepalived") for name in args.only):
        try:
            binary()
        except KeepalivedError as exc:
            missing.append(str(exc))
    if missing:
        return common.cannot_run("failover.py", missing)

    common.exit_on_signals()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = common.scratch_dir(stack, "kvm-failover-", args.keep_logs)
        backend: ApiBackend | None = None
        if args.api == "kube-apiserver":
            backend = common.real_api_backend(stack, workdir / "kube-apiserver")
        return _run(args, runs, steady_seconds, workdir, backend, started)


def _run(args: argparse.Namespace, runs: int, steady_seconds: dict[str, float], workdir: Path,
         backend: ApiBackend | None, started: float) -> int:
    lab = LabCluster(timers=DEFAULT, vip=VIP, keep_workdir=True, api=backend)  # removed below unless --keep-logs
    namespaces = lab.rig.namespaces
    steady: dict[str, dict[str, Any]] = {}
    cases: list[tuple[Implementation, str, str, float | None]] = []
    impls: dict[str, Implementation] = {}
    prober: Prober | None = None
    sniffer: GarpSniffer | None = None
    try:
        with lab:  # on any exit: daemons killed, the API stopped, every process in the rig stopped by PID
            say(f"rig up ({lab.rig.prefix}, API: {args.api}); prober every {args.interval * 1000:g} ms; "
                f"{runs} runs per case")
            prober = Prober(lab, args.interval)
            sniffer = GarpSniffer(lab, VIP)
            bench = Bench(lab, prober, sniffer)
            impls = _implementations(lab, workdir, args.only)
            try:
                for name, impl in impls.items():
                    say(f"== {impl.name}: starting")
                    impl.start_all()
                    if name in STEADY:
                        steady[STEADY[name]] = bench.steady(impl, steady_seconds[name])
                    for scenario in ("crash", "graceful"):
                        bench.case(impl, scenario, runs)
                        cases.append((impl, scenario, *targets(impl, scenario)))
                    say(f"== {impl.name}: stopping")
                    impl.stop_all()
            finally:
                for impl in impls.values():
                    if isinstance(impl, Vrrp):
                        for daemon in impl.daemons.values():
                            if daemon.running():
                                with contextlib.suppress(Exception):
                                    daemon.kill()
                    elif isinstance(impl, KubeVip):
                        for peer in impl.peers.values():
                            peer.kill()
                if prober is not None:
                    prober.stop()
                if sniffer is not None:
                    sniffer.close()
        common.rig_down(namespaces)
        common.write_details(args.details, bench.runs)
        headline = report(bench, cases, steady, runs, time.monotonic() - started)
        headline["api"] = args.api
        print(json.dumps(headline))
        return 0
    finally:
        common.keep_or_remove(args.keep_logs, lab.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
