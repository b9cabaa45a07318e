"""The BGP speaker on ExaBGP 5: ExaBGP as a supervised child process, driven through its process API.

How it fits together (one `ExaBgpSpeaker`, its threads, one ExaBGP at a time):

    caller ── advertise / configure ──> speaker (lock) ──> writer ──> unix socket ──> relay ──> ExaBGP stdin
                                           ^                                                         │
    sessions() <── state, acks, updates ── reader <── unix socket <── relay <── ExaBGP's API writes ─┘
                                           supervisor: start, watch, reload, restart with backoff, log drain

- **Configuration** is rendered from `SpeakerSettings` alone (`render_config`, golden-tested and checked with
  `exabgp validate`): one complete `neighbor` block per peer (ExaBGP templates *overwrite* a neighbour's own
  values, so none are used), next-hop self, no graceful restart (with it a stopped speaker's routes stay at the
  router as stale), the MD5 password base64-encoded (any byte sequence, nothing for the parser to misread) in a
  0600 file inside a private 0700 directory. The process block runs `exabgp_relay.py`, which connects back to a
  socket in that directory: ExaBGP gives its API processes fresh pipes, so a rendezvous is needed.
- **Commands** are batched: `neighbor A , neighbor B announce attributes next-hop self [med M] nlri P1 P2 ...`,
  `CHUNK_PREFIXES` per line, only to the peers of the prefix's family (a v4 route to a v6-only session is an
  error). ExaBGP answers every route command `done` or `error` in order (its command queue is FIFO), which is how
  each answer is matched to its command. `done` means "in ExaBGP's RIB"; that the UPDATE went out is learnt from
  the `send { update; }` JSON messages, which is how `close()` knows its withdrawals left.
- **Everything ExaBGP writes is read at once** by the relay and by the reader thread: ExaBGP writes to its API
  process with blocking writes, and a blocked ExaBGP stops sending keepalives. Its log output (stdout) is drained
  by a thread of its own, redacted (no password ever reaches a log line) and logged at debug.
- **Supervision**: ExaBGP exits or the relay's connection drops → sessions are STOPPED, ExaBGP is started again
  after a backoff (0.5 s doubling to 30 s, reset after a minute of uptime) and every wanted route is announced
  again (ExaBGP's RIB died with it).
- **Live re-peering** (`configure`): the new configuration is written and ExaBGP is sent SIGUSR1. ExaBGP 5 then
  keeps every neighbour whose definition is unchanged (session untouched), re-establishes changed ones and adds or
  removes the rest. Two traps handled here: ExaBGP silently *drops* a reload signal that arrives while UPDATEs are
  still queued for a peer, so the speaker first waits for its own commands to be answered and sent, then checks
  the running configuration (`show neighbor configuration`) and signals again, falling back to a restart only if
  that never matches; and a new neighbour starts with an empty RIB, so the wanted routes are sent to it by name.

Timing facts measured on the rig are in tests/test_bgp_speaker.py and README.md.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import ipaddress
import json
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from generic.bgp.peers import DEFAULT_BGP_PORT, BgpPeer
from generic.bgp.speaker import (
    IPNetwork,
    Route,
    SessionPhase,
    SessionState,
    SpeakerError,
    SpeakerSettings,
)
from generic.logfmt import get_logger
from generic.parse import IPAddress
from generic.secret import MASK

log = get_logger("generic.bgp.exabgp")

PROCESS_NAME = "kube-vip-metal"
RELAY = Path(__file__).with_name("exabgp_relay.py")
CHUNK_PREFIXES = 100  # prefixes per API line: larger batches gain nothing (ExaBGP paces per prefix), see BGP-NOTES
SINGLE_HOP_TTL = 1  # eBGP without multihop: the peer must be directly connected (what GoBGP and kube-vip do)
MULTIHOP_TTL = 64  # stated rather than left to the host's net.ipv4.ip_default_ttl
SOCKET_TIMEOUT = 10.0  # a write to ExaBGP blocked this long means ExaBGP is wedged: it is restarted
STUCK_REPEAT = 60.0  # seconds between repeats of a "session not established" warning
RELOAD_ATTEMPTS = 4  # SIGUSR1s sent for one change before falling back to a restart
QUIESCE_TIMEOUT = 5.0  # longest wait for queued UPDATEs to leave before a reload signal (10,000 routes: ~5 s)
ANSWER_TIMEOUT = 60.0  # ExaBGP answers 10,000 prefixes in about 5 s; no answer for this long: it is wedged
WORKDIR_PREFIX = "kvm-bgp-"
_ACKS = ("done", "error", "shutdown")

# RFC 4271 / 4486 names, for NOTIFICATION messages in logs and `last_error`.
_NOTIFICATION = {
    1: ("message header error", {}),
    2: ("OPEN message error", {1: "unsupported version", 2: "bad peer AS", 3: "bad BGP identifier",
                               4: "unsupported optional parameter", 6: "unacceptable hold time",
                               7: "unsupported capability"}),
    3: ("UPDATE message error", {}),
    4: ("hold timer expired", {}),
    5: ("finite state machine error", {}),
    6: ("cease", {1: "maximum number of prefixes reached", 2: "administrative shutdown", 3: "peer de-configured",
                  4: "administrative reset", 5: "connection rejected", 6: "other configuration change",
                  7: "connection collision resolution", 8: "out of resources"}),
}


def describe_notification(code: int, subcode: int) -> str:
    name, subcodes = _NOTIFICATION.get(code, (f"code {code}", {}))
    sub = subcodes.get(subcode)
    return f"{name} ({code}/{subcode}{': ' + sub if sub else ''})"


# -- the configuration ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbor:
    """One peer's complete ExaBGP neighbour definition, as rendered. Two equal `Neighbor`s render the same block,
    which is what ExaBGP compares on reload to keep a session up."""

    peer: BgpPeer
    router_id: ipaddress.IPv4Address
    local_as: int
    hold_time: int
    local_address: IPAddress | None  # None: chosen by the kernel ("auto")
    source_if: str | None
    ttl: int | None

    @property
    def family(self) -> int:
        return self.peer.address.version

    def md5_base64(self) -> str | None:
        if self.peer.password is None:
            return None
        return base64.b64encode(self.peer.password.reveal().encode()).decode()

    def view(self) -> dict[str, str]:
        """The settings as `show neighbor configuration` prints them, to check what ExaBGP really runs."""
        out = {
            "router-id": str(self.router_id),
            "local-address": str(self.local_address) if self.local_address is not None else "auto",
            "source-interface": self.source_if or "None",
            "local-as": str(self.local_as),
            "peer-as": str(self.peer.asn),
            "hold-time": str(self.hold_time),
        }
        md5 = self.md5_base64()
        if md5 is not None:
            out["md5-password"] = f'"{md5}"'
        if self.peer.port != DEFAULT_BGP_PORT:
            out["connect"] = str(self.peer.port)
        if self.ttl is not None:
            out["outgoing-ttl"] = str(self.ttl)
        return out


class Resolver(Protocol):
    """Finds local addresses in the network namespace ExaBGP runs in (tests run it in a rig namespace)."""

    def interface_address(self, name: str, family: int) -> IPAddress | None:
        """`name`'s address for sessions of `family` (4 or 6); None if it has none. SpeakerError: no interface."""
        ...

    def route_source(self, peer: IPAddress) -> IPAddress | None:
        """The source address the kernel would use towards `peer`; None if there is no route."""
        ...


