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

import contextlib
import errno
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
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
    local: str | None = None  # the router's address on this session (default: its own on the LAN), e.g. a loopback
    local_asn: int | None = None  # the router's AS on this session (default: the BIRD's), as Metal's two routers


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

    def same_session(self, other: Protocol) -> bool:
        """The same session in the same state: nothing changed between the two readings, not even a flap."""
        return (self.name, self.proto, self.state, self.info) == (other.name, other.proto, other.state, other.info) \
            and same_since(self.since, other.since)


SINCE_JITTER = 0.005  # BIRD prints `since` from its monotonic clock plus the wall clock's offset read at each
# command, so one state change reads a millisecond apart now and then (seen in CI); a flap moves it by far more


def _seconds_of_day(since: str) -> float | None:
    """BIRD's `since` (local time of day with milliseconds, `12:24:26.877`) in seconds after midnight."""
    try:
        hours, minutes, seconds = since.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def same_since(a: str, b: str) -> bool:
    """Two `since` readings of one state change (equal within BIRD's display jitter, across midnight too)."""
    if a == b:
        return True
    first, second = _seconds_of_day(a), _seconds_of_day(b)
    if first is None or second is None:
        return False
    apart = abs(first - second) % 86400
    return min(apart, 86400 - apart) <= SINCE_JITTER


def _quote(text: str) -> str:
    """A BIRD string literal; BIRD has no escape for a double quote, so a value holding one is refused."""
    if '"' in text or "\n" in text:
        raise ValueError("a BIRD string cannot hold a double quote or a newline")
    return f'"{text}"'


class Bird:
    """A BIRD 2 instance in `role`'s namespace, in AS `asn`, listening for BGP on `port`."""

    def __init__(self, rig: Rig, role: str = "router", *, peers: Sequence[BirdPeer] = (), asn: int = 65000,
                 port: int = 179, hold_time: int = 9, merge_paths: bool = True, prefer_older: bool = False,
                 static_routes: Sequence[tuple[str, str]] = ()) -> None:
        """`merge_paths`: equally good routes go to the kernel as one ECMP route (off: the best one only).
        `prefer_older`: of two otherwise equal eBGP routes the older wins (FRR's tie-break) instead of the one from
        the lower router ID (BIRD's default); either way a lower MED wins first.
        `static_routes`: (prefix, gateway) pairs in BIRD's own table only (never exported to the kernel), for a
        BIRD whose connected network does not hold its multihop peers, e.g. behind the router:
        `[("198.51.100.0/24", rig.routed["far"].router_ipv4)]`; the next hop a peer sends (its own address)
        resolves recursively through them."""
        self.rig = rig
        self.role = role
        self.asn = asn
        self.port = port
        self.hold_time = hold_time
        self.merge_paths = merge_paths
        self.prefer_older = prefer_older
        self.static_routes = tuple((str(ipaddress.ip_network(prefix)), str(ipaddress.ip_address(gateway)))
                                   for prefix, gateway in static_routes)
        self.peers = tuple(peers)
        self.dir = Path(tempfile.mkdtemp(prefix=f"kvm-bird-{role}-"))
        self.config = self.dir / "bird.conf"
        self.socket = self.dir / "bird.ctl"
        self.log_file = self.dir / "bird.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- configuration

    def render(self) -> str:
        own4, own6 = self.rig.ipv4(self.role), self.rig.ipv6(self.role)
        keepalive = max(1, self.hold_time // 3)
        lines = [
            f"log {_quote(str(self.log_file))} all;",
            f"router id {own4};",
            "protocol device { scan time 10; }",
            # connected networks, for the recursive next-hop lookup of multihop sessions; never exported
            'protocol direct { ipv4; ipv6; interface "eth0"; }',
            *(f"protocol kernel kernel{v} {{ ipv{v} {{ import none; export where source = RTS_BGP; }}; "
              f"merge paths {'on' if self.merge_paths else 'off'}; }}" for v in (4, 6)),
        ]
        for version in (4, 6):
            routes = [f"route {prefix} via {gateway};" for prefix, gateway in self.static_routes
                      if ipaddress.ip_network(prefix).version == version]
            if routes:
                lines.append(f"protocol static static{version} {{ ipv{version}; " + " ".join(routes) + " }")
        for peer in self.peers:
            v6 = ipaddress.ip_address(peer.address).version == 6
            local = peer.local or (own6 if v6 else own4)
            channel = "ipv6" if v6 else "ipv4"
            body = [
                f"local {local} port {self.port} as {peer.local_asn or self.asn};",
                f"neighbor {peer.address} as {peer.asn};",
                f"{channel} {{ import all; export none; }};",
                f"hold time {self.hold_time}; keepalive time {keepalive}; connect retry time 1;",
                "error wait time 1, 5;",  # the default keeps a failed session idle for a minute
                f"passive {'on' if peer.passive else 'off'};",
            ]
            if self.prefer_older:
                body.append("prefer older on;")
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

    def bgp_next_hops(self, prefix: str | Network) -> dict[str, str]:
        """Who sent BIRD a route for `prefix`, and with which BGP next hop: protocol name -> `BGP.next_hop`
        (`show route <prefix> all`). Unlike the kernel FIB, this names the speaker behind a multihop session,
        whose route the kernel has via the first hop."""
        out: dict[str, str] = {}
        protocol = ""
        for line in self.birdc("show", "route", str(ipaddress.ip_network(prefix)), "all").splitlines():
            words = line.split()
            opening = next((w for w in words if w.startswith("[")), None)
            if opening is not None and not line.startswith("\t"):  # a route's first line; attributes are indented
                protocol = opening.lstrip("[")
            elif words[:1] == ["BGP.next_hop:"] and protocol:
                out[protocol] = words[1]
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
                 step: float = 0.0005, polling: threading.Event | None = None) -> float:
        """Poll the namespace's kernel FIB until every prefix is in it (or, `present=False`, none is); returns
        the `time.monotonic()` at which that was first seen. Reads /proc from a thread inside the namespace,
        cheap enough to poll every half millisecond, so latencies measured with it are sub-millisecond true.
        `polling` is set once the first read is made: a test that measures from its own action waits for it (a
        watcher thread started just before may still be joining the namespace, and would see the change late)."""
        targets = {ipaddress.ip_network(p) for p in prefixes}
        families = {t.version for t in targets}

        def poll() -> float:
            deadline = time.monotonic() + timeout
            while True:
                now = time.monotonic()
                have = _kernel_prefixes(families)
                if polling is not None:
                    polling.set()
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


