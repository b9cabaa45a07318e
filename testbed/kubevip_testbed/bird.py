"""BIRD 2 as a BGP router inside a rig namespace: the real peer the BGP speaker is proven against.

    bird = Bird(rig, "router", peers=[BirdPeer("n1", rig.ipv4("n1"), 65001, password="s3cret")]).start()
    bird.wait_established("n1")
    bird.wait_fib({"203.0.113.10/32"})            # the router's kernel FIB, not BIRD's or the speaker's view
    bird.stop()

Each instance has its own configuration, log and control socket in a private directory, runs in the foreground
(`bird -f`) as a process the rig tracks (so rig teardown stops it by PID), and exports every BGP route it learns
into its namespace's kernel routing table (`protocol kernel`, ECMP merged), so tests assert on what the router
would forward with. `birdc` talks to the control socket from the root namespace (a socket file needs no netns).

Needs the Debian package `bird2` (`missing()` says what is absent).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from generic.logfmt import get_logger
from kubevip_testbed.rig import Rig, netns, processes

log = get_logger(__name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def missing() -> list[str]:
    """What this machine lacks to run BIRD (empty: nothing)."""
    return [f"{tool} not found (apt-get install bird2)" for tool in ("bird", "birdc") if shutil.which(tool) is None]


@dataclass(frozen=True)
class BirdPeer:
    """One BGP protocol of the router: the speaker at `address` (IPv4 or IPv6) in AS `asn`."""

    name: str
    address: str
    asn: int
    password: str | None = None
    multihop: bool = False
    passive: bool = True  # wait for the speaker to connect (ExaBGP dials out); False: BIRD dials too


@dataclass(frozen=True)
class Protocol:
    """One line of `birdc show protocols`."""

    name: str
    proto: str
    state: str  # "up", "start", "down"
    since: str  # BIRD's timestamp of the last state change: a session that flapped has a new one
    info: str  # "Established", "Active", "Passive", "Connect", ...

    @property
    def established(self) -> bool:
        return self.state == "up" and self.info.startswith("Established")


def _quote(text: str) -> str:
    """A BIRD string literal; BIRD has no escape for a double quote, so a value holding one is refused."""
    if '"' in text or "\n" in text:
        raise ValueError("a BIRD string cannot hold a double quote or a newline")
    return f'"{text}"'


class Bird:
    """A BIRD 2 instance in `role`'s namespace, in AS `asn`, listening for BGP on `port`."""

    def __init__(self, rig: Rig, role: str = "router", *, peers: Sequence[BirdPeer] = (), asn: int = 65000,
                 port: int = 179, hold_time: int = 9) -> None:
        self.rig = rig
        self.role = role
        self.asn = asn
        self.port = port
        self.hold_time = hold_time
        self.peers = tuple(peers)
        self.dir = Path(tempfile.mkdtemp(prefix=f"kvm-bird-{role}-"))
        self.config = self.dir / "bird.conf"
        self.socket = self.dir / "bird.ctl"
        self.log_file = self.dir / "bird.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration

    def render(self) -> str:
        host = self.rig.host(self.role)
        keepalive = max(1, self.hold_time // 3)
        lines = [
            f"log {_quote(str(self.log_file))} all;",
            f"router id {host.ipv4};",
            "protocol device { scan time 10; }",
            # connected networks, for the recursive next-hop lookup of multihop sessions; never exported
            'protocol direct { ipv4; ipv6; interface "eth0"; }',
            "protocol kernel kernel4 { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }",
            "protocol kernel kernel6 { ipv6 { import none; export where source = RTS_BGP; }; merge paths on; }",
        ]
        for peer in self.peers:
            v6 = ipaddress.ip_address(peer.address).version == 6
            local = host.ipv6 if v6 else host.ipv4
            channel = "ipv6" if v6 else "ipv4"
            body = [
                f"local {local} port {self.port} as {self.asn};",
                f"neighbor {peer.address} as {peer.asn};",
                f"{channel} {{ import all; export none; }};",
                f"hold time {self.hold_time}; keepalive time {keepalive}; connect retry time 1;",
                "error wait time 1, 5;",  # the default keeps a failed session idle for a minute
                f"passive {'on' if peer.passive else 'off'};",
            ]
            if peer.multihop:
                body.append("multihop;")
            if peer.password is not None:
                body.append(f"password {_quote(peer.password)};")
            lines.append(f"protocol bgp {peer.name} {{ " + " ".join(body) + " }")
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.config.write_text(self.render())
        self.config.chmod(0o600)
        result = subprocess.run(["bird", "-p", "-c", str(self.config)], capture_output=True, text=True, timeout=10)
        if result.returncode:
            raise RuntimeError(f"bird rejects its configuration {self.config}: {result.stderr.strip()}")

    # -- lifecycle

    def start(self, timeout: float = 10.0) -> Bird:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self._write_config()
        self.proc = self.rig.spawn(self.role, ["bird", "-f", "-c", str(self.config), "-s", str(self.socket)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bird exited with status {self.proc.returncode}; log: {self.log_tail()}")
            if self.socket.exists() and self._birdc(["show", "status"], check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"bird did not answer on {self.socket} within {timeout} s")
            time.sleep(0.01)
        log.info("bird.started", role=self.role, pid=self.proc.pid, peers=[p.name for p in self.peers])

    def reconfigure(self, peers: Sequence[BirdPeer]) -> None:
        """Replace the peers and `birdc configure` (BIRD restarts only the protocols whose settings changed)."""
        self.peers = tuple(peers)
        self._write_config()
        out = self._birdc(["configure"]).stdout
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"birdc configure: {out.strip()}")

    def stop(self) -> None:
        """Stop by PID (SIGTERM, then SIGKILL) and remove the directory. Idempotent."""
        if self.proc is not None:
            processes.terminate([self.proc.pid], grace=2.0)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                log.warning("bird.not_reaped", pid=self.proc.pid)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- BIRD's view

    def _birdc(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["birdc", "-s", str(self.socket), *args], capture_output=True, text=True,
                                timeout=10)
        if check and result.returncode:
            raise RuntimeError(f"birdc {' '.join(args)}: {result.stdout.strip()} {result.stderr.strip()}")
        return result

    def birdc(self, *args: str) -> str:
        """Any birdc command's output, e.g. `bird.birdc("show", "route", "all")`."""
        return self._birdc(args).stdout

    def protocols(self) -> dict[str, Protocol]:
        out: dict[str, Protocol] = {}
        for line in self.birdc("show", "protocols").splitlines():
            fields = line.split(None, 5)
            if len(fields) < 5 or fields[0] in ("BIRD", "Name"):
                continue
            out[fields[0]] = Protocol(fields[0], fields[1], fields[3], fields[4], fields[5] if len(fields) > 5 else "")
        return out

    def protocol(self, name: str) -> Protocol:
        found = self.protocols().get(name)
        if found is None:
            raise KeyError(f"BIRD has no protocol {name!r}")
        return found

    def wait_established(self, name: str, timeout: float = 15.0) -> float:
        """Seconds until protocol `name` is Established (AssertionError with BIRD's view after `timeout`)."""
        started = time.monotonic()
        while not self.protocol(name).established:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{name} not established after {timeout} s: {self.protocol(name)}\n"
                                     f"{self.log_tail()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def route_count(self) -> int:
        """BGP routes in BIRD's tables, all families (`show route where source = RTS_BGP count`)."""
        total = 0
        for line in self.birdc("show", "route", "where", "source", "=", "RTS_BGP", "count").splitlines():
            words = line.split()
            if len(words) >= 2 and words[1] == "of" and words[0].isdigit():
                total += int(words[0])
        return total

    def routes(self, protocol: str | None = None) -> set[Network]:
        """The prefixes BIRD learnt by BGP (from `protocol` only, if given)."""
        args = ["show", "route", *(["protocol", protocol] if protocol else ["where", "source", "=", "RTS_BGP"])]
        out: set[Network] = set()
        for line in self.birdc(*args).splitlines():
            word = line.split(None, 1)[0] if line.strip() else ""
            if "/" in word:
                try:
                    out.add(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    continue
        return out

    # -- the namespace's kernel FIB

    def fib(self, family: int = 4) -> dict[Network, list[str]]:
        """Routes BIRD installed in the kernel of its namespace (`ip route show proto bird`): prefix -> gateways."""
        result = self.rig.run(self.role, ["ip", "-json", f"-{family}", "route", "show", "proto", "bird"])
        out: dict[Network, list[str]] = {}
        for route in json.loads(result.stdout or "[]"):
            dst = route["dst"]
            prefix = ipaddress.ip_network(dst if "/" in dst else f"{dst}/{32 if family == 4 else 128}")
            hops = [hop["gateway"] for hop in route.get("nexthops", []) if "gateway" in hop]
            if "gateway" in route:
                hops.append(route["gateway"])
            out[prefix] = sorted(hops)
        return out

    def wait_fib(self, prefixes: Collection[str | Network], present: bool = True, timeout: float = 10.0,
                 step: float = 0.0005) -> float:
        """Poll the namespace's kernel FIB until every prefix is in it (or, `present=False`, none is); returns
        the `time.monotonic()` at which that was first seen. Reads /proc from a thread inside the namespace,
        cheap enough to poll every half millisecond, so latencies measured with it are sub-millisecond true."""
        targets = {ipaddress.ip_network(p) for p in prefixes}
        families = {t.version for t in targets}

        def poll() -> float:
            deadline = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                have = _kernel_prefixes(families)
                if (targets <= have) if present else not (targets & have):
                    return now
                if now > deadline:
                    state = "missing" if present else "still present"
                    wrong = sorted(str(t) for t in (targets - have if present else targets & have))
                    raise AssertionError(f"{len(wrong)} prefixes {state} in {self.role}'s FIB after {timeout} s: "
                                         f"{wrong[:5]}")
                time.sleep(step)

        return netns.call_in(self.rig.ns(self.role), poll)


def _kernel_prefixes(families: Collection[int]) -> set[Network]:
    """Destinations of the calling thread's namespace's main routing tables (per thread: /proc/thread-self)."""
    out: set[Network] = set()
    if 4 in families:
        with open("/proc/thread-self/net/route") as table:
            next(table)
            for line in table:
                fields = line.split()
                dest = socket.inet_ntoa(struct.pack("<I", int(fields[1], 16)))
                length = bin(int(fields[7], 16)).count("1")
                out.add(ipaddress.IPv4Network(f"{dest}/{length}", strict=False))
    if 6 in families:
        with open("/proc/thread-self/net/ipv6_route") as table:
            for line in table:
                fields = line.split()
                address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                out.add(ipaddress.IPv6Network(f"{address}/{int(fields[1], 16)}", strict=False))
    return out