class KernelResolver:
    """`Resolver` for this process's own network namespace."""

    def interface_address(self, name: str, family: int) -> IPAddress | None:
        """The primary IPv4 address, or the first global IPv6 address; deprecated ones (a VIP added with
        preferred_lft 0) and secondary ones are skipped."""
        from pyroute2 import IPRoute  # imported here: netlink is only needed with --sourceIF

        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=name)
            if not index:
                raise SpeakerError(f"source interface {name!r} does not exist")
            wanted = socket.AF_INET if family == 4 else socket.AF_INET6
            for msg in ipr.get_addr(index=index[0], family=wanted):
                flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
                if flags & 0x01 or flags & 0x20:  # IFA_F_SECONDARY, IFA_F_DEPRECATED
                    continue
                if family == 6 and msg["scope"] != 0:  # link-local and host scope are not session addresses
                    continue
                address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if address:
                    return ipaddress.ip_address(address)
        return None

    def route_source(self, peer: IPAddress) -> IPAddress | None:
        """Asked of the kernel with a connected UDP socket: routing is looked up, nothing is sent."""
        family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((str(peer), DEFAULT_BGP_PORT))
            except OSError:
                return None
            return ipaddress.ip_address(probe.getsockname()[0])


def plan_neighbors(settings: SpeakerSettings, resolver: Resolver) -> tuple[Neighbor, ...]:
    """Every peer's neighbour definition, with its local address decided here, never left to ExaBGP: a neighbour
    rendered `local-address auto` learns its address only when it connects, and after a reload (SIGUSR1) the
    kept neighbour's new definition has none, so ExaBGP fails every `next-hop self` command for it. Precedence:
    the peer's own `local_address` (what the Metal API or the CCM's annotations said), `source_ip` (its family),
    then `source_if`'s address (an error now if it has none for the family), then the kernel's source address
    towards the peer (`auto` only if there is no route to it yet: logged)."""
    by_family: dict[int, IPAddress | None] = {}
    neighbors = []
    for peer in settings.peers:
        family = peer.address.version
        local: IPAddress | None
        if peer.local_address is not None:
            local = peer.local_address
        elif settings.source_ip is not None and settings.source_ip.version == family:
            local = settings.source_ip
        elif settings.source_if is not None:
            if family not in by_family:
                by_family[family] = resolver.interface_address(settings.source_if, family)
            local = by_family[family]
            if local is None:
                raise SpeakerError(f"source interface {settings.source_if} has no IPv{family} address "
                                   f"for peer {peer.address}")
        else:
            local = resolver.route_source(peer.address)
            if local is None:
                log.warning("bgp.no_route_to_peer", peer=str(peer.address),
                            effect="local address left to ExaBGP until the next restart")
        ebgp = peer.asn != settings.local_as
        ttl = MULTIHOP_TTL if peer.multihop else (SINGLE_HOP_TTL if ebgp else None)
        neighbors.append(Neighbor(peer, settings.router_id, settings.local_as, settings.hold_time, local,
                                  settings.source_if, ttl))
    return tuple(neighbors)


def _check_argv(argv: Sequence[str]) -> None:
    for arg in argv:
        if not arg or any(c.isspace() or c in ';{}"\'#' for c in arg):
            raise SpeakerError(f"cannot put {arg!r} on ExaBGP's `run` line (whitespace or ; {{ }} \" ' #)")