# -- the namespace's kernel FIB, as a timeline of changes

_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTA_DST, _RTA_GATEWAY, _RTA_MULTIPATH, _RTA_TABLE = 1, 5, 9, 15
_RTMGRP_IPV4_ROUTE = 0x40
_MAIN_TABLE = 254
_SO_RCVBUFFORCE = 33
Hops = tuple[str, ...]  # the gateways of a prefix's route, sorted; () when there is no route


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _route(message: bytes) -> tuple[ipaddress.IPv4Network, Hops] | None:
    """(prefix, gateways) of one IPv4 main-table route message (RTM_NEWROUTE / RTM_DELROUTE body)."""
    family, dst_len, _src, _tos, table, _proto, _scope, _type, _flags = struct.unpack_from("BBBBBBBBI", message)
    if family != socket.AF_INET:
        return None
    dst, hops = b"\0\0\0\0", []
    for kind, value in _attributes(message[12:]):
        if kind == _RTA_TABLE:
            table = struct.unpack("I", value[:4])[0]
        elif kind == _RTA_DST:
            dst = value[:4]
        elif kind == _RTA_GATEWAY:
            hops.append(socket.inet_ntoa(value[:4]))
        elif kind == _RTA_MULTIPATH:
            offset = 0
            while offset + 8 <= len(value):
                length = struct.unpack_from("H", value, offset)[0]
                if length < 8:
                    break
                hops += [socket.inet_ntoa(v[:4]) for k, v in _attributes(value[offset + 8:offset + length])
                         if k == _RTA_GATEWAY]
                offset += (length + 3) & ~3
    if table != _MAIN_TABLE:
        return None
    return ipaddress.IPv4Network(f"{socket.inet_ntoa(dst)}/{dst_len}"), tuple(sorted(hops))


