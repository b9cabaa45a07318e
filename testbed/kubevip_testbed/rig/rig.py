"""The rig: nodes, a client and a router on one bridged LAN, each in a network namespace of its own.

Tests, benchmarks and `lab` need the real kernel's ARP, NDP, TCP and routing, and faults a real network
has (a pulled cable, a firewall that drops). Every rig owns uniquely named namespaces, tracks what it
starts, and tears everything down by PID: on `down()`, at the end of a `with` block, at exit, on SIGTERM or
SIGHUP, and (after SIGKILL) at the next rig's start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from generic.logfmt import get_logger
from kubevip_testbed.rig import faults, guard, names, netns, processes, topology
from kubevip_testbed.rig.cleanup import cleanup_stale, teardown_namespaces
from kubevip_testbed.rig.netns import CommandError, RigError

log = get_logger(__name__)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


class Rig:
    """N nodes (`n1`..), `client` and `router` on bridge `br0` in namespace `sw`. See topology.py."""

    def __init__(self, nodes: int = 3, prefix: str | None = None, *, grace: float = 1.0) -> None:
        self.hosts = topology.plan(nodes)
        self.routed: dict[str, topology.RoutedHost] = {}  # namespaces behind the router (add_routed_host)
        self._added: list[str] = []  # hosts added while up (add_lan_host), removed again at down()
        self.node_names = [f"n{i}" for i in range(1, nodes + 1)]
        self.prefix = names.check_prefix(prefix) if prefix is not None else names.new_prefix()
        self.grace = grace  # seconds between SIGTERM and SIGKILL at teardown
        self.owner_pid = os.getpid()
        self.timings: dict[str, float] = {}  # seconds taken by the last "up" and "down"
        self._lock = threading.RLock()  # down() may run from a signal handler mid-call
        self._procs: list[subprocess.Popen[Any]] = []
        self._sockets: list[socket.socket] = []
        self._blocks: dict[str, frozenset[faults.Block]] = {}
        self._etc: list[str] = []  # namespaces given an /etc/netns/<ns>/ (use_nameservers), removed at down()
        self._nft_family: faults.Family = faults.FAMILIES[0]
        self._up = False

    # -- names and addresses

    @property
    def roles(self) -> list[str]:
        return [*self.hosts, *self.routed, topology.SWITCH]

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(role) for role in self.roles]

    def ns(self, role: str) -> str:
        """The namespace name of `role` ("n1".., "client", "router", "sw")."""
        if role != topology.SWITCH and role not in self.hosts and role not in self.routed:
            raise ValueError(f"no role {role!r} in this rig; roles are {', '.join(self.roles)}")
        return f"{self.prefix}-{role}"

    def host(self, role: str) -> topology.Host:
        if role not in self.hosts:
            raise ValueError(f"role {role!r} has no address; hosts are {', '.join(self.hosts)}")
        return self.hosts[role]

    def ipv4(self, role: str) -> str:
        """`role`'s address: on the LAN, or for a host behind the router its end of its link."""
        return self.routed[role].ipv4 if role in self.routed else self.host(role).ipv4

    def ipv6(self, role: str) -> str:
        return self.routed[role].ipv6 if role in self.routed else self.host(role).ipv6

    def mac(self, role: str) -> str:
        return self.host(role).mac

    # -- lifecycle

    def up(self) -> Rig:
        """Build the LAN (after removing leftovers of dead runs); on any failure, tear down what was built."""
        if self._up:
            return self
        started = time.monotonic()
        stale = cleanup_stale(grace=min(self.grace, 0.5))
        taken = [name for name in self.namespaces if netns.exists(name)]
        if taken:
            raise RigError(f"namespaces {taken} exist already: another rig uses prefix {self.prefix!r}")
        self.owner_pid = os.getpid()
        guard.track(self)
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._up = True
        self.timings["up"] = time.monotonic() - started
        log.info("rig.up", prefix=self.prefix, nodes=len(self.node_names), seconds=round(self.timings["up"], 4),
                 stale_removed=len(stale))
        return self

    def _build(self) -> None:
        netns.ip_batch(topology.create_lines(self.ns, self.hosts))
        netns.write_sysctls(self.ns(topology.SWITCH), topology.SWITCH_SYSCTLS)
        for role, host in self.hosts.items():
            netns.write_sysctls(self.ns(role), topology.sysctls(host))
        netns.ip_batch(topology.switch_lines(self.hosts), netns=self.ns(topology.SWITCH))
        for role, host in self.hosts.items():
            netns.ip_batch(topology.host_lines(host), netns=self.ns(role))
        self.run(topology.ROUTER, ["nft", "-f", "-"], input=topology.ROUTER_NFT)

    def down(self) -> None:
        """Stop what the rig started (by PID), then anything else inside its namespaces, then delete them.
        Idempotent, and safe on a rig that never came up."""
        started = time.monotonic()
        with self._lock:
            procs, self._procs = self._procs, []
            sockets, self._sockets = self._sockets, []
        for sock in sockets:  # an open socket would keep its namespace alive after the name is gone
            sock.close()
        hard = processes.terminate([proc.pid for proc in procs if proc.poll() is None], self.grace)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        present = [name for name in self.namespaces if netns.exists(name)]
        hard += teardown_namespaces(present, self.grace)
        with self._lock:
            etc, self._etc = self._etc, []
        netns.remove_etc(etc)
        guard.untrack(self)
        self._blocks.clear()
        for role in self._added:  # back to the rig as planned: a later up() builds exactly that
            self.hosts.pop(role, None)
        self._added.clear()
        self.routed.clear()
        was_up, self._up = self._up, False
        if was_up or procs or present:
            self.timings["down"] = time.monotonic() - started
            log.info("rig.down", prefix=self.prefix, seconds=round(self.timings["down"], 4), stopped=len(procs),
                     killed_hard=len(hard), namespaces=len(present))

    def __enter__(self) -> Rig:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # -- hosts added to a running rig

    def add_lan_host(self, role: str, number: int) -> topology.Host:
        """One more host on the LAN of a rig that is up, e.g. a second router `add_lan_host("router2", 2)` at
        198.51.100.2 / 2001:db8:100::2 / 02:00:00:00:00:02, with its bridge port (so `link_down` works) and
        default routes via the router, like the client. Removed with the rig; `down()` forgets it."""
        with self._lock:
            if not self._up:
                raise RigError("add_lan_host needs a rig that is up")
            topology.check_added_role(role, self.roles)
            used = {host.number for host in self.hosts.values()}
            if not 2 <= number <= 254 or number in used:
                raise ValueError(f"host number {number}: pick a free one in 2-254 (used: {sorted(used)})")
            host = topology.Host(role, number)
            self.hosts[role] = host
            self._added.append(role)
        try:
            netns.ip_batch(topology.lan_host_lines(self.ns, host))
            netns.write_sysctls(self.ns(role), topology.sysctls(host))
            netns.ip_batch([f"link set {host.port} master {topology.BRIDGE} up"], netns=self.ns(topology.SWITCH))
            netns.ip_batch(topology.host_lines(host), netns=self.ns(role))
        except BaseException:
            self._remove_added(role)
            raise
        log.info("rig.host_added", prefix=self.prefix, role=role, ipv4=host.ipv4)
        return host

    def add_routed_host(self, role: str) -> topology.RoutedHost:
        """A namespace behind the router, on a link of its own (see `topology.RoutedHost`): the nodes reach it
        only through the router, two hops away. `ipv4(role)`, `ns(role)`, `run(role, ...)` and `spawn` work for
        it; it has no bridge port. Removed with the rig; `down()` forgets it."""
        with self._lock:
            if not self._up:
                raise RigError("add_routed_host needs a rig that is up")
            topology.check_added_role(role, self.roles)
            links = {host.link for host in self.routed.values()}
            free = next((k for k in range(topology.MAX_ROUTED) if k not in links), None)
            if free is None:
                raise RigError(f"a rig has at most {topology.MAX_ROUTED} routed hosts")
            host = topology.RoutedHost(role, free)
            self.routed[role] = host
        try:
            netns.ip_batch(topology.routed_create_lines(self.ns, host))
            netns.write_sysctls(self.ns(role), topology.routed_sysctls())
            netns.ip_batch(topology.routed_router_lines(host), netns=self.ns(topology.ROUTER))
            netns.ip_batch(topology.routed_host_lines(host), netns=self.ns(role))
        except BaseException:
            self._remove_added(role)
            raise
        log.info("rig.routed_host_added", prefix=self.prefix, role=role, ipv4=host.ipv4, via=host.router_ipv4)
        return host

    def _remove_added(self, role: str) -> None:
        """Undo a half-built added host: its namespace (and so its veth pair) and its bookkeeping."""
        teardown_namespaces([self.ns(role)], self.grace)
        with self._lock:
            self.routed.pop(role, None)
            if role in self._added:
                self._added.remove(role)
                self.hosts.pop(role, None)

    # -- name resolution

    def use_nameservers(self, role: str, *servers: str) -> None:
        """`role`'s programs resolve through `servers`: /etc/netns/<ns>/resolv.conf, which `ip netns exec`
        (and so `run` and `spawn`) binds over /etc/resolv.conf for what it starts from now on (ip-netns(8)).
        Removed at `down()`, and by the next rig after a crash (`cleanup_stale`)."""
        name = self.ns(role)
        with self._lock:
            if name not in self._etc:
                self._etc.append(name)
        netns.write_etc(name, "resolv.conf", "".join(f"nameserver {server}\n" for server in servers)
                        + "options timeout:1 attempts:1\n")
        log.info("rig.nameservers", prefix=self.prefix, role=role, servers=list(servers))

    # -- processes and sockets inside a namespace

    def run(self, role: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """`ip netns exec` to completion; output captured as text unless `kw` says otherwise. With `check`,
        a non-zero exit raises CommandError (a CalledProcessError whose message includes stderr)."""
        cmd = ["ip", "netns", "exec", self.ns(role), *argv]
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        result: subprocess.CompletedProcess[str] = subprocess.run(cmd, timeout=timeout, **kw)
        if check and result.returncode:
            raise CommandError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def spawn(self, role: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside `role` (`ip netns exec` execs, so the PID is the program's own); it is
        stopped by PID at teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], **popen_kw)
        with self._lock:
            self._procs.append(proc)
        log.info("rig.spawn", prefix=self.prefix, role=role, pid=proc.pid, argv=list(argv))
        return proc

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def listen_socket(self, role: str, host: str, port: int, *, backlog: int = 128) -> socket.socket:
        """A bound, listening TCP socket that lives in `role`'s namespace, served from this process (port 0
        picks a free port). Closed at teardown if still open."""
        sock = netns.socket_in(self.ns(role), _family(host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return self._track(sock)

    def connect_socket(self, role: str, host: str, port: int, *, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from `role`'s namespace to host:port (OSError, e.g. TimeoutError, on failure)."""
        sock = netns.socket_in(self.ns(role), _family(host), socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return self._track(sock)

    # -- fault levers

    def link_down(self, role: str) -> None:
        """Pull `role`'s cable: its bridge port goes down, so `eth0` loses carrier (NO-CARRIER, routes marked
        linkdown) but keeps its addresses and routes, as a real NIC does. Not an admin down of eth0, which
        would flush IPv6 addresses and every route through eth0."""
        netns.ip_batch([f"link set {self.host(role).port} down"], netns=self.ns(topology.SWITCH))
        log.info("rig.link_down", prefix=self.prefix, role=role)

    def link_up(self, role: str) -> None:
        """Plug the cable back in; returns once `eth0` has carrier again (if it is administratively up)."""
        netns.ip_batch([f"link set {self.host(role).port} up"], netns=self.ns(topology.SWITCH))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            flags = self._eth0_flags(role)
            if "UP" not in flags or "LOWER_UP" in flags:
                break
            time.sleep(0.01)
        log.info("rig.link_up", prefix=self.prefix, role=role)

    def _eth0_flags(self, role: str) -> list[str]:
        links = netns.ip_json(["link", "show", "dev", topology.IFNAME], netns=self.ns(role))
        flags: list[str] = links[0].get("flags", []) if links else []
        return flags

    def block(self, role: str, host: str, port: int | None = None) -> None:
        """Drop all traffic between `role` and `host` (IPv4 or IPv6), or only TCP to/from `host`'s `port`,
        with nftables in `role`'s namespace. Blocks accumulate; the same block twice is one block."""
        self.host(role)
        with self._lock:
            wanted = self._blocks.get(role, frozenset()) | {faults.Block.of(host, port)}
            self._load_blocks(role, wanted)
            self._blocks[role] = wanted
        log.info("rig.block", prefix=self.prefix, role=role, host=host, port=port)

    def unblock(self, role: str) -> None:
        """Remove every block of `role`. Idempotent."""
        self.host(role)
        with self._lock:
            script = "".join(faults.clear(family) for family in faults.FAMILIES)
            self.run(role, ["nft", "-f", "-"], input=script)
            self._blocks.pop(role, None)
        log.info("rig.unblock", prefix=self.prefix, role=role)

    def _load_blocks(self, role: str, blocks: frozenset[faults.Block]) -> None:
        try:
            self.run(role, ["nft", "-f", "-"], input=faults.ruleset(blocks, self._nft_family, topology.IFNAME))
        except CommandError as exc:
            if self._nft_family != "netdev":
                raise
            log.warning("rig.block_fallback", prefix=self.prefix, family="inet", reason=str(exc))
            self._nft_family = "inet"
            self.run(role, ["nft", "-f", "-"], input=faults.ruleset(blocks, "inet", topology.IFNAME))

    # -- observation

    def addresses(self, role: str, ifname: str = topology.IFNAME) -> list[str]:
        """The addresses on `ifname` in `role` right now, bare (no prefix length), all families, including
        link-local; e.g. `vip in rig.addresses("n2")` tells where a VIP is."""
        links = netns.ip_json(["address", "show", "dev", ifname], netns=self.ns(role))
        return [str(info["local"]) for link in links for info in link.get("addr_info", []) if "local" in info]