def render_config(neighbors: Sequence[Neighbor], relay_command: Sequence[str]) -> str:
    """ExaBGP 5's configuration for these neighbours, with the API process `relay_command` (absolute program path
    first). Deterministic: the same input renders the same bytes (golden files in tests/golden/exabgp-*.conf)."""
    _check_argv(relay_command)
    lines = [
        "# Rendered by kube-vip-metal (generic.bgp.exabgp); every run rewrites it.",
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(relay_command)};",
        "    encoder json;",
        "    respawn false;",
        "}",
    ]
    for neighbor in neighbors:
        peer = neighbor.peer
        family = "ipv4 unicast" if neighbor.family == 4 else "ipv6 unicast"
        lines += ["", f"neighbor {peer.address} {{", f"    router-id {neighbor.router_id};"]
        lines.append(f"    local-address {neighbor.local_address or 'auto'};")
        if neighbor.source_if is not None:
            lines.append(f"    source-interface {neighbor.source_if};")
        lines += [f"    local-as {neighbor.local_as};", f"    peer-as {peer.asn};",
                  f"    hold-time {neighbor.hold_time};"]
        if peer.port != DEFAULT_BGP_PORT:
            lines.append(f"    connect {peer.port};")
        md5 = neighbor.md5_base64()
        if md5 is not None:
            lines += [f'    md5-password "{md5}";', "    md5-base64 true;"]
        if neighbor.ttl is not None:
            lines.append(f"    outgoing-ttl {neighbor.ttl};")
        lines += [
            f"    family {{ {family}; }}",
            "    capability { graceful-restart disable; }",
            "    api {",
            f"        processes [ {PROCESS_NAME} ];",
            "        neighbor-changes;",
            "        receive { parsed; notification; }",  # parsed: JSON messages, not only raw packets
            "        send { parsed; update; }",  # the UPDATEs we send: proof a withdrawal left
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def parse_running_config(lines: Iterable[str]) -> dict[str, dict[str, str]]:
    """`show neighbor configuration` output: per neighbour address, its top-level `key value;` settings."""
    running: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    depth = 0
    for raw in lines:
        line = raw.strip()
        if depth == 0 and line.startswith("neighbor ") and line.endswith("{"):
            current = running.setdefault(line.split()[1], {})
            depth = 1
            continue
        if current is None:
            continue
        if line.endswith("{"):
            depth += 1
        elif line == "}":
            depth -= 1
            if depth == 0:
                current = None
        elif depth == 1 and line.endswith(";") and " " in line:
            key, value = line[:-1].split(" ", 1)
            current[key] = value.strip()
    return running


def config_matches(running: Mapping[str, Mapping[str, str]], neighbors: Sequence[Neighbor]) -> list[str]:
    """What differs between the running configuration and `neighbors` (empty: it matches). Names keys, never
    values (one of them is the password)."""
    wanted = {str(n.peer.address): n.view() for n in neighbors}
    problems = [f"{address}: not running" for address in wanted if address not in running]
    problems += [f"{address}: still running" for address in running if address not in wanted]
    for address, view in wanted.items():
        have = running.get(address)
        if have is None:
            continue
        for key in sorted(set(view) | ({"md5-password", "connect", "outgoing-ttl"} & set(have))):
            if have.get(key) != view.get(key):
                problems.append(f"{address}: {key} differs")
    return problems


# -- API commands ---------------------------------------------------------------------------------------------


def _selector(peers: Sequence[IPAddress]) -> str:
    return " , ".join(f"neighbor {peer}" for peer in peers)


def _chunks(items: Sequence[IPNetwork], size: int) -> Iterable[tuple[IPNetwork, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start:start + size])


def route_commands(action: str, prefixes: Sequence[IPNetwork], peers: Sequence[IPAddress], med: int | None = None,
                   chunk: int = CHUNK_PREFIXES) -> list[tuple[str, tuple[IPNetwork, ...]]]:
    """The API lines announcing or withdrawing `prefixes` (one family) to `peers`, `chunk` prefixes a line."""
    if action not in ("announce", "withdraw"):
        raise ValueError(f"action {action!r}")
    if not prefixes or not peers:
        return []
    attributes = "next-hop self" + (f" med {med}" if med is not None and action == "announce" else "")
    head = f"{_selector(peers)} {action} attributes {attributes} nlri"
    return [(f"{head} {' '.join(str(p) for p in part)}", part) for part in _chunks(prefixes, chunk)]


# -- the speaker ----------------------------------------------------------------------------------------------


@dataclass
class _Command:
    line: str
    kind: str  # "route" or "show"
    action: str = ""
    prefixes: tuple[IPNetwork, ...] = ()
    peers: tuple[IPAddress, ...] = ()
    track: bool = True  # expect an UPDATE per prefix to each established peer (False: may be a no-op for ExaBGP)
    sent_at: float = field(default_factory=time.monotonic)
    output: list[str] = field(default_factory=list)
    answer: str | None = None


@dataclass
class _Session:
    phase: SessionPhase
    since_wall: float
    since_mono: float
    last_error: str | None = None
    warned_at: float | None = None  # monotonic time of the last "not established" warning in this episode


@dataclass
class _Generation:
    """One run of ExaBGP and everything that lives and dies with it."""

    number: int
    neighbors: tuple[Neighbor, ...]
    socket_path: Path
    proc: subprocess.Popen[bytes]
    started: float
    conn: socket.socket | None = None
    outbox: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    pending: deque[_Command] = field(default_factory=deque)
    announced: dict[IPNetwork, Route] = field(default_factory=dict)  # what this ExaBGP's RIB holds, as we told it
    selectable: tuple[IPAddress, ...] = ()  # peers route commands go to (old and new ones during a reload)
    unsent: dict[IPAddress, set[IPNetwork]] = field(default_factory=dict)  # per established peer: not yet in an UPDATE
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))  # ExaBGP's last log lines, redacted
    broken: str | None = None  # why this generation is over, once it is
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.conn is not None and self.broken is None