class FibMonitor:
    """The gateways `role`'s kernel FIB has for some IPv4 prefixes, as a timeline: rtnetlink's route notifications
    (no polling) read by a thread and stamped with `time.monotonic()` as they arrive, microseconds after BIRD's
    change, so "when did the router start forwarding the VIP to n2" is sub-millisecond true. An ECMP route lists
    every gateway.

        fib = FibMonitor(rig, "router", {"203.0.113.10/32"})
        at = fib.when(lambda hops: hops == ("198.51.100.12",), after=crashed, timeout=10)
        fib.close()   # before the rig goes: an open socket keeps its namespace alive
    """

    def __init__(self, rig: Rig, role: str, prefixes: Collection[str | Network]) -> None:
        self.prefixes = {ipaddress.IPv4Network(p) for p in prefixes}
        self.lost = 0  # notifications the kernel dropped (ENOBUFS); the state was read again each time
        self._history: dict[ipaddress.IPv4Network, list[tuple[float, Hops]]] = {p: [] for p in self.prefixes}
        self._routed = 0  # watched prefixes with a route now
        self._complete_at = {True: 0.0, False: 0.0}  # when the last one arrived / left
        self._changed = threading.Condition()
        self._namespace = rig.ns(role)
        self._sock = netns.socket_in(self._namespace, socket.AF_NETLINK, socket.SOCK_RAW)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 8 << 20)
        self._sock.bind((0, _RTMGRP_IPV4_ROUTE))
        self._sock.settimeout(0.2)
        self._closed = False
        self._dump()  # after subscribing: no change can fall between the dump and the first notification
        self._thread = threading.Thread(target=self._run, name=f"fib-{role}", daemon=True)
        self._thread.start()

    def _record(self, prefix: ipaddress.IPv4Network, hops: Hops, at: float) -> None:
        if prefix not in self._history:
            return
        with self._changed:
            history = self._history[prefix]
            before = history[-1][1] if history else ()
            if history and before == hops:
                return
            history.append((at, hops))
            self._routed += bool(hops) - bool(before)
            if self._routed in (0, len(self.prefixes)):
                self._complete_at[self._routed != 0] = at
            self._changed.notify_all()

    def _dump(self) -> None:
        sock = netns.socket_in(self._namespace, socket.AF_NETLINK, socket.SOCK_RAW)
        try:
            sock.settimeout(5)
            request = struct.pack("IHHII", 16 + 12, _RTM_GETROUTE, 0x301, 1, 0)  # REQUEST | DUMP
            sock.send(request + struct.pack("BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0))
            now = time.monotonic()
            seen: dict[ipaddress.IPv4Network, Hops] = {p: () for p in self.prefixes}
            done = False
            while not done:
                data = sock.recv(1 << 20)
                for kind, body in _messages(data):
                    if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                        done = True
                    elif kind == _RTM_NEWROUTE:
                        route = _route(body)
                        if route is not None and route[0] in seen:
                            seen[route[0]] = route[1]
            for prefix, hops in seen.items():
                self._record(prefix, hops, now)
        finally:
            sock.close()

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno == errno.ENOBUFS:  # notifications were dropped: read the state again
                    self.lost += 1
                    self._dump()
                    continue
                raise
            at = time.monotonic()
            for kind, body in _messages(data):
                if kind in (_RTM_NEWROUTE, _RTM_DELROUTE):
                    route = _route(body)
                    if route is not None:
                        self._record(route[0], route[1] if kind == _RTM_NEWROUTE else (), at)

    def _prefix(self, prefix: str | Network | None) -> ipaddress.IPv4Network:
        if prefix is None:
            if len(self.prefixes) != 1:
                raise ValueError("name the prefix: this monitor watches several")
            return next(iter(self.prefixes))
        return ipaddress.IPv4Network(prefix)

    def hops(self, prefix: str | Network | None = None) -> Hops:
        """The gateways right now (as last notified)."""
        with self._changed:
            history = self._history[self._prefix(prefix)]
            return history[-1][1] if history else ()

    def history(self, prefix: str | Network | None = None) -> list[tuple[float, Hops]]:
        with self._changed:
            return list(self._history[self._prefix(prefix)])

    def when(self, predicate: Callable[[Hops], bool], after: float, timeout: float = 0.0,
             prefix: str | Network | None = None) -> float | None:
        """The first moment after `after` at which the prefix's gateways satisfied `predicate` (the moment `after`
        itself if they already did then), waiting up to `timeout` seconds for it; None if not."""
        key = self._prefix(prefix)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                history = self._history[key]
                before = [hops for at, hops in history if at <= after]
                if before and predicate(before[-1]):
                    return after
                found = next((at for at, hops in history if at > after and predicate(hops)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def wait_all(self, present: bool = True, timeout: float = 10.0) -> float:
        """Wait until every watched prefix has a route (`present`) or none has; returns the `time.monotonic()` of
        the change that completed it (AssertionError after `timeout`). For bursts: thousands of prefixes are
        followed without re-reading the table."""
        target = len(self.prefixes) if present else 0
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._routed != target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self._routed} of {len(self.prefixes)} prefixes routed after {timeout} s, "
                                         f"waiting for {target}")
                self._changed.wait(remaining)
            return self._complete_at[present]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self._sock.close()


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each netlink message in one datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("IH", data, offset)
        if length < 16:
            return
        yield kind, data[offset + 16:offset + length]
        offset += (length + 3) & ~3