class ExaBgpSpeaker:
    """A `generic.bgp.speaker.Speaker` backed by ExaBGP 5, started at construction (in the background).

    Thread-safe: every public method may be called from any thread. `advertise`, `configure` and `sessions`
    never wait for ExaBGP: they change the desired state and queue commands (about 6 µs per changed prefix, so
    60-80 ms for 10,000; `configure` also looks up local addresses). `close` blocks until the withdrawals left (at
    most `withdraw_timeout`) and ExaBGP stopped: about 0.2 s, well under 2 s.

    `command_prefix` runs ExaBGP under another command (tests use `ip netns exec NS`, with a `resolver` that looks
    addresses up in that namespace; default: this process's namespace); `reactor_speed` is ExaBGP's
    `reactor.speed` (default 1.0; 0.1 roughly doubles throughput for about 3 % more idle CPU).
    """

    def __init__(self, settings: SpeakerSettings, *, command_prefix: Sequence[str] = (),
                 resolver: Resolver | None = None, workdir_parent: Path | None = None,
                 reactor_speed: float | None = None, start_timeout: float = 20.0, stuck_after: float = 10.0,
                 backoff: tuple[float, float] = (0.5, 30.0), withdraw_timeout: float = 1.0,
                 stop_timeout: float = 0.6) -> None:
        if importlib.util.find_spec("exabgp") is None:
            raise SpeakerError(f"ExaBGP is not installed for {sys.executable} (pip install 'exabgp>=5,<6')")
        self._resolver: Resolver = resolver or KernelResolver()
        self._neighbors = plan_neighbors(settings, self._resolver)
        self._settings = settings
        self._command_prefix = tuple(command_prefix)
        self._reactor_speed = reactor_speed
        self._start_timeout = start_timeout
        self._stuck_after = stuck_after
        self._backoff = backoff
        self._withdraw_timeout = withdraw_timeout
        self._stop_timeout = stop_timeout
        _remove_stale_workdirs(Path(workdir_parent or tempfile.gettempdir()))
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=workdir_parent))  # 0700
        self._config_path = self._workdir / "exabgp.conf"
        if len(str(self._workdir / "api-999999.sock").encode()) > 100:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise SpeakerError(f"work directory {self._workdir} is too long for a unix socket path")
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._desired: dict[IPNetwork, Route] = {}
        self._pending_settings: tuple[SpeakerSettings, tuple[Neighbor, ...]] | None = None
        self._sessions: dict[IPAddress, _Session] = {}
        self._gen: _Generation | None = None
        self._generations = 0
        self._closing = False
        self._retry_at: float | None = None  # when failed route commands are tried again
        self._no_peer_warned: set[int] = set()  # families with wanted routes and no peer, already logged
        self.restarts = 0  # ExaBGP starts after the first one
        self.reloads = 0  # confirmed live reconfigurations
        self._supervisor = threading.Thread(target=self._supervise, name="bgp-supervisor", daemon=True)
        self._supervisor.start()
        log.info("bgp.speaker_started", router_id=str(settings.router_id), local_as=settings.local_as,
                 peers=[str(p.address) for p in settings.peers], workdir=str(self._workdir))

    # -- the Speaker API

    def configure(self, settings: SpeakerSettings) -> None:
        """Applied live by the supervisor (SIGUSR1 reload); raises SpeakerError at once if a source interface
        cannot be resolved."""
        neighbors = plan_neighbors(settings, self._resolver)
        with self._lock:
            self._check_open()
            if settings == self._settings and neighbors == self._neighbors and self._pending_settings is None:
                return
            self._settings = settings
            self._neighbors = neighbors
            self._pending_settings = (settings, neighbors)
            self._changed.notify_all()
        log.info("bgp.configure", peers=[str(p.address) for p in settings.peers])

    def advertise(self, routes: Mapping[IPNetwork, Route]) -> None:
        desired = dict(routes)
        for prefix, route in desired.items():
            if not isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise TypeError(f"route key {prefix!r} is not an IPv4Network or IPv6Network")
            if not isinstance(route, Route):
                raise TypeError(f"route for {prefix} is not a Route")
        with self._lock:
            self._check_open()
            self._desired = desired
            if self._gen is not None and self._gen.ready:
                self._sync(self._gen)

    def sessions(self) -> dict[IPAddress, SessionState]:
        with self._lock:
            now = time.time()
            out = {}
            for peer in self._settings.peers:
                record = self._sessions.get(peer.address)
                if record is None and (self._gen is None or not self._gen.ready):
                    out[peer.address] = SessionState(peer.address, peer.asn, SessionPhase.STOPPED, now,
                                                     "ExaBGP is starting")
                elif record is None:
                    out[peer.address] = SessionState(peer.address, peer.asn, SessionPhase.IDLE, now,
                                                     "being added to ExaBGP")
                else:
                    out[peer.address] = SessionState(peer.address, peer.asn, record.phase, record.since_wall,
                                                     record.last_error)
            return out

    def close(self) -> None:
        started = time.monotonic()
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
        self._supervisor.join(2.0)  # it stops at its next check; the ExaBGP it runs is stopped here
        with self._lock:
            gen = self._gen
        withdrawn, confirmed = 0, True
        if gen is not None and gen.ready:
            withdrawn, confirmed = self._withdraw_all(gen)
        if gen is not None:
            self._stop(gen, "closed")
        with self._lock:
            self._gen = None
            for record in self._sessions.values():
                self._set_phase(record, SessionPhase.STOPPED, "speaker closed")
        shutil.rmtree(self._workdir, ignore_errors=True)
        log.info("bgp.speaker_closed", withdrawn=withdrawn, withdrawals_confirmed=confirmed,
                 seconds=round(time.monotonic() - started, 3))

    # -- extras for tests and the announcer's reconciler (not part of the Speaker protocol)

    @property
    def config_path(self) -> Path:
        """The rendered ExaBGP configuration (0600, in a 0700 directory removed by `close`)."""
        return self._config_path

    @property
    def exabgp_pid(self) -> int | None:
        with self._lock:
            gen = self._gen
            return gen.proc.pid if gen is not None and gen.broken is None else None

    def wait_synced(self, timeout: float) -> bool:
        """Wait until ExaBGP runs the latest settings and has acknowledged a command for every wanted route."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                gen = self._gen
                if (gen is not None and gen.ready and self._pending_settings is None
                        and gen.announced == self._desired and not any(c.kind == "route" for c in gen.pending)):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    return False
                self._changed.wait(min(left, 0.1))

    # -- desired state -> commands (called with the lock held)

    def _check_open(self) -> None:
        if self._closing:
            raise SpeakerError("the BGP speaker is closed")

    def _peers_of(self, gen: _Generation, family: int) -> tuple[IPAddress, ...]:
        return tuple(p for p in gen.selectable if p.version == family)

    def _send(self, gen: _Generation, command: _Command) -> None:
        gen.pending.append(command)
        gen.outbox.put((command.line + "\n").encode())
        if command.kind == "route" and command.track:
            for peer in command.peers:
                unsent = gen.unsent.get(peer)
                if unsent is not None:
                    unsent.update(command.prefixes)

    def _send_routes(self, gen: _Generation, action: str, routes: Mapping[IPNetwork, Route] | Sequence[IPNetwork],
                     peers_for: Callable[[int], Sequence[IPAddress]], track: bool = True) -> int:
        """Queue batched commands; returns the number of lines. `track`: count on an UPDATE for each prefix (an
        announcement ExaBGP already holds for that peer sends none)."""
        count = 0
        for family in (4, 6):
            peers = tuple(peers_for(family))
            if action == "withdraw":
                groups: dict[int | None, list[IPNetwork]] = {None: [p for p in routes if p.version == family]}
            else:
                assert isinstance(routes, Mapping)
                groups = {}
                for prefix, route in routes.items():
                    if prefix.version == family:
                        groups.setdefault(route.med, []).append(prefix)
            for med, prefixes in groups.items():
                for line, part in route_commands(action, sorted(prefixes), peers, med):
                    self._send(gen, _Command(line, "route", action, part, peers, track))
                    count += 1
        return count

    def _sync(self, gen: _Generation) -> None:
        """Send what differs between the desired set and what this ExaBGP holds."""
        gone = [prefix for prefix in gen.announced if prefix not in self._desired]
        changed = {prefix: route for prefix, route in self._desired.items() if gen.announced.get(prefix) != route}
        if not gone and not changed:
            return
        for family in (4, 6):
            wanted = sum(1 for p in self._desired if p.version == family)
            if not wanted or self._peers_of(gen, family):
                self._no_peer_warned.discard(family)
            elif family not in self._no_peer_warned:
                self._no_peer_warned.add(family)
                log.warning("bgp.no_peer_for_family", family=f"IPv{family}", prefixes=wanted,
                            effect=f"not advertised until an IPv{family} peer is configured")
        lines = self._send_routes(gen, "withdraw", gone, lambda f: self._peers_of(gen, f))
        lines += self._send_routes(gen, "announce", changed, lambda f: self._peers_of(gen, f))
        for prefix in gone:
            del gen.announced[prefix]
        gen.announced.update(changed)
        self._changed.notify_all()
        log.debug("bgp.sync", generation=gen.number, announce=len(changed), withdraw=len(gone), lines=lines)

    # -- what ExaBGP says (reader thread)

    def _read(self, gen: _Generation, conn: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self._broken(gen, f"API connection failed: {exc}")
                return
            if not data:
                self._broken(gen, "API connection closed")
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            with self._lock:
                for raw in lines:
                    self._on_line(gen, raw.decode("utf-8", "replace").rstrip("\r"))
                self._changed.notify_all()

    def _on_line(self, gen: _Generation, line: str) -> None:
        if not line:
            return
        if line in _ACKS:
            self._on_answer(gen, line)
        elif line.startswith("{"):
            try:
                message = json.loads(line)
            except ValueError:
                log.debug("bgp.exabgp_bad_json", generation=gen.number, length=len(line))
                return
            if isinstance(message, dict):
                self._on_message(gen, message)
        elif gen.pending and gen.pending[0].kind == "show":
            gen.pending[0].output.append(line)  # may hold the password: kept in memory, never logged
        else:
            log.debug("bgp.exabgp_says", generation=gen.number, text=self._redact(line))

    def _on_answer(self, gen: _Generation, answer: str) -> None:
        if not gen.pending:
            log.warning("bgp.unexpected_answer", generation=gen.number, answer=answer)
            return
        command = gen.pending.popleft()
        command.answer = answer
        if answer == "error" and command.kind == "route":
            if command.action == "announce":
                for prefix in command.prefixes:  # announce again on the next retry
                    gen.announced.pop(prefix, None)
            self._retry_at = time.monotonic() + 2.0
            log.warning("bgp.command_failed", generation=gen.number, action=command.action,
                        prefixes=len(command.prefixes), first=str(command.prefixes[0]) if command.prefixes else "",
                        peers=[str(p) for p in command.peers])

    def _on_message(self, gen: _Generation, message: dict[str, Any]) -> None:
        kind = message.get("type")
        neighbor = message.get("neighbor")
        if not isinstance(neighbor, dict):
            return
        try:
            peer = ipaddress.ip_address(neighbor["address"]["peer"])
        except (KeyError, TypeError, ValueError):
            return
        record = self._sessions.get(peer)
        if record is None:
            return
        if kind == "state":
            state = neighbor.get("state")
            if state == "up":
                self._set_phase(record, SessionPhase.ESTABLISHED, None)
                gen.unsent[peer] = set()
                log.info("bgp.session_established", peer=str(peer), generation=gen.number)
            elif state == "connected":
                self._set_phase(record, SessionPhase.CONNECTED, record.last_error)
            elif state == "down":
                reason = str(neighbor.get("reason") or "session closed")
                if reason.startswith("notification received") and (record.last_error or "").startswith(
                        "notification received"):
                    reason = record.last_error or reason  # the NOTIFICATION just read, with its name
                was = record.phase
                self._set_phase(record, SessionPhase.IDLE, reason)
                gen.unsent.pop(peer, None)
                if was is SessionPhase.ESTABLISHED and not self._closing:
                    log.warning("bgp.session_down", peer=str(peer), reason=reason, generation=gen.number)
        elif kind == "notification":
            note = neighbor.get("notification")
            if isinstance(note, dict):
                text = describe_notification(int(note.get("code", 0)), int(note.get("subcode", 0)))
                direction = neighbor.get("direction", "receive")
                record.last_error = f"notification {'received' if direction == 'receive' else 'sent'}: {text}"
                log.warning("bgp.notification", peer=str(peer), direction=direction, notification=text)
        elif kind == "update" and neighbor.get("direction") == "send":
            unsent = gen.unsent.get(peer)
            update = neighbor.get("message", {}).get("update")
            if unsent is None or not isinstance(update, dict):
                return
            for prefix in _update_prefixes(update):
                unsent.discard(prefix)

    def _set_phase(self, record: _Session, phase: SessionPhase, error: str | None) -> None:
        if record.phase is not phase:
            record.phase = phase
            record.since_wall = time.time()
            record.since_mono = time.monotonic()
            record.warned_at = None
        record.last_error = error

    def _broken(self, gen: _Generation, reason: str) -> None:
        with self._lock:
            if gen.broken is None:
                gen.broken = reason
            self._changed.notify_all()

    def _redact(self, text: str) -> str:
        with self._lock:
            neighbors = list(self._neighbors) + (list(self._gen.neighbors) if self._gen is not None else [])
        for neighbor in neighbors:
            if neighbor.peer.password is not None:
                secret = neighbor.peer.password.reveal()
                for form in (secret, neighbor.md5_base64() or ""):
                    if form:
                        text = text.replace(form, MASK)
        return text

    # -- ExaBGP's own output (log drain thread)

    def _drain(self, gen: _Generation) -> None:
        stream = gen.proc.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = self._redact(raw.decode("utf-8", "replace").rstrip())
            if line:
                with self._lock:
                    gen.tail.append(line)
                log.debug("bgp.exabgp_log", generation=gen.number, pid=gen.proc.pid, line=line)
        stream.close()

    def _write(self, gen: _Generation, conn: socket.socket) -> None:
        while True:
            item = gen.outbox.get()
            if item is None:
                return
            batch = [item]
            size = len(item)
            while size < 262144:
                try:
                    more = gen.outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    gen.outbox.put(None)
                    break
                batch.append(more)
                size += len(more)
            try:
                conn.sendall(b"".join(batch))
            except OSError as exc:
                self._broken(gen, f"cannot write to ExaBGP: {exc}")
                return

    # -- supervision (supervisor thread)

    def _supervise(self) -> None:
        delay = self._backoff[0]
        while True:
            with self._lock:
                if self._closing:
                    return
            gen = self._start()
            if gen is not None:
                self._watch(gen)
                with self._lock:
                    if self._closing:
                        return
                self._stop(gen, gen.broken or "exited")
                if time.monotonic() - gen.started > 60:
                    delay = self._backoff[0]
            with self._lock:
                self._changed.wait_for(lambda: self._closing, timeout=delay)
                if self._closing:
                    return
            delay = min(delay * 2, self._backoff[1])
            self.restarts += 1

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}  # no operator overrides
        with contextlib.suppress(KeyError):  # a uid without a passwd entry (containers): ExaBGP's default is unused
            env["exabgp.daemon.user"] = pwd.getpwuid(os.getuid()).pw_name
        env.update({
            "exabgp.daemon.drop": "false",  # keep access to the 0600 configuration for reloads
            "exabgp.daemon.daemonize": "false",
            "exabgp.api.cli": "false",  # no named pipes
            "exabgp.api.ack": "true",  # one answer per command: how commands are matched to answers
            "exabgp.api.respawn": "false",
            "exabgp.log.destination": "stdout",
            "exabgp.log.level": "INFO",
            "exabgp.log.processes": "false",  # one line per route otherwise
            "exabgp.log.statistics": "false",
            "exabgp.tcp.bind": "",  # never listen: we dial out, as kube-vip does
        })
        if self._reactor_speed is not None:
            env["exabgp.reactor.speed"] = str(self._reactor_speed)
        return env

    def _write_config(self, neighbors: Sequence[Neighbor], socket_path: Path) -> None:
        relay = [sys.executable, "-I", str(RELAY), str(socket_path)]
        text = render_config(neighbors, relay)
        temporary = self._config_path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, self._config_path)

    def _start(self) -> _Generation | None:
        """Start ExaBGP and wait for its API process to connect; None (logged) on failure."""
        started = time.monotonic()
        with self._lock:
            self._generations += 1
            number = self._generations
            settings = self._settings
        try:  # addresses are looked up again: the source address may have changed since
            neighbors = plan_neighbors(settings, self._resolver)
        except SpeakerError as exc:
            log.warning("bgp.plan_failed", generation=number, error=str(exc), effect="previous addresses kept")
            neighbors = self._neighbors
        with self._lock:
            if self._settings is settings:
                self._neighbors = neighbors
            else:  # configure() ran meanwhile: its plan is newer
                neighbors = self._neighbors
            self._pending_settings = None
        socket_path = self._workdir / f"api-{number}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(socket_path))
            os.chmod(socket_path, 0o600)
            listener.listen(1)
            listener.settimeout(0.05)
            self._write_config(neighbors, socket_path)
            argv = [*self._command_prefix, sys.executable, "-m", "exabgp", "server", str(self._config_path)]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=self._environment(), cwd=self._workdir,
                                    start_new_session=True)
        except (OSError, SpeakerError) as exc:
            listener.close()
            log.error("bgp.exabgp_start_failed", generation=number, error=self._redact(str(exc)))
            return None
        gen = _Generation(number, neighbors, socket_path, proc, started,
                          selectable=tuple(n.peer.address for n in neighbors))
        drain = threading.Thread(target=self._drain, args=(gen,), name=f"bgp-exabgp-log-{number}", daemon=True)
        drain.start()
        gen.threads.append(drain)
        with self._lock:
            self._gen = gen
        conn = self._accept(gen, listener)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        if conn is None:
            return gen  # _watch sees it broken and the supervisor restarts it
        conn.settimeout(SOCKET_TIMEOUT)
        with self._lock:  # sessions first: ExaBGP may have reported one up before we accepted the relay
            gen.conn = conn
            now_wall, now_mono = time.time(), time.monotonic()
            for neighbor in neighbors:
                record = self._sessions.get(neighbor.peer.address)
                if record is None:
                    self._sessions[neighbor.peer.address] = _Session(SessionPhase.IDLE, now_wall, now_mono)
                else:
                    self._set_phase(record, SessionPhase.IDLE, record.last_error)
            for address in [a for a in self._sessions if a not in gen.selectable]:
                del self._sessions[address]
            self._sync(gen)
            for target, name in ((self._read, "reader"), (self._write, "writer")):
                thread = threading.Thread(target=target, args=(gen, conn), name=f"bgp-{name}-{number}", daemon=True)
                thread.start()
                gen.threads.append(thread)
        log.info("bgp.exabgp_started", generation=number, pid=proc.pid, peers=[str(a) for a in gen.selectable],
                 routes=len(self._desired), seconds=round(time.monotonic() - started, 3))
        return gen

    def _accept(self, gen: _Generation, listener: socket.socket) -> socket.socket | None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._closing:
                    gen.broken = "closing"
                    return None
            if gen.proc.poll() is not None:
                gen.broken = f"exited during start-up with status {gen.proc.returncode}"
                return None
            try:
                conn, _ = listener.accept()
                return conn
            except TimeoutError:
                continue
        gen.broken = f"its API process did not connect within {self._start_timeout} s"
        return None

    def _watch(self, gen: _Generation) -> None:
        """Serve one ExaBGP until it dies or the speaker closes: reloads, retries, warnings."""
        while True:
            with self._lock:
                if gen.broken is None and gen.proc.poll() is not None:
                    gen.broken = f"exited with status {gen.proc.returncode}"
                if gen.broken is not None or self._closing:
                    return
                pending = self._pending_settings
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    self._retry_at = None
                    self._sync(gen)
                self._warn_stuck()
                if gen.pending and time.monotonic() - gen.pending[0].sent_at > ANSWER_TIMEOUT:
                    gen.broken = f"no answer to a command for {ANSWER_TIMEOUT:.0f} s"
                    return
                if pending is None:
                    self._changed.wait(0.1)
                    continue
            self._reload(gen)

    def _warn_stuck(self) -> None:
        now = time.monotonic()
        for neighbor in self._neighbors:
            peer = neighbor.peer
            record = self._sessions.get(peer.address)
            if record is None or record.phase is SessionPhase.ESTABLISHED:
                continue
            if now - record.since_mono < self._stuck_after:
                continue
            if record.warned_at is not None and now - record.warned_at < STUCK_REPEAT:
                continue
            record.warned_at = now
            if peer.password is not None:
                hint = ("TCP MD5 is set for this peer: a password that differs from the router's looks exactly like "
                        "this (the router drops our SYNs without a word); check it, then reachability and the "
                        "router's neighbour settings")
            else:
                hint = (f"check reachability of TCP port {peer.port}, the router's neighbour settings (address, AS, "
                        "password) and firewalls")
            log.warning("bgp.session_not_established", peer=str(peer.address), asn=peer.asn, port=peer.port,
                        md5=peer.password is not None, phase=record.phase.value,
                        seconds=round(now - record.since_mono, 1), last_error=record.last_error, hint=hint)

    def _quiesce(self, gen: _Generation, timeout: float, closing: bool = False) -> bool:
        """Wait until ExaBGP answered our route commands and sent every UPDATE they caused (a reload signal that
        arrives while UPDATEs are queued is dropped by ExaBGP)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(c.kind == "route" for c in gen.pending) or any(gen.unsent.values()):
                left = deadline - time.monotonic()
                if left <= 0 or gen.broken is not None or (self._closing and not closing):
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    def _show_config(self, gen: _Generation, timeout: float) -> dict[str, dict[str, str]] | None:
        command = _Command("show neighbor configuration", "show")
        deadline = time.monotonic() + timeout
        with self._lock:
            self._send(gen, command)
            while command.answer is None:
                left = deadline - time.monotonic()
                if left <= 0 or gen.broken is not None or self._closing:
                    return None
                self._changed.wait(min(left, 0.05))
        return parse_running_config(command.output) if command.answer == "done" else None

    def _reload(self, gen: _Generation) -> None:
        started = time.monotonic()
        with self._lock:
            pending = self._pending_settings
            self._pending_settings = None
            if pending is None:
                return
            settings, neighbors = pending
            old = {n.peer.address: n for n in gen.neighbors}
            new = {n.peer.address: n for n in neighbors}
            added = [a for a in new if a not in old]
            removed = [a for a in old if a not in new]
            changed = [a for a in new if a in old and new[a] != old[a]]
            gen.selectable = tuple(dict.fromkeys([*gen.selectable, *new]))
            now_wall, now_mono = time.time(), time.monotonic()
            for address in added:  # before the reload: ExaBGP may report the new session up before it is confirmed
                self._sessions.setdefault(address, _Session(SessionPhase.IDLE, now_wall, now_mono))
        if not added and not removed and not changed:
            return
        try:
            self._write_config(neighbors, gen.socket_path)
        except OSError as exc:
            self._broken(gen, f"cannot write the configuration: {exc}")
            return
        problems = ["not tried"]
        attempts = 0
        while attempts < RELOAD_ATTEMPTS:
            attempts += 1
            self._quiesce(gen, QUIESCE_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(gen.proc.pid, signal.SIGUSR1)
            confirm_until = time.monotonic() + 1.5
            while time.monotonic() < confirm_until:
                running = self._show_config(gen, 2.0)
                if running is None:
                    break
                problems = config_matches(running, neighbors)
                if not problems:
                    break
                time.sleep(0.05)
            with self._lock:
                if gen.broken is not None or self._closing:
                    return
            if not problems:
                break
        if problems:
            log.warning("bgp.reload_unconfirmed", generation=gen.number, problems=problems, attempts=attempts,
                        action="restart")
            self._broken(gen, "reload not confirmed")
            return
        with self._lock:
            gen.neighbors = neighbors
            gen.selectable = tuple(new)
            now_wall, now_mono = time.time(), time.monotonic()
            for address in removed:
                self._sessions.pop(address, None)
                gen.unsent.pop(address, None)
            for address in added:
                self._sessions.setdefault(address, _Session(SessionPhase.IDLE, now_wall, now_mono))
            fresh = [a for a in [*added, *changed] if a in new]
            wanted = {p: r for p, r in gen.announced.items()}
            if fresh and wanted:
                self._send_routes(gen, "announce", wanted,
                                  lambda family: [a for a in fresh if a.version == family], track=False)
            self.reloads += 1
            self._changed.notify_all()
        log.info("bgp.reconfigured", generation=gen.number, added=[str(a) for a in added],
                 removed=[str(a) for a in removed], changed=[str(a) for a in changed],
                 kept=[str(a) for a in new if a in old and a not in changed], router_id=str(settings.router_id),
                 attempts=attempts, seconds=round(time.monotonic() - started, 3))

    # -- stopping

    def _withdraw_all(self, gen: _Generation) -> tuple[int, bool]:
        """Withdraw everything this ExaBGP holds and wait (bounded) until ExaBGP answered and sent the UPDATEs."""
        with self._lock:
            prefixes = list(gen.announced)
            self._desired = {}
            self._sync(gen)
        confirmed = self._quiesce(gen, self._withdraw_timeout, closing=True)
        if not confirmed:
            with self._lock:
                left = {str(p): len(s) for p, s in gen.unsent.items() if s}
                unanswered = sum(1 for c in gen.pending if c.kind == "route")
            log.warning("bgp.withdraw_unconfirmed", unanswered=unanswered, unsent=left, seconds=self._withdraw_timeout,
                        effect="stopping ExaBGP closes the sessions, which withdraws the rest (no graceful restart)")
        return len(prefixes), confirmed

    def _stop(self, gen: _Generation, reason: str) -> None:
        proc = gen.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)
        with self._lock:
            if gen.broken is None:
                gen.broken = reason
            for address, record in self._sessions.items():
                self._set_phase(record, SessionPhase.STOPPED,
                                record.last_error if reason == "closed" else f"ExaBGP {reason}")
                gen.unsent.pop(address, None)
            tail = list(gen.tail)
        gen.outbox.put(None)
        if gen.conn is not None:
            with contextlib.suppress(OSError):
                gen.conn.shutdown(socket.SHUT_RDWR)
            gen.conn.close()
        for thread in gen.threads:
            thread.join(0.5)
        if reason == "closed":
            log.info("bgp.exabgp_stopped", generation=gen.number, pid=proc.pid, status=proc.returncode)
        else:
            log.warning("bgp.exabgp_exited", generation=gen.number, pid=proc.pid, status=proc.returncode,
                        reason=reason, output=tail[-8:])


def _remove_stale_workdirs(parent: Path) -> None:
    """Remove work directories of speakers whose process is gone (SIGKILLed: `close` never ran); they hold a
    configuration with the peers' passwords. The owner's PID is in the name; a live PID is never touched."""
    for path in parent.glob(f"{WORKDIR_PREFIX}*-*"):
        pid_text = path.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or not path.is_dir():
            continue
        try:
            if path.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            log.info("bgp.stale_workdir_removed", path=str(path))
        except OSError:  # alive under another user, or unreadable: not ours to remove
            continue


def _update_prefixes(update: Mapping[str, Any]) -> Iterable[IPNetwork]:
    """The prefixes an UPDATE message (ExaBGP's JSON) announces or withdraws."""
    for section in ("announce", "withdraw"):
        families = update.get(section)
        if not isinstance(families, dict):
            continue
        for value in families.values():
            groups = value.values() if isinstance(value, dict) else [value]
            for entries in groups:
                if not isinstance(entries, list):
                    continue
                for entry in entries:
                    nlri = entry.get("nlri") if isinstance(entry, dict) else None
                    if isinstance(nlri, str):
                        with contextlib.suppress(ValueError):
                            yield ipaddress.ip_network(nlri, strict=False)
